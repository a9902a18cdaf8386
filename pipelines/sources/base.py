"""The source adapter interface, :class:`SourceAdapter`, and the steps every adapter shares.

An adapter turns the files of one source into tables of
:data:`features.events.STAGED_EVENT_SCHEMA` (one row per accepted source record, in file order)
and tables of :data:`features.rejections.REJECTED_RECORD_SCHEMA` (one row per rejected record,
with its raw text and reason code), and, where the source has them, user and item attribute
tables for the ``users`` / ``items`` contracts. Event times are always UTC (see
:mod:`pipelines.sources.columns`); ``source_zone`` only documents the zone of a source's
local-time fields.

:meth:`SourceAdapter.read_records` is the dead-letter interface: nothing is dropped, and per
file the chunks' ``records`` add up to the records read (= accepted + rejected). With
``on_file_error="reject"`` (what ingestion uses) a file that cannot be read, or a symbolic link
when links are not followed, is one dead letter of its own instead of an error, so one bad
file never stops the others. :meth:`SourceAdapter.read_events` is the strict one: staged rows,
and :class:`SourceError` at the first rejected record.

The machinery lives in: :mod:`~pipelines.sources.errors` (errors),
:mod:`~pipelines.sources.columns` (typed columns), :mod:`~pipelines.sources.rules` (ingestion
rules), :mod:`~pipelines.sources.convert` (chunks to staged rows and rejected records),
:mod:`~pipelines.sources.files` (file matching, chunking, Parquet),
:mod:`~pipelines.sources.csvio` (delimited files) and :mod:`~pipelines.sources.dimensions`
(users and items files).
"""
from __future__ import annotations

import abc
import datetime as dt
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from pipelines.sections import IngestRules, SourceConfig
from pipelines.sources.convert import ChunkConversion, EventMapping, convert_chunk, raise_on_rejected
from features.events import STAGED_EVENT_SCHEMA
from features.rejections import REJECTED_RECORD_SCHEMA, Reason
from pipelines.sources.csvio import DEFAULT_MAX_LINE_BYTES, CsvFormat, file_columns, iter_csv_records
from pipelines.sources.errors import SourceError, error_line
from pipelines.sources.files import RawChunk, existing_path, match_files, pipelined
from pipelines.sources.rules import OPTIONAL_DURATION, REQUIRED_DURATION, DurationRule, utc_now


@dataclass(frozen=True)
class EventStream:
    """How one event file is read: its mapping, its raw chunks, and an optional per-chunk step.

    ``prepare`` runs in the conversion threads (for example splitting ``::`` lines).
    """

    mapping: EventMapping
    chunks: Iterator[RawChunk]
    prepare: Callable[[RawChunk], RawChunk] | None = None


