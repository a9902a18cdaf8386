"""Arrow column helpers of the local engines (features/recall/local.py, features/lookalike/vectors_local.py).

One place for what they share with the Spark kernels' semantics: dense codes of string ids in
the order Spark sorts strings (their UTF-8 bytes), and microseconds of UTC timestamps.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def encode(column) -> tuple[np.ndarray, pa.Array]:
    """``(codes, values)``: dense int64 codes of a string column whose order is the values'
    byte order (Spark's string order), and the distinct values in that order."""
    strings = pc.cast(column, pa.string())
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    enc = pc.dictionary_encode(strings)
    values = enc.dictionary
    order = pc.array_sort_indices(values).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank[enc.indices.to_numpy(zero_copy_only=False)], values.take(pa.array(order))


def micros(ts) -> np.ndarray:
    """Microseconds since the epoch (int64) of a UTC timestamp column."""
    return pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False)


def _java_double(x: float, shortest) -> str:
    """``x`` as Java's ``Double.toString`` writes it, from the shortest
    repr ``shortest(x)``: decimal notation for ``1e-3 <= |x| < 1e7`` (and 0) with at least one
    digit after the point, else ``d.dddE±n``; ``NaN``, ``Infinity``, ``-Infinity``."""
    import math
    from decimal import Decimal

    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    sign, digits, exp = Decimal(shortest(x)).as_tuple()
    point = len(digits) + exp  # the value is 0.<digits> × 10^point
    digits = "".join(map(str, digits)).rstrip("0") or "0"
    lead = "-" if sign else ""
    if x == 0 or 1e-3 <= abs(x) < 1e7:
        if point <= 0:
            return f"{lead}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return f"{lead}{digits}{'0' * (point - len(digits))}.0"
        return f"{lead}{digits[:point]}.{digits[point:]}"
    return f"{lead}{digits[0]}.{digits[1:] or '0'}E{point - 1}"


def spark_strings(column) -> pa.Array:
    """A column cast to strings as Spark's ``cast(... as string)`` writes them: doubles as Java's
    ``Double.toString`` (``1.0``, ``1.0E7``, where Arrow writes ``1`` and ``1e+07``; from the
    shortest repr, which a JVM before 19 does not always print: Java 17 writes the smallest
    subnormal 5e-324 as ``4.9E-324``), every other
    supported type as Arrow's cast (strings, integers, booleans and dates print the same on
    both). Raises ``TypeError`` for the types whose text differs (float32, whose JVM text is not
    its shortest repr, timestamps, decimals, nested)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = col.type
    if pa.types.is_float64(t):
        enc = pc.dictionary_encode(col)
        text = pa.array([_java_double(v, repr) for v in enc.dictionary.to_pylist()], pa.string())
        return text.take(enc.indices)
    if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
            or pa.types.is_boolean(t) or pa.types.is_date32(t)):
        return pc.cast(col, pa.string())
    raise TypeError(f"values of type {t} are not written as Spark writes them")
