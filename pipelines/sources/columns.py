"""Typed columns from raw ones: text (or native Parquet) values to ids, ints, floats, flags, event times.

Every converter takes one column (``pa.Array``), its source column name and a :class:`Rejects`,
and returns the typed column; a value that cannot be read becomes null and its row is flagged
in ``Rejects`` with a reason code (:class:`features.rejections.Reason`) and a one-line message
(conversion never raises on a bad value). All work is vectorised ``pyarrow.compute``.

Codes: an empty id or event time is ``missing_required_field``; a value that cannot be read
as its type (numbers, times, a local time that does not exist) is ``wrong_type``; a flag other
than 0/1/true/false is ``unknown_enum_value``; an event time outside 1900..2200 is
``timestamp_out_of_range``.

Units and time zones of :func:`to_event_ts` (output ``timestamp[us, UTC]``):

* epoch numbers (int, float or their text) in ``s``, ``ms`` or ``us`` are UTC;
* ``iso``: ISO-8601 text; text with an offset (``Z``, ``+02:00``) is that instant, text without
  one is local wall-clock time in the mapping's ``time_zone``;
* native timestamps with a zone are that instant; naive timestamps and dates are local time in
  ``time_zone``. For local times, an ambiguous time (clocks going back) takes the earlier
  instant and a time that does not exist (clocks going forward) is rejected;
* times outside [1900-01-01, 2200-01-01) UTC are rejected (almost always a wrong unit).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.events import TS_TYPE
from features.rejections import REASON_PRIORITY, Reason
from pipelines.sources.errors import VALUE_PREVIEW_CHARS

#: Event times outside [1900-01-01, 2200-01-01) UTC are rejected: they are almost always a
#: wrong ``timestamp_unit`` (milliseconds read as seconds, ...), and Spark cannot hold years > 9999.
MIN_EVENT_US = -2_208_988_800_000_000  # 1900-01-01T00:00:00Z
MAX_EVENT_US = 7_258_118_400_000_000  # 2200-01-01T00:00:00Z

_EPOCH_FACTOR_US = {"s": 1_000_000, "ms": 1_000, "us": 1}
_STR = pa.string()
_NULL_STR = pa.scalar(None, pa.string())
#: Text of an integer (optional minus, at most 18 digits: always fits int64).
INT_TEXT = r"^-?[0-9]{1,18}$"
#: Text of a decimal number (no nan/inf).
FLOAT_TEXT = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_ISO_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?)?\s*(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
_ISO_WITH_OFFSET = r"[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?\s*(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"
_RANK = {code: i for i, code in enumerate(REASON_PRIORITY)}
_CODES = pa.array([code.value for code in REASON_PRIORITY], pa.string())
_TRUE_TEXT = ["1", "true", "True", "TRUE", "t", "T", "1.0"]
_FALSE_TEXT = ["0", "false", "False", "FALSE", "f", "F", "0.0"]


class Rejects:
    """Collects, per row, the reason it is rejected (vectorised).

    A row flagged several times keeps the reason whose code comes first in
    :data:`features.rejections.REASON_PRIORITY`; among flags with the same code, the first
    flagged (the column converted first) wins.
    """

    def __init__(self) -> None:
        self.rank: pa.Array | None = None  # per row: priority rank of its reason (int8), null for good rows
        self.reason: pa.Array | None = None  # per row: the message of that reason, null for good rows

    def flag(self, bad: pa.Array, code: Reason, reason: str | pa.Array | Callable[[], pa.Array]) -> None:
        """Mark rows where ``bad`` is true with ``code``; ``reason`` is text, text per row, or makes it (lazily)."""
        bad = pc.fill_null(bad, False)
        if not pc.any(bad).as_py():
            return
        rank = pa.scalar(_RANK[code], pa.int8())
        if self.rank is not None:
            bad = pc.and_(bad, pc.fill_null(pc.greater(self.rank, rank), True))
            if not pc.any(bad).as_py():
                return
        if callable(reason):
            reason = reason()
        text = pa.scalar(reason, _STR) if isinstance(reason, str) else reason
        if self.rank is None:
            self.rank = pc.if_else(bad, rank, pa.scalar(None, pa.int8()))
            self.reason = pc.if_else(bad, text, _NULL_STR)
        else:
            self.rank = pc.if_else(bad, rank, self.rank)
            self.reason = pc.if_else(bad, text, self.reason)

    def flag_codes(self, codes: pa.Array, reasons: pa.Array) -> None:
        """Mark rows already judged elsewhere: ``codes`` (a Reason value per row, null for none) and their messages."""
        codes = as_array(codes)
        for code in pc.unique(codes.drop_null()).to_pylist():
            self.flag(pc.equal(codes, code), Reason(code), reasons)

    def good_mask(self) -> pa.Array | None:
        """True for the rows not flagged; ``None`` if no row was flagged."""
        return None if self.rank is None else pc.is_null(self.rank)

    def codes(self) -> pa.Array | None:
        """The reason code (a :class:`Reason` value) of every row, null for good rows."""
        return None if self.rank is None else pc.take(_CODES, self.rank)


def as_array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One contiguous array (a chunked array's chunks combined; no copy for a single chunk)."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        return col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    return col


def is_text(t: pa.DataType) -> bool:
    """Whether ``t`` is a string type (``string`` or ``large_string``)."""
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def as_text(arr: pa.Array) -> pa.Array:
    """The value of each row as text (the raw field for text columns)."""
    if pa.types.is_string(arr.type):
        return arr
    if pa.types.is_dictionary(arr.type):
        return as_text(arr.dictionary_decode())
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


def is_missing(text: pa.Array) -> pa.Array:
    """True where a text value is null or empty (never null itself)."""
    return pc.or_kleene(pc.is_null(text), pc.equal(pc.utf8_length(text), 0))


def _describe_bad(column: str, raw: pa.Array, what: str) -> pa.Array:
    value = pc.utf8_slice_codeunits(as_text(raw), 0, VALUE_PREVIEW_CHARS)
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
        numeric = pc.match_substring_regex(trimmed, FLOAT_TEXT)
        out = _cast_lenient(pc.if_else(numeric, trimmed, _NULL_STR), pa.float64())
    return pc.if_else(pc.is_finite(out), out, pa.scalar(None, pa.float64()))


def _float_to_int(values: pa.Array) -> pa.Array:
    """Float64 to int64 where the value is finite and integral; null elsewhere."""
    ok = pc.and_(pc.is_finite(values), pc.equal(pc.floor(values), values))
    ok = pc.and_(ok, pc.less(pc.abs(values), 9.2e18))
    return pc.cast(pc.if_else(ok, values, pa.scalar(None, pa.float64())), pa.int64(), safe=False)


def _text_to_numbers(text: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """Text to (int64, float64): integer text ("12", "+12", " 12 ") in the first, other numbers
    in the second (``None`` when every value is plain integer text); null where not a number."""
    try:
        return pc.cast(text, pa.int64()), None
    except pa.ArrowInvalid:
        pass
    trimmed = pc.replace_substring_regex(pc.utf8_trim_whitespace(text), r"^\+", "")
    is_int = pc.match_substring_regex(trimmed, INT_TEXT)
    ints = pc.cast(pc.if_else(is_int, trimmed, _NULL_STR), pa.int64())
    floats = _text_to_float(pc.if_else(is_int, _NULL_STR, trimmed))
    return ints, floats


def _text_to_int(text: pa.Array) -> pa.Array:
    """Text to int64 ("12", "+12", " 12 ", "12.0"); null where it is not an integer."""
    ints, floats = _text_to_numbers(text)
    return ints if floats is None else pc.coalesce(ints, _float_to_int(floats))


def to_int64(arr: pa.Array, column: str, rejects: Rejects) -> pa.Array:
    """Integers (ints, bools, integral floats, their text) to int64; anything else is rejected."""
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        out = _cast_lenient(arr, pa.int64())
    elif pa.types.is_floating(t):
        out = _float_to_int(pc.cast(arr, pa.float64()))
    elif is_text(t):
        out = _text_to_int(pc.cast(arr, _STR))
    else:
        out = pa.nulls(len(arr), pa.int64())
    rejects.flag(
        pc.and_(pc.is_valid(arr), pc.is_null(out)), Reason.WRONG_TYPE, lambda: _describe_bad(column, arr, "an integer")
    )
    return out


def to_float64(arr: pa.Array, column: str, rejects: Rejects) -> pa.Array:
    """Numbers (or their text) to float64; nan, inf and non-numbers are rejected."""
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        out = pc.cast(arr, pa.float64())
        out = pc.if_else(pc.is_finite(out), out, pa.scalar(None, pa.float64()))
    elif is_text(t):
        out = _text_to_float(pc.cast(arr, _STR))
    else:
        out = pa.nulls(len(arr), pa.float64())
    rejects.flag(
        pc.and_(pc.is_valid(arr), pc.is_null(out)),
        Reason.WRONG_TYPE,
        lambda: _describe_bad(column, arr, "a finite number"),
    )
    return out


def to_bool(arr: pa.Array, column: str, rejects: Rejects) -> pa.Array:
    """0/1/true/false (any case, also t/f and 0.0/1.0) to bool; empty stays null."""
    t = arr.type
    if pa.types.is_boolean(t):
        return arr
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        is_true, is_false = pc.equal(arr, 1), pc.equal(arr, 0)
    elif is_text(t):
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
    rejects.flag(
        pc.and_(pc.is_valid(arr), pc.is_null(out)),
        Reason.UNKNOWN_ENUM_VALUE,
        lambda: _describe_bad(column, arr, "a flag (0/1/true/false)"),
    )
    return out


def to_id(arr: pa.Array, column: str, rejects: Rejects) -> pa.Array:
    """An id as text (kept exactly as written); missing, empty or only-blank ids are rejected."""
    out = as_text(arr)
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(out)), 0)
    rejects.flag(pc.or_kleene(pc.is_null(out), blank), Reason.MISSING_REQUIRED_FIELD, f"column {column!r} is empty")
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
    elif is_text(t):
        ints, floats = _text_to_numbers(pc.cast(arr, _STR))
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


def _naive_to_utc_us(naive_us: pa.Array, zone: str, column: str, rejects: Rejects) -> pa.Array:
    """Naive wall-clock times (timestamp[us]) in ``zone`` to UTC epoch microseconds.

    Ambiguous times (the repeated hour when clocks go back) take the earlier instant; times
    that do not exist (the skipped hour when clocks go forward) are rejected.
    """
    if zone in ("UTC", "Etc/UTC"):
        return pc.cast(naive_us, pa.int64())
    aware = pc.assume_timezone(naive_us, zone, ambiguous="earliest", nonexistent="earliest")
    back = pc.local_timestamp(aware)
    gap = pc.not_equal(pc.cast(back, pa.int64()), pc.cast(naive_us, pa.int64()))
    rejects.flag(gap, Reason.WRONG_TYPE, lambda: pc.binary_join_element_wise(
        f"column {column!r}: local time '", pc.cast(naive_us, _STR), f"' does not exist in {zone} (clock change)", ""
    ))
    out = pc.cast(aware, pa.int64())
    return pc.if_else(pc.fill_null(gap, False), pa.scalar(None, pa.int64()), out)


def _iso_to_us(text: pa.Array, zone: str, column: str, rejects: Rejects) -> pa.Array:
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


def to_event_ts(arr: pa.Array, column: str, unit: str, zone: str, rejects: Rejects) -> pa.Array:
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
    elif unit == "iso" and is_text(t):
        us = _iso_to_us(pc.cast(arr, _STR), zone, column, rejects)
        what = f"an ISO-8601 time (time_zone {zone})"
    elif unit == "iso":
        us = pa.nulls(len(arr), pa.int64())
        what = "an ISO-8601 time"
    else:
        us = _epoch_to_us(arr, unit)
        what = f"epoch {unit}"
    rejects.flag(pc.is_null(arr), Reason.MISSING_REQUIRED_FIELD, f"column {column!r} is empty")
    rejects.flag(pc.and_(pc.is_valid(arr), pc.is_null(us)), Reason.WRONG_TYPE, lambda: _describe_bad(column, arr, what))
    outside = pc.or_(pc.less(us, MIN_EVENT_US), pc.greater_equal(us, MAX_EVENT_US))
    rejects.flag(
        outside,
        Reason.TIMESTAMP_OUT_OF_RANGE,
        lambda: pc.binary_join_element_wise(
            f"column {column!r}: '",
            pc.utf8_slice_codeunits(as_text(arr), 0, VALUE_PREVIEW_CHARS),
            f"' read as {what} is outside 1900..2200 UTC (wrong timestamp unit?)",
            "",
            null_handling="replace",
            null_replacement="",
        ),
    )
    us = pc.if_else(pc.fill_null(outside, False), pa.scalar(None, pa.int64()), us)
    return pc.cast(us, TS_TYPE)
