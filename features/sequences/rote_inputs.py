"""RoTE inputs: UTC timestamps to int64 seconds since the epoch, and the checks of a timestamp array.

A real (unmasked) timestamp before 1970 is refused (``features.sequences.rote``, "Pre-1970
timestamps"); without a mask a position is a pad when ``ts <= 0``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_epoch_seconds(values) -> np.ndarray:
    """UTC timestamps -> int64 seconds since the epoch (floor for sub-second parts).

    Accepts a numpy ``datetime64`` array (any unit; NaT -> 0, i.e. a pad), a pyarrow
    timestamp ``Array`` / ``ChunkedArray`` (any unit; nulls -> 0; the stored instant is UTC
    whatever the ``tz`` says, and a tz-naive column is read as UTC), or an integer array that
    already holds seconds (returned as int64).
    """
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        if not pa.types.is_timestamp(values.type):
            raise TypeError(f"expected a pyarrow timestamp array, got {values.type}")
        unit = values.type.unit
        ints = values.cast(pa.timestamp(unit)).cast(pa.int64()).fill_null(0)
        arr = ints.to_numpy() if isinstance(ints, pa.Array) else np.concatenate(
            [c.to_numpy(zero_copy_only=False) for c in ints.chunks] or [np.empty(0, np.int64)]
        )
        return _floor_to_seconds(np.asarray(arr, dtype=np.int64), unit)
    arr = np.asarray(values)
    if np.issubdtype(arr.dtype, np.datetime64):
        unit, _ = np.datetime_data(arr.dtype)
        nat = np.isnat(arr)
        out = _floor_to_seconds(arr.astype(np.int64), unit)
        out[nat] = 0
        return out
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    raise TypeError(f"expected datetime64, a pyarrow timestamp array or integer seconds, got {arr.dtype}")


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _floor_to_seconds(ticks: np.ndarray, unit: str) -> np.ndarray:
    if unit not in _PER_SECOND:
        # coarser numpy units (m, h, D, ...): go through datetime64[s]
        return np.asarray(ticks.astype(f"datetime64[{unit}]").astype("datetime64[s]").astype(np.int64))
    return np.floor_divide(ticks, _PER_SECOND[unit]).astype(np.int64)


def _seconds_and_mask(ts_s, mask) -> tuple[np.ndarray, np.ndarray]:
    """Validate: int64 seconds, the real-position mask, no real pre-1970 value."""
    ts = np.asarray(ts_s)
    if not np.issubdtype(ts.dtype, np.integer):
        raise TypeError(f"timestamps must be integer seconds since the epoch, got {ts.dtype} "
                        "(use to_epoch_seconds for datetime64 / pyarrow timestamps)")
    ts = ts.astype(np.int64)
    if mask is None:
        negative = ts < 0
        real = ts > 0
    else:
        real = np.asarray(mask)
        if real.dtype != np.bool_:
            raise TypeError(f"mask must be boolean (True = real position), got {real.dtype}")
        if real.shape != ts.shape:
            raise ValueError(f"mask shape {real.shape} != timestamp shape {ts.shape}")
        negative = real & (ts < 0)
    if negative.any():
        pos = tuple(int(i) for i in np.argwhere(negative)[0])
        raise ValueError(
            f"pre-1970 timestamp {int(ts[pos])} s at position {pos if len(pos) != 1 else pos[0]}: "
            "RoTE features reject real events before 1970-01-01T00:00:00Z "
            "(the official pad rule ts <= 0 would silently turn them into padding)"
        )
    return ts, real
