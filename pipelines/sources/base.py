"""The source adapter interface, :class:`SourceAdapter`, and the steps every adapter shares.

An adapter turns the files of one source into tables of
:data:`features.events.STAGED_EVENT_SCHEMA` (one row per source record, in file order) and,
where the source has them, user and item attribute tables for the ``users`` / ``items``
contracts. Event times are always UTC (see :mod:`pipelines.sources.columns`); ``source_zone``
only documents the zone of a source's local-time fields.

The machinery lives in: :mod:`~pipelines.sources.errors` (errors),
:mod:`~pipelines.sources.columns` (typed columns), :mod:`~pipelines.sources.convert` (chunks to
staged rows), :mod:`~pipelines.sources.files` (file matching, chunking, Parquet),
:mod:`~pipelines.sources.csvio` (delimited files) and :mod:`~pipelines.sources.dimensions`
(users and items files).
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from pipelines.settings import SourceConfig
from pipelines.sources.convert import EventMapping, convert_chunk, raise_on_rejected
from pipelines.sources.csvio import CsvFormat, convert_csv_stream, file_columns
from pipelines.sources.errors import SourceError
from pipelines.sources.files import existing_path, match_files


class SourceAdapter(abc.ABC):
    """Reads one configured source: its event files, and its users and items where it has them."""

    kind: ClassVar[str]
    #: Zone of the local-time fields of the source (documentation; event times are converted to UTC).
    source_zone: ClassVar[str]

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
    def read_events(self, file: str, chunk_rows: int = 500_000) -> Iterator[pa.Table]:
        """Tables of exactly ``STAGED_EVENT_SCHEMA`` for one file, ``chunk_rows`` rows at a time."""

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

    def _staged(
        self,
        raw: pa.Table,
        file: str,
        first_line: int,
        mapping: EventMapping,
        keys: pa.Array | None = None,
        reasons: pa.Array | None = None,
    ) -> pa.Table:
        """One chunk of ``file`` as staged rows (:func:`convert_chunk`); :class:`SourceError` on a bad row."""
        conversion = convert_chunk(
            raw,
            source=self.name,
            source_file=Path(file).name,
            first_line=first_line,
            mapping=mapping,
            keys=keys,
            reasons=reasons,
        )
        return raise_on_rejected(conversion, file)

    def _chunk_converter(self, file: str, mapping: EventMapping) -> Callable[[tuple[int, pa.Table]], pa.Table]:
        """Staged rows from the ``(first line, raw chunk)`` items of a CSV or Parquet stream of ``file``."""

        def convert(item: tuple[int, pa.Table]) -> pa.Table:
            first_line, raw = item
            return self._staged(raw, file, first_line, mapping)

        return convert

    def _staged_from_csv(self, file: str, fmt: CsvFormat, mapping: EventMapping, chunk_rows: int) -> Iterator[pa.Table]:
        """Stream a delimited event file through :func:`convert_chunk`."""
        existing_path(file, "event file")
        mapping.check_columns(file_columns(file, fmt), file)
        yield from convert_csv_stream(file, fmt, chunk_rows, self._chunk_converter(file, mapping))
