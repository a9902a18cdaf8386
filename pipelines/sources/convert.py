"""One chunk of raw source records to staged event rows, plus the rows that were rejected.

:class:`EventMapping` says which source column feeds which staged column and how to read the
event time (unit and time zone: see :mod:`pipelines.sources.columns`). :func:`convert_chunk`
never raises on a bad value: it returns a :class:`ChunkConversion` holding the rows that
converted (``STAGED_EVENT_SCHEMA``, in file order) and the rejected rows (``REJECTED_SCHEMA``:
file, line, record key, reason). Today the adapters call :func:`raise_on_rejected`, which
raises :class:`SourceError` on the first rejected row; a dead-letter version only has to route
``ChunkConversion.rejected`` instead.

The ``record_key`` of a row is built from the raw field texts, before any conversion, so a plain
and a gzipped copy of a file give the same keys.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.events import FEEDBACK_FLAGS, ID_SEPARATOR, STAGED_EVENT_SCHEMA
from pipelines.sources.columns import (
    Rejects,
    as_array,
    as_text,
    constant_strings,
    to_bool,
    to_event_ts,
    to_float64,
    to_id,
    to_int64,
)
from pipelines.sources.errors import SourceError

#: Columns of the rejected-rows table of :class:`ChunkConversion`.
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_line", pa.int64(), nullable=False),
        pa.field("record_key", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class EventMapping:
    """Which source column feeds which staged column, and how to read the event time.

    ``timestamp_unit`` is ``s``/``ms``/``us`` (epoch numbers, always UTC) or ``iso`` (ISO-8601
    text; text without an offset is local time in ``time_zone``). Native Parquet timestamp and
    date columns are used as they are (naive ones are read in ``time_zone``).
    """

    user_id: str
    item_id: str
    timestamp: str
    timestamp_unit: str = "s"
    time_zone: str = "UTC"
    play_time_ms: str | None = None
    duration_ms: str | None = None
    rating: str | None = None
    flags: dict[str, str] = field(default_factory=dict)  # canonical flag -> source column

    def source_columns(self) -> list[tuple[str, str]]:
        """(role, source column) pairs, the required ones first."""
        pairs = [("user_id", self.user_id), ("item_id", self.item_id), ("timestamp", self.timestamp)]
        for role in ("play_time_ms", "duration_ms", "rating"):
            col = getattr(self, role)
            if col is not None:
                pairs.append((role, col))
        pairs.extend((flag, col) for flag, col in self.flags.items())
        return pairs

    def check_columns(self, names: Iterable[str], file: str) -> None:
        """Raise :class:`SourceError` if a mapped column is not among ``names``."""
        available = list(names)
        for role, col in self.source_columns():
            if col not in available:
                raise SourceError(
                    f"{file}: column {col!r} (for {role}) is missing; the file has columns {available}"
                )


@dataclass(frozen=True)
class ChunkConversion:
    """The result of converting one chunk: converted rows and rejected rows."""

    staged: pa.Table  # STAGED_EVENT_SCHEMA, the rows that converted, in file order
    rejected: pa.Table  # REJECTED_SCHEMA, the rows that did not, in file order


def record_keys(columns: list[pa.Array]) -> pa.Array:
    """:func:`features.events.record_key` of every row, vectorised (nulls written as empty)."""
    texts = [as_text(c) for c in columns]
    if not texts:
        raise ValueError("a record needs at least one field")
    return pc.binary_join_element_wise(*texts, ID_SEPARATOR, null_handling="replace", null_replacement="")


def convert_chunk(
    raw: pa.Table,
    *,
    source: str,
    source_file: str,
    first_line: int,
    mapping: EventMapping,
    keys: pa.Array | None = None,
    reasons: pa.Array | None = None,
) -> ChunkConversion:
    """Convert one chunk of raw records (columns in file order) to staged rows.

    ``raw`` holds the file's columns (text for CSV, native types for Parquet); ``first_line``
    is the 1-based data line of its first row; ``keys`` overrides the record keys (used when
    the raw fields are not the columns of ``raw``, as for ``::``-separated files); ``reasons``
    marks rows already known to be bad (text per row, null for good rows).
    """
    n = raw.num_rows
    cols = {name: as_array(raw.column(name)) for name in raw.column_names}
    if keys is None:
        keys = record_keys([cols[name] for name in raw.column_names]) if n else pa.array([], pa.string())
    rejects = Rejects()
    if reasons is not None:
        rejects.flag(pc.is_valid(reasons), reasons)

    def optional(col: str | None, convert: Callable[..., pa.Array], type_: pa.DataType) -> pa.Array:
        if col is None:
            return pa.nulls(n, type_)
        return convert(cols[col], col, rejects)

    arrays: dict[str, pa.Array] = {
        "source": constant_strings(source, n),
        "source_file": constant_strings(source_file, n),
        "source_line": pa.array(np.arange(first_line, first_line + n, dtype=np.int64)),
        "record_key": keys,
        "user_id": to_id(cols[mapping.user_id], mapping.user_id, rejects),
        "item_id": to_id(cols[mapping.item_id], mapping.item_id, rejects),
        "event_ts": to_event_ts(
            cols[mapping.timestamp], mapping.timestamp, mapping.timestamp_unit, mapping.time_zone, rejects
        ),
        "play_time_ms": optional(mapping.play_time_ms, to_int64, pa.int64()),
        "duration_ms": optional(mapping.duration_ms, to_int64, pa.int64()),
        "rating": optional(mapping.rating, to_float64, pa.float64()),
    }
    for flag in FEEDBACK_FLAGS:
        arrays[flag] = optional(mapping.flags.get(flag), to_bool, pa.bool_())

    good = rejects.good_mask()
    if good is None:
        staged = pa.Table.from_arrays([arrays[f.name] for f in STAGED_EVENT_SCHEMA], schema=STAGED_EVENT_SCHEMA)
        return ChunkConversion(staged, REJECTED_SCHEMA.empty_table())
    bad = pc.invert(good)
    staged = pa.Table.from_arrays(
        [pc.filter(arrays[f.name], good) for f in STAGED_EVENT_SCHEMA], schema=STAGED_EVENT_SCHEMA
    )
    rejected = pa.Table.from_arrays(
        [pc.filter(arrays[name], bad) for name in ("source", "source_file", "source_line", "record_key")]
        + [pc.filter(rejects.reason, bad)],
        schema=REJECTED_SCHEMA,
    )
    return ChunkConversion(staged, rejected)


def raise_on_rejected(conversion: ChunkConversion, path: str) -> pa.Table:
    """The staged rows, or :class:`SourceError` for the first rejected row (file and line)."""
    if conversion.rejected.num_rows:
        first = conversion.rejected.slice(0, 1).to_pylist()[0]
        more = conversion.rejected.num_rows - 1
        tail = f" ({more} more bad rows in this chunk)" if more else ""
        reason = first["reason"].replace("\n", "\\n").replace("\r", "\\r")
        raise SourceError(f"{path}: line {first['source_line']}: {reason}{tail}")
    return conversion.staged