class SourceAdapter(abc.ABC):
    """Reads one configured source: its event files, and its users and items where it has them."""

    kind: ClassVar[str]
    #: Zone of the local-time fields of the source (documentation; event times are converted to UTC).
    source_zone: ClassVar[str]
    #: Durations when ``config.require_duration`` is null (the kind's default).
    default_duration: ClassVar[DurationRule] = OPTIONAL_DURATION
    #: Whether users/items files that are symbolic links are read (``ingest.follow_symlinks``;
    #: event files take it per call of :meth:`read_records`).
    follow_symlinks: bool = True

    def __init__(self, name: str, config: SourceConfig):
        self.name = name
        self.config = config
        self.path = Path(config.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, path={str(self.path)!r})"

    @property
    def directory(self) -> Path:
        """The source directory (``config.path``, or the folder of a single-file source)."""
        p = existing_path(self.path)
        return p if p.is_dir() else p.parent

    @abc.abstractmethod
    def event_files(self) -> list[str]:
        """The event files to read, sorted; :class:`SourceError` if there are none."""

    @abc.abstractmethod
    def event_stream(self, file: str, chunk_rows: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> EventStream:
        """The mapping and raw chunks of one event file (:class:`SourceError` for file-level problems).

        A line longer than ``max_line_bytes`` is one ``oversized_line`` record (delimited files)."""

    def read_records(
        self,
        file: str,
        rules: IngestRules | None,
        chunk_rows: int = 500_000,
        now: dt.datetime | None = None,
        *,
        on_file_error: str = "raise",
        follow_symlinks: bool = True,
    ) -> Iterator[ChunkConversion]:
        """Every record of ``file``, accepted or rejected, ``chunk_rows`` records per chunk.

        Each :class:`ChunkConversion` holds the accepted rows (``.staged``, exactly
        ``STAGED_EVENT_SCHEMA``, file order), the rejected records (``.rejected``,
        ``REJECTED_RECORD_SCHEMA``, file order) and ``.records`` = their sum. ``rules`` are the
        ingestion rules (``Settings.rules``); ``None`` checks only what :meth:`read_events`
        always did (reading, types, the 1900..2200 window, and lines up to the default
        ``max_line_bytes``). ``now`` (default: the current time, taken once per file) is the
        reference of ``timestamp_in_future``. A bad record never raises.

        File-level problems (a missing or empty file, missing columns, no header, an unreadable
        or truncated file) raise :class:`SourceError` with ``on_file_error="raise"``; with
        ``"reject"`` they end the file with one ``unreadable_file`` dead letter (the records
        read before the problem are handed out as usual; the letter is at the data line where
        reading stopped, 0 if nothing could be read). With ``follow_symlinks=False`` a file that
        is a symbolic link (other than the configured ``path`` itself) is not opened: a
        ``symlink_refused`` dead letter, or a :class:`SourceError`.
        """
        if on_file_error not in ("raise", "reject"):
            raise ValueError(f"on_file_error must be raise or reject, not {on_file_error!r}")
        source_file = Path(file).name
        if not follow_symlinks and self.is_refused_link(file):
            message = f"{file}: is a symbolic link (to {os.readlink(file)!r}); not read: ingest.follow_symlinks is false"
            if on_file_error == "raise":
                raise SourceError(message)
            yield self.file_letter(source_file, 0, Reason.SYMLINK_REFUSED, message)
            return
        counted: list[int] = []
        try:
            yield from self._records(file, rules, chunk_rows, now, counted)
        except (SourceError, OSError, UnicodeError, pa.ArrowException) as exc:
            # What a file's bytes can cause; anything else is a bug and stops the run.
            if on_file_error == "raise":
                if isinstance(exc, SourceError):
                    raise
                raise SourceError(f"{file}: cannot read: {error_line(exc)}") from None
            message = error_line(exc) if isinstance(exc, SourceError) else f"{file}: cannot read: {error_line(exc)}"
            records = sum(counted)
            yield self.file_letter(source_file, records + 1 if records else 0, Reason.UNREADABLE_FILE, message)

    def _records(self, file: str, rules, chunk_rows: int, now, counted: list[int]) -> Iterator[ChunkConversion]:
        """:meth:`read_records` without the file-level handling; appends each chunk's records to ``counted``."""
        max_line_bytes = rules.max_line_bytes if rules is not None else DEFAULT_MAX_LINE_BYTES
        stream = self.event_stream(file, chunk_rows, max_line_bytes)  # header files: "no header line"
        if os.path.isfile(file) and os.path.getsize(file) == 0:
            raise SourceError(f"{file}: the file is empty (0 bytes)")
        duration = self.duration_rule(stream.mapping, file) if rules is not None else OPTIONAL_DURATION
        at = utc_now(now)
        source_file = Path(file).name

        def convert(raw: RawChunk) -> ChunkConversion:
            if stream.prepare is not None:
                raw = stream.prepare(raw)
            return convert_chunk(
                raw.table,
                source=self.name,
                source_file=source_file,
                first_line=raw.first_line,
                mapping=stream.mapping,
                keys=raw.keys,
                codes=raw.codes,
                reasons=raw.reasons,
                raw_records=raw.raw_records,
                rules=rules,
                duration=duration,
                now=at,
            )

        for conversion in pipelined(stream.chunks, convert):
            counted.append(conversion.records)
            yield conversion

    def is_refused_link(self, file: str | Path) -> bool:
        """Whether ``file`` is a symbolic link that ``follow_symlinks=False`` refuses: any link
        except the configured ``path`` itself (the operator's choice)."""
        return os.path.islink(file) and os.path.abspath(file) != os.path.abspath(self.path)

    def file_letter(self, source_file: str, line: int, reason: Reason, message: str) -> ChunkConversion:
        """A whole file as one dead letter (``raw_record`` empty), counted as one record."""
        letter = pa.table(
            {
                "source": [self.name],
                "source_file": [source_file],
                "source_line": pa.array([line], pa.int64()),
                "raw_record": [""],
                "reason_code": [reason.value],
                "reason": [message.replace("\n", " ").replace("\r", " ")],
            },
            schema=REJECTED_RECORD_SCHEMA,
        )
        return ChunkConversion(STAGED_EVENT_SCHEMA.empty_table(), letter, 1)

    def read_events(
        self, file: str, chunk_rows: int = 500_000, rules: IngestRules | None = None, now: dt.datetime | None = None
    ) -> Iterator[pa.Table]:
        """Tables of exactly ``STAGED_EVENT_SCHEMA`` for one file; :class:`SourceError` at the first rejected record.

        A thin wrapper of :meth:`read_records` (without rules by default); the message names the
        file, the line and the reason.
        """
        for conversion in self.read_records(file, rules, chunk_rows=chunk_rows, now=now):
            yield raise_on_rejected(conversion, file)

    def duration_rule(self, mapping: EventMapping, file: str) -> DurationRule:
        """The duration rule for this source (``config.require_duration``, else the kind's default)."""
        required = self.config.require_duration
        if required is None:
            return self.default_duration
        if required and mapping.duration_ms is None:
            raise SourceError(f"{file}: require_duration is set but the file has no duration column")
        return REQUIRED_DURATION if required else OPTIONAL_DURATION

    def read_users(self) -> pa.Table | None:
        """The users table (``user_id``, ``source``, attributes), or ``None`` without a user file."""
        return None

    def read_items(self) -> pa.Table | None:
        """The items table (``item_id``, ``source``, attributes), or ``None`` without an item file."""
        return None

    # Shared by the adapters ------------------------------------------------------------

    def _files_or_error(self, patterns: list[str], what: str) -> list[str]:
        """``config.path`` if it is a file, else its files matching ``patterns`` (:class:`SourceError` if none)."""
        p = existing_path(self.path)
        if p.is_file():
            return [str(p)]
        files = match_files(p, patterns)
        if not files:
            raise SourceError(f"{p}: no {what} ({', '.join(patterns)}) in this directory")
        return [str(f) for f in files]

    def _csv_stream(
        self, file: str, fmt: CsvFormat, mapping: EventMapping, chunk_rows: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    ) -> EventStream:
        """A delimited event file read by :func:`~pipelines.sources.csvio.iter_csv_records`."""
        existing_path(file, "event file")
        mapping.check_columns(file_columns(file, fmt), file)
        return EventStream(mapping, iter_csv_records(file, fmt, chunk_rows, max_line_bytes))

    def check_dimension_file(self, path: str | Path) -> Path:
        """``path``, or :class:`SourceError` if it is a symbolic link and links are not followed."""
        if not self.follow_symlinks and self.is_refused_link(path):
            raise SourceError(
                f"{path}: is a symbolic link (to {os.readlink(path)!r}); not read: ingest.follow_symlinks is false"
            )
        return Path(path)
