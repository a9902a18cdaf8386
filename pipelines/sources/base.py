"""What every source adapter shares: the interface, streaming CSV reading and typed conversion.

An adapter turns the files of one source into tables of
:data:`features.events.STAGED_EVENT_SCHEMA` (one row per source record, in file order) and,
where the source has them, user and item attribute tables for the ``users`` / ``items``
contracts.

Reading is streaming: a file is read block by block (``pyarrow.csv.open_csv`` on
``pa.input_stream(path, compression="detect")``, so ``.gz`` files need no unpacking) with every
column as text, re-cut into chunks of exactly ``chunk_rows`` rows (the last may be shorter), and
each chunk is converted with vectorised ``pyarrow.compute`` kernels. The raw text is kept until
the ``record_key`` is built, so a plain and a gzipped copy of a file give the same keys.

Conversion of one chunk (:func:`convert_chunk`) never raises on a bad value: it returns the rows
that converted and a table of rejected rows (file, line, record key, reason). Today
:meth:`SourceAdapter.read_events` raises :class:`SourceError` on the first rejected row; a
dead-letter version only has to route ``ChunkConversion.rejected`` instead.
"""
from __future__ import annotations

import abc
import io
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from features.events import FEEDBACK_FLAGS, ID_SEPARATOR, STAGED_EVENT_SCHEMA, TS_TYPE
from pipelines.settings import SourceConfig

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

#: Event times outside [1900-01-01, 2200-01-01) UTC are rejected: they are almost always a
#: wrong ``timestamp_unit`` (milliseconds read as seconds, ...), and Spark cannot hold years > 9999.
MIN_EVENT_US = -2_208_988_800_000_000  # 1900-01-01T00:00:00Z
MAX_EVENT_US = 7_258_118_400_000_000  # 2200-01-01T00:00:00Z

