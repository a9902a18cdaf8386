"""The source adapter interface, :class:`SourceAdapter`, and the steps every adapter shares.

An adapter turns the files of one source into tables of
:data:`features.events.STAGED_EVENT_SCHEMA` (one row per accepted source record, in file order)
and tables of :data:`features.rejections.REJECTED_RECORD_SCHEMA` (one row per rejected record,
with its raw text and reason code), and, where the source has them, user and item attribute
tables for the ``users`` / ``items`` contracts. Event times are always UTC (see
:mod:`pipelines.sources.columns`); ``source_zone`` only documents the zone of a source's
local-time fields.

:meth:`SourceAdapter.read_records` is the dead-letter interface: nothing is dropped, and per
file the chunks' ``records`` add up to the records read (= accepted + rejected).
:meth:`SourceAdapter.read_events` is the strict one: staged rows, and :class:`SourceError` at
the first rejected record.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from pipelines.settings import IngestRules, SourceConfig
from pipelines.sources.convert import ChunkConversion, EventMapping, convert_chunk, raise_on_rejected
from pipelines.sources.csvio import CsvFormat, file_columns, iter_csv_records
from pipelines.sources.errors import SourceError
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
    def event_stream(self, file: str, chunk_rows: int) -> EventStream:
        """The mapping and raw chunks of one event file (:class:`SourceError` for file-level problems)."""

    def read_records(
        self,
        file: str,
        rules: IngestRules | None,
        chunk_rows: int = 500_000,
        now: dt.datetime | None = None,
    ) -> Iterator[ChunkConversion]:
        """Every record of ``file``, accepted or rejected, ``chunk_rows`` records per chunk.

        Each :class:`ChunkConversion` holds the accepted rows (``.staged``, exactly
        ``STAGED_EVENT_SCHEMA``, file order), the rejected records (``.rejected``,
        ``REJECTED_RECORD_SCHEMA``, file order) and ``.records`` = their sum. ``rules`` are the
        ingestion rules (``Settings.rules``); ``None`` checks only what :meth:`read_events`
        always did (reading, types, the 1900..2200 window). ``now`` (default: the current time,
        taken once per file) is the reference of ``timestamp_in_future``. A bad record never
        raises; file-level problems (missing file or columns, no header, unreadable or truncated
        file) raise :class:`SourceError`.
        """
        stream = self.event_stream(file, chunk_rows)
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

        yield from pipelined(stream.chunks, convert)

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

    def _csv_stream(self, file: str, fmt: CsvFormat, mapping: EventMapping, chunk_rows: int) -> EventStream:
        """A delimited event file read by :func:`~pipelines.sources.csvio.iter_csv_records`."""
        existing_path(file, "event file")
        mapping.check_columns(file_columns(file, fmt), file)
        return EventStream(mapping, iter_csv_records(file, fmt, chunk_rows))
