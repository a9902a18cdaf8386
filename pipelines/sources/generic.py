"""Generic event files described by a column mapping: CSV (plain or gzipped) and Parquet.

``config.path`` is one file or a directory of ``*.csv`` / ``*.csv.gz`` (kind ``csv``) or
``*.parquet`` (kind ``parquet``) files, read in name order. ``config.mapping`` names the source
columns of the canonical fields; ``timestamp_unit`` (``s``, ``ms``, ``us`` or ``iso``) says how
to read the event time, ``time_zone`` which zone times without an offset are in, ``delimiter``
the CSV field separator. ``config.users`` / ``config.items`` optionally name attribute files.
"""
from __future__ import annotations

import pyarrow as pa

from pipelines.sections import DimensionFile, SourceConfig
from pipelines.sources.base import EventStream, SourceAdapter
from pipelines.sources.convert import EventMapping
from pipelines.sources.csvio import DEFAULT_MAX_LINE_BYTES, CsvFormat
from pipelines.sources.dimensions import read_dimension_file
from pipelines.sources.errors import SourceError
from pipelines.sources.files import RawChunk, existing_path, iter_parquet, parquet_columns


def mapping_from_config(config: SourceConfig) -> EventMapping:
    m = config.mapping
    if m is None:
        raise SourceError(f"{config.path}: a {config.kind} source needs a column mapping")
    return EventMapping(
        user_id=m.user_id,
        item_id=m.item_id,
        timestamp=m.timestamp,
        timestamp_unit=config.timestamp_unit,
        time_zone=config.time_zone,
        play_time_ms=m.play_time_ms,
        duration_ms=m.duration_ms,
        rating=m.rating,
        flags=dict(m.flags),
    )


class _GenericAdapter(SourceAdapter):
    #: Default; naive times are read in the configured ``config.time_zone``.
    source_zone = "UTC"

    def __init__(self, name: str, config: SourceConfig):
        super().__init__(name, config)
        self.mapping = mapping_from_config(config)

    def read_users(self) -> pa.Table | None:
        return self._read_dimension(self.config.users, "user_id")

    def read_items(self) -> pa.Table | None:
        return self._read_dimension(self.config.items, "item_id")

    def _read_dimension(self, d: DimensionFile | None, key: str) -> pa.Table | None:
        if d is None:
            return None
        # A path named in the configuration: a link there is the operator's choice (not checked).
        return read_dimension_file(
            d.path, id_column=d.id_column, key=key, source=self.name, delimiter=self.config.delimiter
        )


class CsvAdapter(_GenericAdapter):
    """Delimited text files with a header row (UTF-8, optionally gzipped)."""

    kind = "csv"

    @property
    def format(self) -> CsvFormat:
        return CsvFormat(delimiter=self.config.delimiter, has_header=True, quoting=True)

    def event_files(self) -> list[str]:
        return self._files_or_error(["*.csv", "*.csv.gz"], "CSV files")

    def event_stream(self, file: str, chunk_rows: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> EventStream:
        return self._csv_stream(file, self.format, self.mapping, chunk_rows, max_line_bytes)


class ParquetAdapter(_GenericAdapter):
    """Parquet files; native types are used as they are, text is parsed like CSV."""

    kind = "parquet"

    def event_files(self) -> list[str]:
        return self._files_or_error(["*.parquet"], "Parquet files")

    def event_stream(self, file: str, chunk_rows: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> EventStream:
        """Parquet rows; a rejected row's ``raw_record`` is a JSON object of its fields as text.

        Parquet has no lines: ``max_line_bytes`` does not apply (a long value is ``oversized_field``)."""
        existing_path(file, "event file")
        self.mapping.check_columns(parquet_columns(file), file)
        chunks = (RawChunk(first_line=line, table=table) for line, table in iter_parquet(file, chunk_rows))
        return EventStream(self.mapping, chunks)