_EPOCH_FACTOR_US = {"s": 1_000_000, "ms": 1_000, "us": 1}
_STR = pa.string()
_NULL_STR = pa.scalar(None, pa.string())
_INT_TEXT = r"^-?[0-9]{1,18}$"
_FLOAT_TEXT = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_ISO_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?)?\s*(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
_ISO_WITH_OFFSET = r"[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?\s*(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"
_TRUE_TEXT = ["1", "true", "True", "TRUE", "t", "T", "1.0"]
_FALSE_TEXT = ["0", "false", "False", "FALSE", "f", "F", "0.0"]
_VALUE_PREVIEW_CHARS = 60

T = TypeVar("T")
R = TypeVar("R")


class SourceError(ValueError):
    """A source cannot be read; the message is one line naming the file (and line) and the problem."""


class InvalidRowError(SourceError):
    """A line of a delimited file has the wrong number of fields.

    ``line`` is its 1-based data line (``None`` if it could not be located); ``rows_emitted``
    how many rows before it the reader had already handed out as chunks.
    """

    def __init__(self, message: str, line: int | None, rows_emitted: int = 0):
        super().__init__(message)
        self.line = line
        self.rows_emitted = rows_emitted


# --------------------------------------------------------------------------------------------
# Column mapping and chunk conversion
# --------------------------------------------------------------------------------------------


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


class _Rejects:
    """Collects, per row, the first reason it cannot be converted (vectorised)."""

    def __init__(self, num_rows: int):
        self.num_rows = num_rows
        self.reason: pa.Array | None = None

    def flag(self, bad: pa.Array, reason: str | pa.Array | Callable[[], pa.Array]) -> None:
        """Mark rows where ``bad`` is true; ``reason`` is text, text per row, or makes it (lazily)."""
        bad = pc.fill_null(bad, False)
        if not pc.any(bad).as_py():
            return
        if callable(reason):
            reason = reason()
        text = pa.scalar(reason, _STR) if isinstance(reason, str) else reason
        msg = pc.if_else(bad, text, _NULL_STR)
        self.reason = msg if self.reason is None else pc.coalesce(self.reason, msg)

    def good_mask(self) -> pa.Array | None:
        return None if self.reason is None else pc.is_null(self.reason)


def _as_array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        return col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    return col


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _as_text(arr: pa.Array) -> pa.Array:
    """The value of each row as text (the raw field for text columns)."""
    if pa.types.is_string(arr.type):
        return arr
    if pa.types.is_dictionary(arr.type):
        return _as_text(arr.dictionary_decode())
    try:
        return pc.cast(arr, _STR)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Nested values (lists, structs, maps): JSON text, row by row. Only reached for
        # Parquet files with nested columns; documented as slow in docs/sources.md.
        import json

        return pa.array(
            [None if v is None else json.dumps(v, sort_keys=True, default=str) for v in arr.to_pylist()],
            _STR,
        )


def constant_strings(value: str, num_rows: int) -> pa.Array:
    """``num_rows`` copies of ``value`` as a string array (no Python loop)."""
    indices = pa.array(np.zeros(num_rows, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array([value], _STR)).cast(_STR)


def record_keys(columns: list[pa.Array]) -> pa.Array:
    """:func:`features.events.record_key` of every row, vectorised (nulls written as empty)."""
    texts = [_as_text(c) for c in columns]
    if not texts:
        raise ValueError("a record needs at least one field")
    return pc.binary_join_element_wise(*texts, ID_SEPARATOR, null_handling="replace", null_replacement="")


def _describe_bad(column: str, raw: pa.Array, what: str) -> pa.Array:
    value = pc.utf8_slice_codeunits(_as_text(raw), 0, _VALUE_PREVIEW_CHARS)
    return pc.binary_join_element_wise(
        f"column {column!r}: cannot read '", value, f"' as {what}", "", null_handling="replace", null_replacement=""
    )


def _cast_lenient(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast, with null for every value that does not cast (bisects only around bad values)."""
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    n = len(arr)
    if n == 1:
        return pa.nulls(1, target)
    if n <= 16:
        return pa.concat_arrays([_cast_lenient(arr.slice(i, 1), target) for i in range(n)])
    mid = n // 2
    return pa.concat_arrays([_cast_lenient(arr.slice(0, mid), target), _cast_lenient(arr.slice(mid), target)])


def _text_to_float(text: pa.Array) -> pa.Array:
    """Text to float64; null where it is not a number (nan/inf text included)."""
    try:
        out = pc.cast(text, pa.float64())
    except pa.ArrowInvalid:
        trimmed = pc.utf8_trim_whitespace(text)
        numeric = pc.match_substring_regex(trimmed, _FLOAT_TEXT)
        out = _cast_lenient(pc.if_else(numeric, trimmed, _NULL_STR), pa.float64())
    return pc.if_else(pc.is_finite(out), out, pa.scalar(None, pa.float64()))


def _float_to_int(values: pa.Array) -> pa.Array:
    """Float64 to int64 where the value is finite and integral; null elsewhere."""
    ok = pc.and_(pc.is_finite(values), pc.equal(pc.floor(values), values))
    ok = pc.and_(ok, pc.less(pc.abs(values), 9.2e18))
    return pc.cast(pc.if_else(ok, values, pa.scalar(None, pa.float64())), pa.int64(), safe=False)


def _text_to_int(text: pa.Array) -> pa.Array:
    """Text to int64 ("12", "+12", " 12 ", "12.0"); null where it is not an integer."""
    try:
        return pc.cast(text, pa.int64())
    except pa.ArrowInvalid:
        pass
    trimmed = pc.replace_substring_regex(pc.utf8_trim_whitespace(text), r"^\+", "")
    is_int = pc.match_substring_regex(trimmed, _INT_TEXT)
    ints = pc.cast(pc.if_else(is_int, trimmed, _NULL_STR), pa.int64())
    floats = _text_to_float(pc.if_else(is_int, _NULL_STR, trimmed))
    return pc.coalesce(ints, _float_to_int(floats))


def to_int64(arr: pa.Array, column: str, rejects: _Rejects) -> pa.Array:
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        out = _cast_lenient(arr, pa.int64())
    elif pa.types.is_floating(t):
        out = _float_to_int(pc.cast(arr, pa.float64()))
    elif _is_text(t):
        out = _text_to_int(pc.cast(arr, _STR))
    else:
        out = pa.nulls(len(arr), pa.int64())
    rejects.flag(pc.and_(pc.is_valid(arr), pc.is_null(out)), lambda: _describe_bad(column, arr, "an integer"))
    return out


def to_float64(arr: pa.Array, column: str, rejects: _Rejects) -> pa.Array:
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        out = pc.cast(arr, pa.float64())
        out = pc.if_else(pc.is_finite(out), out, pa.scalar(None, pa.float64()))
    elif _is_text(t):
        out = _text_to_float(pc.cast(arr, _STR))
    else:
        out = pa.nulls(len(arr), pa.float64())
    rejects.flag(pc.and_(pc.is_valid(arr), pc.is_null(out)), lambda: _describe_bad(column, arr, "a finite number"))
    return out


def to_bool(arr: pa.Array, column: str, rejects: _Rejects) -> pa.Array:
    """0/1/true/false (any case, also t/f and 0.0/1.0) to bool; empty stays null."""
    t = arr.type
    if pa.types.is_boolean(t):
        return arr
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        is_true, is_false = pc.equal(arr, 1), pc.equal(arr, 0)
    elif _is_text(t):
        text = pc.cast(arr, _STR)
        is_true, is_false = pc.equal(text, "1"), pc.equal(text, "0")
        known = pc.or_kleene(is_true, is_false)
        if not pc.all(pc.or_(pc.fill_null(known, False), pc.is_null(text))).as_py():
            is_true = pc.is_in(text, value_set=pa.array(_TRUE_TEXT))
            is_false = pc.is_in(text, value_set=pa.array(_FALSE_TEXT))
    else:
        is_true = is_false = pa.nulls(len(arr), pa.bool_())
    is_true, is_false = pc.fill_null(is_true, False), pc.fill_null(is_false, False)
    out = pc.if_else(is_true, True, pc.if_else(is_false, False, pa.scalar(None, pa.bool_())))
    rejects.flag(pc.and_(pc.is_valid(arr), pc.is_null(out)), lambda: _describe_bad(column, arr, "a flag (0/1/true/false)"))
    return out


def to_id(arr: pa.Array, column: str, rejects: _Rejects) -> pa.Array:
    """An id as text; empty or missing ids are rejected."""
    out = _as_text(arr)
    missing = pc.or_kleene(pc.is_null(out), pc.equal(pc.utf8_length(out), 0))
    rejects.flag(missing, f"column {column!r} is empty")
    return out


def _epoch_to_us(arr: pa.Array, unit: str) -> pa.Array:
    """Epoch numbers (int, float or their text) in ``unit`` to int64 microseconds; null if invalid."""
    factor = _EPOCH_FACTOR_US[unit]
    t = arr.type
    ints = floats = None
    if pa.types.is_integer(t):
        ints = _cast_lenient(arr, pa.int64())
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        floats = pc.cast(arr, pa.float64())
    elif _is_text(t):
        text = pc.cast(arr, _STR)
        try:
            ints = pc.cast(text, pa.int64())
        except pa.ArrowInvalid:
            trimmed = pc.replace_substring_regex(pc.utf8_trim_whitespace(text), r"^\+", "")
            is_int = pc.match_substring_regex(trimmed, _INT_TEXT)
            ints = pc.cast(pc.if_else(is_int, trimmed, _NULL_STR), pa.int64())
            floats = _text_to_float(pc.if_else(is_int, _NULL_STR, trimmed))
    else:
        return pa.nulls(len(arr), pa.int64())
    parts = []
    if ints is not None:
        limit = (2**63 - 1) // factor
        in_range = pc.less_equal(pc.abs(ints), limit)  # abs of int64 min overflows to itself: excluded below
        in_range = pc.and_(in_range, pc.greater(ints, -limit))
        parts.append(pc.multiply(pc.if_else(in_range, ints, pa.scalar(None, pa.int64())), factor))
    if floats is not None:
        scaled = pc.multiply(floats, float(factor))
        ok = pc.and_(pc.is_finite(scaled), pc.less(pc.abs(scaled), 9.2e18))
        parts.append(pc.cast(pc.round(pc.if_else(ok, scaled, pa.scalar(None, pa.float64()))), pa.int64(), safe=False))
    return parts[0] if len(parts) == 1 else pc.coalesce(*parts)


def _naive_to_utc_us(naive_us: pa.Array, zone: str, column: str, rejects: _Rejects) -> pa.Array:
    """Naive wall-clock times (timestamp[us]) in ``zone`` to UTC epoch microseconds.

    Ambiguous times (the repeated hour when clocks go back) take the earlier instant; times
    that do not exist (the skipped hour when clocks go forward) are rejected.
    """
    if zone in ("UTC", "Etc/UTC"):
        return pc.cast(naive_us, pa.int64())
    aware = pc.assume_timezone(naive_us, zone, ambiguous="earliest", nonexistent="earliest")
    back = pc.local_timestamp(aware)
    gap = pc.not_equal(pc.cast(back, pa.int64()), pc.cast(naive_us, pa.int64()))
    rejects.flag(gap, lambda: pc.binary_join_element_wise(
        f"column {column!r}: local time '", pc.cast(naive_us, _STR), f"' does not exist in {zone} (clock change)", ""
    ))
    out = pc.cast(aware, pa.int64())
    return pc.if_else(pc.fill_null(gap, False), pa.scalar(None, pa.int64()), out)


def _iso_to_us(text: pa.Array, zone: str, column: str, rejects: _Rejects) -> pa.Array:
    """ISO-8601 text to UTC epoch microseconds; text without an offset is local time in ``zone``."""
    text = pc.utf8_trim_whitespace(text)
    ok = pc.match_substring_regex(text, _ISO_TEXT)
    text = pc.if_else(ok, pc.replace_substring(text, ",", "."), _NULL_STR)
    text = pc.replace_substring_regex(text, r"\s+(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$", r"\1")  # "12:00 +02:00"
    has_offset = pc.fill_null(pc.match_substring_regex(text, _ISO_WITH_OFFSET), False)
    aware_text = pc.if_else(has_offset, text, _NULL_STR)
    naive_text = pc.if_else(has_offset, _NULL_STR, text)
    parts = []
    if pc.any(has_offset).as_py():
        aware = _cast_lenient(aware_text, pa.timestamp("ns", tz="UTC"))
        parts.append(pc.cast(pc.cast(aware, pa.timestamp("us", tz="UTC"), safe=False), pa.int64()))
    if not pc.all(has_offset).as_py():
        naive = _cast_lenient(naive_text, pa.timestamp("ns"))
        naive = pc.cast(naive, pa.timestamp("us"), safe=False)
        parts.append(_naive_to_utc_us(naive, zone, column, rejects))
    return parts[0] if len(parts) == 1 else pc.coalesce(*parts)


def to_event_ts(arr: pa.Array, column: str, unit: str, zone: str, rejects: _Rejects) -> pa.Array:
    """Event time as ``timestamp[us, UTC]``; missing, unreadable or implausible times are rejected."""
    t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            us = _naive_to_utc_us(pc.cast(arr, pa.timestamp("us"), safe=False), zone, column, rejects)
        else:
            us = pc.cast(pc.cast(arr, pa.timestamp("us", tz="UTC"), safe=False), pa.int64())
        what = "a timestamp"
    elif pa.types.is_date(t):
        us = _naive_to_utc_us(pc.cast(pc.cast(arr, pa.date32()), pa.timestamp("us")), zone, column, rejects)
        what = "a date"
    elif unit == "iso" and _is_text(t):
        us = _iso_to_us(pc.cast(arr, _STR), zone, column, rejects)
        what = f"an ISO-8601 time (time_zone {zone})"
    elif unit == "iso":
        us = pa.nulls(len(arr), pa.int64())
        what = "an ISO-8601 time"
    else:
        us = _epoch_to_us(arr, unit)
        what = f"epoch {unit}"
    rejects.flag(pc.is_null(arr), f"column {column!r} is empty")
    rejects.flag(pc.and_(pc.is_valid(arr), pc.is_null(us)), lambda: _describe_bad(column, arr, what))
    outside = pc.or_(pc.less(us, MIN_EVENT_US), pc.greater_equal(us, MAX_EVENT_US))
    rejects.flag(
        outside,
        lambda: pc.binary_join_element_wise(
            f"column {column!r}: '",
            pc.utf8_slice_codeunits(_as_text(arr), 0, _VALUE_PREVIEW_CHARS),
            f"' read as {what} is outside 1900..2200 UTC (wrong timestamp unit?)",
            "",
            null_handling="replace",
            null_replacement="",
        ),
    )
    us = pc.if_else(pc.fill_null(outside, False), pa.scalar(None, pa.int64()), us)
    return pc.cast(us, TS_TYPE)


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
    cols = {name: _as_array(raw.column(name)) for name in raw.column_names}
    if keys is None:
        keys = record_keys([cols[name] for name in raw.column_names]) if n else pa.array([], _STR)
    rejects = _Rejects(n)
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


def pipelined(items: Iterable[T], convert: Callable[[T], R], depth: int = 2) -> Iterator[R]:
    """``convert(item)`` for every item, in order, converting in background threads.

    While chunk *k* is converted, chunk *k+1* is read: pyarrow releases the GIL in both, so
    reading and converting overlap. At most ``depth`` chunks wait converted or in conversion,
    which bounds memory. Errors come out in file order: a read error after a chunk whose
    conversion fails surfaces the conversion error (the earlier line) first.
    """
    pending: deque[Future[R]] = deque()
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="recfeat-source") as pool:
        try:
            while True:
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                except Exception:
                    # Reading failed: an earlier chunk's conversion error names an earlier line.
                    while pending:
                        pending.popleft().result()
                    raise
                pending.append(pool.submit(convert, item))
                while len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def existing_path(path: str | Path, what: str = "source path") -> Path:
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: {what} does not exist")
    return p


def strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def match_files(directory: Path, patterns: Iterable[str]) -> list[Path]:
    """Files in ``directory`` (not recursive) matching any glob, sorted by name.

    A file and its gzipped copy (``x.csv`` and ``x.csv.gz``) count once: the plain one is kept.
    """
    found: dict[str, Path] = {}
    for pattern in patterns:
        for p in directory.glob(pattern):
            if p.is_file():
                found[p.name] = p
    names = set(found)
    keep = [p for name, p in found.items() if not (name.endswith(".gz") and strip_gz(name) in names)]
    return sorted(keep, key=lambda p: p.name)


# --------------------------------------------------------------------------------------------
# Streaming CSV
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvFormat:
    """How a delimited text file is laid out."""

    delimiter: str = ","
    has_header: bool = True
    quoting: bool = True
    encoding: str = "utf8"
    column_names: tuple[str, ...] | None = None  # for files without a header

    def parse_options(self, invalid_row_handler=None) -> pcsv.ParseOptions:
        if len(self.delimiter) != 1:
            raise SourceError(f"delimiter {self.delimiter!r} must be one character")
        return pcsv.ParseOptions(
            delimiter=self.delimiter,
            quote_char='"' if self.quoting else False,
            double_quote=self.quoting,
            newlines_in_values=False,
            invalid_row_handler=invalid_row_handler,
        )


def _open(path: str | Path) -> pa.NativeFile:
    try:
        return pa.input_stream(str(path), compression="detect")
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path}: cannot open: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_header(path: str | Path, fmt: CsvFormat) -> list[str]:
    """The column names in the first line of ``path`` (``SourceError`` if it is missing or unreadable)."""
    try:
        with _open(path) as stream:
            buf = b""
            while b"\n" not in buf and len(buf) < (16 << 20):
                block = stream.read(1 << 16)
                if not block:
                    break
                buf += block
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path}: cannot read the header: {_first_line(exc)}") from None
    if buf.startswith(b"\xef\xbb\xbf"):
        buf = buf[3:]
    line = buf.split(b"\n", 1)[0].rstrip(b"\r")
    if not line.strip():
        raise SourceError(f"{path}: no header line (the file is empty or starts with a blank line)")
    try:
        header = pcsv.read_csv(
            pa.BufferReader(line + b"\n"),
            read_options=pcsv.ReadOptions(encoding=fmt.encoding, autogenerate_column_names=False),
            parse_options=fmt.parse_options(),
        )
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: unreadable header: {_first_line(exc)}") from None
    names = header.column_names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SourceError(f"{path}: header repeats column names {duplicates}")
    return names


def _locate_line(path: str | Path, text: str, fmt: CsvFormat) -> int | None:
    """The 1-based data line (header and blank lines not counted) whose text is ``text``; error path only."""
    try:
        with _open(path) as stream, io.TextIOWrapper(stream, encoding=fmt.encoding, errors="replace", newline="") as f:
            data_line = 0
            header_pending = fmt.has_header
            for physical in f:
                stripped = physical.rstrip("\r\n")
                if not stripped:
                    continue
                if header_pending:
                    header_pending = False
                    continue
                data_line += 1
                if stripped == text:
                    return data_line
    except (OSError, pa.ArrowException):
        return None
    return None


def _block_size(chunk_rows: int) -> int:
    # Measured: 1 MiB blocks parse fastest (larger blocks are slower, threads do not help).
    return 1 << 20 if chunk_rows >= 4096 else 256 << 10


def rechunk(batches: Iterable[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``chunk_rows`` rows (the last may be shorter) from a stream of batches."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    buffered: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        buffered.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(buffered)
            yield table.slice(0, chunk_rows).combine_chunks()
            rest = table.slice(chunk_rows)
            buffered = rest.to_batches() if rest.num_rows else []
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(buffered).combine_chunks()


def iter_csv_text(
    path: str | Path, fmt: CsvFormat, chunk_rows: int, skip_invalid: bool = False
) -> Iterator[tuple[int, pa.Table]]:
    """Stream a delimited file as (first data line, table of text columns) chunks.

    Every column is read as text; empty fields are null. Blank lines are skipped and not
    counted. A row with the wrong number of fields raises :class:`InvalidRowError` with its
    line, or is dropped with ``skip_invalid`` (later lines are then numbered one lower).
    """
    names = read_header(path, fmt) if fmt.has_header else list(fmt.column_names or ())
    if not names:
        raise SourceError(f"{path}: no column names for a file without a header")
    invalid: list = []

    def on_invalid(row) -> str:
        if skip_invalid:
            return "skip"
        invalid.append(row)
        return "error"

    try:
        stream = _open(path)
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(
                column_names=names,
                skip_rows=1 if fmt.has_header else 0,
                block_size=_block_size(chunk_rows),
                encoding=fmt.encoding,
            ),
            parse_options=fmt.parse_options(on_invalid),
            convert_options=pcsv.ConvertOptions(
                column_types={n: _STR for n in names},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except SourceError:
        raise
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        stream.close()
        if invalid:
            _raise_invalid_row(path, fmt, invalid[0], len(names))
        raise SourceError(f"{path}: cannot read: {_first_line(exc)}") from None

    line = 1
    read_rows = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal read_rows
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
                if invalid:
                    _raise_invalid_row(path, fmt, invalid[0], len(names))
                raise SourceError(
                    f"{path}: cannot read after data line {read_rows}: {_first_line(exc)}"
                ) from None
            read_rows += batch.num_rows
            yield batch

    try:
        for table in rechunk(batches(), chunk_rows):
            yield line, table
            line += table.num_rows
    except InvalidRowError as err:
        err.rows_emitted = line - 1
        raise
    finally:
        stream.close()


def _raise_invalid_row(path, fmt: CsvFormat, row, expected: int) -> None:
    where = _locate_line(path, row.text, fmt)
    at = f"line {where}" if where is not None else "a line"
    preview = row.text[:_VALUE_PREVIEW_CHARS].replace("\r", "\\r")
    raise InvalidRowError(
        f"{path}: {at}: expected {expected} fields, found {row.actual_columns}: {preview!r}", where
    )


def convert_csv_stream(
    path: str | Path,
    fmt: CsvFormat,
    chunk_rows: int,
    convert: Callable[[tuple[int, pa.Table]], pa.Table],
) -> Iterator[pa.Table]:
    """``convert`` every chunk of a delimited file (pipelined), reporting errors in line order.

    The CSV reader parses a block at a time, so a malformed line can stop it before the rows
    ahead of it in the same block were handed out. Those rows are then read again (skipping
    the malformed line) and converted, so a bad value on an earlier line is reported first.
    """
    try:
        yield from pipelined(iter_csv_text(path, fmt, chunk_rows), convert)
    except InvalidRowError as err:
        if err.line is not None and err.line - 1 > err.rows_emitted:
            start, stop = err.rows_emitted + 1, err.line  # data lines [start, stop) to check
            for first_line, raw in iter_csv_text(path, fmt, chunk_rows, skip_invalid=True):
                last_line = first_line + raw.num_rows - 1
                if last_line < start:
                    continue
                if first_line >= stop:
                    break
                lo = max(0, start - first_line)
                hi = min(raw.num_rows, stop - first_line)
                convert((first_line + lo, raw.slice(lo, hi - lo)))
        raise


def iter_parquet(path: str | Path, chunk_rows: int) -> Iterator[tuple[int, pa.Table]]:
    """Stream a Parquet file as (first row number, table) chunks of ``chunk_rows`` rows."""
    try:
        pf = pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {_first_line(exc)}") from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from pf.iter_batches(batch_size=chunk_rows)
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"{path}: cannot read: {_first_line(exc)}") from None

    line = 1
    try:
        for table in rechunk(batches(), chunk_rows):
            yield line, table
            line += table.num_rows
    finally:
        pf.close()


def parquet_columns(path: str | Path) -> list[str]:
    try:
        return list(pq.read_schema(str(path)).names)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {_first_line(exc)}") from None


# --------------------------------------------------------------------------------------------
# Dimension files (users, items)
# --------------------------------------------------------------------------------------------


def snake_case(name: str) -> str:
    """``UserID`` -> ``user_id``, ``movieId`` -> ``movie_id``, ``Zip-code`` -> ``zip_code``."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name.strip())
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"[^0-9A-Za-z]+", "_", s).strip("_").lower()
    return s or "column"


def read_text_table(path: str | Path, fmt: CsvFormat) -> pa.Table:
    """A whole (dimension) file with every column as text; UTF-8, falling back to Latin-1."""
    last_error: Exception | None = None
    for encoding in dict.fromkeys([fmt.encoding, "latin-1"]):
        this = CsvFormat(fmt.delimiter, fmt.has_header, fmt.quoting, encoding, fmt.column_names)
        try:
            chunks = [t for _, t in iter_csv_text(path, this, 1 << 40)]
        except SourceError as exc:
            if "UTF8" in str(exc) or "utf-8" in str(exc).lower() or "decode" in str(exc).lower():
                last_error = exc
                continue
            raise
        if not chunks:
            names = read_header(path, this) if fmt.has_header else list(fmt.column_names or ())
            return pa.table({n: pa.array([], _STR) for n in names})
        return pa.concat_tables(chunks)
    raise SourceError(str(last_error))


def infer_column(arr: pa.Array) -> pa.Array:
    """Text to int64, else float64, else date32 (YYYY-MM-DD), else text; empty stays null.

    A column with a number written with a leading zero (``01234``: a zip code, a code) stays text.
    """
    arr = _as_array(arr)
    if arr.null_count == len(arr):
        return arr
    if pc.any(pc.match_substring_regex(arr, r"^[+-]?0[0-9]")).as_py():
        return arr
    for target in (pa.int64(), pa.float64()):
        try:
            return pc.cast(arr, target)
        except pa.ArrowInvalid:
            pass
    if pc.all(pc.match_substring_regex(arr, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")).as_py():
        try:
            return pc.cast(arr, pa.date32())
        except pa.ArrowInvalid:
            pass
    return arr


def finish_dimension(
    table: pa.Table,
    *,
    id_column: str,
    key: str,
    source: str,
    path: str | Path,
    infer: bool = True,
    keep_text: Iterable[str] = (),
) -> pa.Table:
    """``key`` (text), ``source``, then the other columns snake_cased.

    With ``infer``, text columns are typed by :func:`infer_column`, except ids (the key and
    every ``*_id`` column) and ``keep_text``, which stay text.
    """
    if id_column not in table.column_names:
        raise SourceError(f"{path}: id column {id_column!r} is missing; the file has columns {table.column_names}")
    keep = set(keep_text)
    ids = _as_text(_as_array(table.column(id_column)))
    missing = pc.or_kleene(pc.is_null(ids), pc.equal(pc.utf8_length(ids), 0))
    if pc.any(missing).as_py():
        first = pc.index(missing, True).as_py() + 1
        raise SourceError(f"{path}: line {first}: column {id_column!r} is empty")
    arrays, names = [ids, constant_strings(source, table.num_rows)], [key, "source"]
    for name in table.column_names:
        if name == id_column:
            continue
        new = snake_case(name)
        while new in names:
            new = f"{new}_attr"
        arr = _as_array(table.column(name))
        if infer and _is_text(arr.type) and not (new.endswith("_id") or new in keep or name in keep):
            arr = infer_column(arr)
        elif new.endswith("_id"):
            arr = _as_text(arr)
        arrays.append(arr)
        names.append(new)
    return pa.Table.from_arrays(arrays, names=names)


def read_dimension_file(
    path: str | Path, *, id_column: str, key: str, source: str, delimiter: str = ","
) -> pa.Table:
    """A generic users/items file (CSV, optionally gzipped, or Parquet) as a dimension table."""
    p = existing_path(path, "dimension file")
    if strip_gz(p.name).endswith(".parquet"):
        try:
            table = pq.read_table(str(p))
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"{p}: not a readable Parquet file: {_first_line(exc)}") from None
        return finish_dimension(table, id_column=id_column, key=key, source=source, path=p, infer=False)
    table = read_text_table(p, CsvFormat(delimiter=delimiter))
    return finish_dimension(table, id_column=id_column, key=key, source=source, path=p)


# --------------------------------------------------------------------------------------------
# The adapter interface
# --------------------------------------------------------------------------------------------


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
        p = existing_path(self.path)
        if p.is_file():
            return [str(p)]
        files = match_files(p, patterns)
        if not files:
            raise SourceError(f"{p}: no {what} ({', '.join(patterns)}) in this directory")
        return [str(f) for f in files]

    def _convert(
        self,
        raw: pa.Table,
        file: str,
        first_line: int,
        mapping: EventMapping,
        keys: pa.Array | None = None,
        reasons: pa.Array | None = None,
    ) -> ChunkConversion:
        return convert_chunk(
            raw,
            source=self.name,
            source_file=Path(file).name,
            first_line=first_line,
            mapping=mapping,
            keys=keys,
            reasons=reasons,
        )

    def _staged_from_csv(self, file: str, fmt: CsvFormat, mapping: EventMapping, chunk_rows: int) -> Iterator[pa.Table]:
        """Stream a delimited event file through :func:`convert_chunk`."""
        existing_path(file, "event file")
        if fmt.has_header:
            mapping.check_columns(read_header(file, fmt), file)
        else:
            mapping.check_columns(fmt.column_names or (), file)

        def convert(item: tuple[int, pa.Table]) -> pa.Table:
            first_line, raw = item
            return raise_on_rejected(self._convert(raw, file, first_line, mapping), file)

        yield from convert_csv_stream(file, fmt, chunk_rows, convert)
