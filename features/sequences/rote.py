"""RoTE time features: the multi-level timestamps that RoTE rotates Q and K by.

Pure NumPy (and pyarrow for input conversion): no Spark, no I/O. Everything is UTC.
The spec is ``shared/specs/sequences.md`` sections 1.2, 1.3 and 5; ``docs/sequences.md``
("RoTE time features") is the newcomer's page.

Two forms, as in the official code (XiaoLongtaoo/RoTE @ 11ea986)
-----------------------------------------------------------------
* **SASRec form** (:func:`sasrec_levels`, ``decompose_unix_timestamp``): continuous float
  values since the Unix epoch, nothing subtracted::

      days_f = ts / 86400;  months_f = days_f / 30.4375;  years_f = days_f / 365.25

* **RPG form** (:func:`calendar_ids`, ``tokenizer._time_ids_to_ymd_ids``): exact UTC calendar
  integer ids::

      year_id = Y - 1970;  month_id = (Y - 1970) * 12 + (M - 1);  day_id = floor(ts / 86400)

  Beyond the paper, finer levels ``hour_id = floor(ts / 3600)``, ``minute_id = floor(ts / 60)``
  and ``second_id = ts`` (all "since the epoch") can be asked for.
* **Relative variant** (:func:`relative_to_first`): inside attention RPG uses ``x - x[:, :1]``,
  each level minus its value at the first position of the window. Here "first" means the first
  *real* (unpadded) position of each row, so left-padded rows work too.
* **Gap features** (:func:`gap_features`, beyond the paper): seconds since the previous real
  history event and seconds from each history event to the target.

The RoTE query time is the time of the last *input* item (:func:`query_ts`); the official code
never uses the target's time. Target columns are offered for other models and for analysis.

Padding
-------
Padded positions give 0 in every output column. Without a ``mask`` a position is a pad when
``ts <= 0`` (the official rule), so a real event at exactly 1970-01-01T00:00:00Z is
indistinguishable from a pad; pass ``mask`` (True = real) to keep such an event. Even then its
absolute ids and levels are all 0, like a pad's, so keep the mask next to the features.

Pre-1970 timestamps: rejected
-----------------------------
A real (unmasked) timestamp < 0 raises :class:`ValueError` naming the first offending value and
its position. The official pad rule would silently turn such an event into padding, and its ids
would be negative, which no source we ingest produces (Amazon 2014, KuaiRand, MovieLens are all
post-1970); failing loudly is better than a silent pad. Values at masked-out positions are never
inspected.

Units of every column are in :data:`ROTE_COLUMNS`. Timestamps enter as int64 seconds since the
epoch (:func:`to_epoch_seconds` converts pyarrow ``timestamp[us, UTC]`` and numpy
``datetime64`` arrays, flooring sub-second parts; :mod:`features.sequences.rote_inputs`, whose
names are re-exported here). :data:`CALENDAR_LEVELS` is the one list of calendar levels (the
settings' ``sequences.rote_levels`` is checked against it).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.sequences.rote_inputs import _seconds_and_mask, to_epoch_seconds


SECONDS_PER_DAY = 86_400
#: The SASRec form's mean month and year lengths, in days (official ``decompose_unix_timestamp``).
DAYS_PER_MONTH = 30.4375
DAYS_PER_YEAR = 365.25

#: The coarse-to-fine calendar levels, coarsest first; the paper uses the first three.
CALENDAR_LEVELS = ("year", "month", "day", "hour", "minute", "second")
PAPER_LEVELS = ("year", "month", "day")
#: The SASRec-form float levels (output key ``<level>s_f``).
SASREC_LEVELS = ("day", "month", "year")

_LEVEL_UNITS = {
    "year": "UTC calendar years since 1970 (Y - 1970)",
    "month": "UTC calendar months since 1970-01 ((Y - 1970) * 12 + M - 1)",
    "day": "UTC days since 1970-01-01 (floor(ts / 86400))",
    "hour": "hours since the epoch (floor(ts / 3600))",
    "minute": "minutes since the epoch (floor(ts / 60))",
    "second": "seconds since the epoch (ts)",
}
_SASREC_UNITS = {
    "days_f": "float days since the epoch (ts / 86400)",
    "months_f": "float 30.4375-day months since the epoch (days_f / 30.4375)",
    "years_f": "float 365.25-day years since the epoch (days_f / 365.25)",
}


def _columns() -> dict[str, str]:
    cols: dict[str, str] = {}
    for side in ("hist", "target"):
        where = "per history position" if side == "hist" else "of the target"
        cols[f"{side}_ts_s"] = f"int64 seconds since the epoch, {where}"
        for name, unit in _SASREC_UNITS.items():
            cols[f"{side}_{name}"] = f"{unit}, {where}; SASRec form"
        for level in CALENDAR_LEVELS:
            form = "RPG form" if level in PAPER_LEVELS else "finer level, beyond the paper"
            cols[f"{side}_{level}_id"] = f"int64 {_LEVEL_UNITS[level]}, {where}; {form}"
            cols[f"{side}_{level}_id_rel"] = (
                f"int64 {level}_id minus the row's first real history position's {level}_id "
                f"({level}s since the window's first event), {where}; relative variant"
            )
    cols["query_ts_s"] = "int64 seconds since the epoch of the last real history event (RoTE's query time)"
    cols["gap_prev_s"] = "int64 seconds since the previous real history event; 0 for the first"
    cols["gap_to_target_s"] = "int64 seconds from the history event to the target (target_ts - ts)"
    return cols


#: Every output column name -> its dtype and unit. Pads are 0 in every column.
ROTE_COLUMNS: dict[str, str] = _columns()


# --------------------------------------------------------------------------- levels


def sasrec_levels(ts_s, mask=None) -> dict[str, np.ndarray]:
    """The SASRec form: float64 ``days_f``, ``months_f``, ``years_f`` since the epoch.

    ``days_f = ts / 86400``, ``months_f = days_f / 30.4375``, ``years_f = days_f / 365.25``,
    elementwise on an array of any shape; pads (``ts <= 0`` or ``mask`` False) give 0.
    """
    ts, real = _seconds_and_mask(ts_s, mask)
    days = np.where(real, ts / SECONDS_PER_DAY, 0.0)
    return {"days_f": days, "months_f": days / DAYS_PER_MONTH, "years_f": days / DAYS_PER_YEAR}


def calendar_ids(ts_s, levels: Iterable[str] = PAPER_LEVELS, mask=None) -> dict[str, np.ndarray]:
    """The RPG form: exact UTC calendar ids (int64), keyed ``"<level>_id"``.

    ``year_id = Y - 1970``, ``month_id = (Y - 1970) * 12 + M - 1``, ``day_id = floor(ts / 86400)``;
    finer, on request: ``hour_id``, ``minute_id``, ``second_id`` (hours, minutes, seconds since
    the epoch). Proleptic Gregorian, no leap seconds (as POSIX time and Python's ``datetime``).
    Pads (``ts <= 0`` or ``mask`` False) give 0.
    """
    levels = tuple(levels)
    unknown = [lv for lv in levels if lv not in CALENDAR_LEVELS]
    if unknown:
        raise ValueError(f"unknown RoTE level(s) {unknown}; choose from {CALENDAR_LEVELS}")
    ts, real = _seconds_and_mask(ts_s, mask)
    safe = np.where(real, ts, 0)  # masked-out values are never interpreted
    out: dict[str, np.ndarray] = {}
    for level in levels:
        if level == "year":
            ids = safe.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64)
        elif level == "month":
            ids = safe.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
        else:
            step = {"day": SECONDS_PER_DAY, "hour": 3_600, "minute": 60, "second": 1}[level]
            ids = np.floor_divide(safe, step)
        out[f"{level}_id"] = np.where(real, ids, 0).astype(np.int64)
    return out


# --------------------------------------------------------------------------- per-row variants


def _as_rows(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    x, mask = np.asarray(x), np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be boolean (True = real position), got {mask.dtype}")
    if x.shape != mask.shape:
        raise ValueError(f"values shape {x.shape} != mask shape {mask.shape}")
    if x.ndim == 1:
        return x[None, :], mask[None, :], True
    if x.ndim != 2:
        raise ValueError(f"expected [rows, positions] (or one row), got shape {x.shape}")
    return x, mask, False


def first_real(x, mask) -> np.ndarray:
    """Per row, ``x`` at the first real position (0 for a row with no real position)."""
    x2, m2, _ = _as_rows(x, mask)
    first = np.argmax(m2, axis=1)
    vals = x2[np.arange(x2.shape[0]), first]
    return np.where(m2.any(axis=1), vals, np.zeros((), x2.dtype))


def relative_to_first(x, mask) -> np.ndarray:
    """``x - x[first real position]`` per row of a [rows, positions] array; pads stay 0.

    The RPG form's ``x - x[:, :1]``, with "first" meaning the first *real* position so that
    left-padded (SASRec-style) rows work. A 1-D array is treated as one row. Dtype is kept.
    """
    x2, m2, one = _as_rows(x, mask)
    out = np.where(m2, x2 - first_real(x2, m2)[:, None], np.zeros((), x2.dtype))
    return out[0] if one else out


def query_ts(history_ts, mask=None) -> np.ndarray:
    """RoTE's query time: per row, the seconds of the last real history event (0 if none)."""
    ts, real = _seconds_and_mask(history_ts, mask)
    t2, m2, _ = _as_rows(ts, real)
    last = t2.shape[1] - 1 - np.argmax(m2[:, ::-1], axis=1)
    return np.where(m2.any(axis=1), t2[np.arange(t2.shape[0]), last], 0)


def gap_features(history_ts, target_ts=None, mask=None) -> dict[str, np.ndarray]:
    """Gap features (int64 seconds) of [rows, positions] history timestamps.

    * ``gap_prev_s``: ts minus the previous *real* position's ts in the row; 0 for the first
      real position and for pads.
    * ``gap_to_target_s`` (when ``target_ts``, shape [rows], is given): ``target_ts - ts`` at
      real positions; 0 at pads, and 0 in a row whose target is a pad (``target_ts <= 0``).

    Histories are expected in time order (the ``events`` order), so gaps are >= 0; an unsorted
    row gives negative gaps rather than an error. A 1-D history is one row (scalar target).
    """
    ts, real = _seconds_and_mask(history_ts, mask)
    t2, m2, one = _as_rows(ts, real)
    n_rows, n_pos = t2.shape
    rows = np.arange(n_rows)[:, None]
    last_real = np.maximum.accumulate(np.where(m2, np.arange(n_pos)[None, :], -1), axis=1)
    prev = np.concatenate([np.full((n_rows, 1), -1), last_real[:, :-1]], axis=1)
    has_prev = m2 & (prev >= 0)
    gap_prev = np.where(has_prev, t2 - t2[rows, np.maximum(prev, 0)], 0).astype(np.int64)
    out = {"gap_prev_s": gap_prev[0] if one else gap_prev}
    if target_ts is not None:
        tgt = np.atleast_1d(np.asarray(target_ts))
        tgt, tgt_real = _seconds_and_mask(tgt, None)
        if tgt.shape != (n_rows,):
            raise ValueError(f"target_ts shape {tgt.shape} != ({n_rows},)")
        gap_t = np.where(m2 & tgt_real[:, None], tgt[:, None] - t2, 0).astype(np.int64)
        out["gap_to_target_s"] = gap_t[0] if one else gap_t
    return out


# --------------------------------------------------------------------------- everything at once


def rote_features(
    history_ts,
    target_ts=None,
    mask=None,
    levels: Iterable[str] = PAPER_LEVELS,
    relative: bool = True,
    gaps: bool = True,
) -> dict[str, np.ndarray]:
    """All RoTE columns for [rows, positions] history seconds and [rows] target seconds.

    Returns a subset of :data:`ROTE_COLUMNS`: ``hist_ts_s``, ``hist_{days,months,years}_f``,
    ``hist_<level>_id`` (and ``_rel`` when ``relative``), ``query_ts_s``, the gap columns
    when ``gaps``, and the same ``target_*`` columns when ``target_ts`` is given (the target's
    ``_rel`` ids are relative to the row's first real *history* position). Pads are 0.
    The target is a pad when ``target_ts <= 0``. A 1-D history is one row: its columns come
    back 1-D and the per-row ones (``query_ts_s``, ``target_*``) as 0-d values.
    """
    levels = tuple(levels)
    ts, real = _seconds_and_mask(history_ts, mask)
    t2, m2, one = _as_rows(ts, real)
    out: dict[str, np.ndarray] = {"hist_ts_s": np.where(m2, t2, 0)}
    hist_ids = calendar_ids(t2, levels, mask=m2)
    for name, vals in sasrec_levels(t2, mask=m2).items():
        out[f"hist_{name}"] = vals
    for name, vals in hist_ids.items():
        out[f"hist_{name}"] = vals
        if relative:
            out[f"hist_{name}_rel"] = relative_to_first(vals, m2)
    out["query_ts_s"] = query_ts(t2, m2)
    if target_ts is not None:
        tgt, tgt_real = _seconds_and_mask(np.atleast_1d(np.asarray(target_ts)), None)
        if tgt.shape != (t2.shape[0],):
            raise ValueError(f"target_ts shape {tgt.shape} != ({t2.shape[0]},)")
        out["target_ts_s"] = np.where(tgt_real, tgt, 0)
        for name, vals in sasrec_levels(tgt, mask=tgt_real).items():
            out[f"target_{name}"] = vals
        for name, vals in calendar_ids(tgt, levels, mask=tgt_real).items():
            out[f"target_{name}"] = vals
            if relative:
                base = first_real(hist_ids[name], m2)
                has_hist = m2.any(axis=1)
                out[f"target_{name}_rel"] = np.where(tgt_real & has_hist, vals - base, 0).astype(np.int64)
    if gaps:
        out.update(gap_features(t2, tgt if target_ts is not None else None, m2))
    if one:
        out = {k: v[0] for k, v in out.items()}
    missing = [k for k in out if k not in ROTE_COLUMNS]
    assert not missing, f"undocumented RoTE columns {missing}"
    return out


def column_units(columns: Mapping[str, object] | Iterable[str]) -> dict[str, str]:
    """The documented unit of each named column (KeyError for an undocumented one)."""
    return {name: ROTE_COLUMNS[name] for name in columns}


def rote_table_schema(levels: Iterable[str] = PAPER_LEVELS) -> pa.Schema:
    """Arrow schema of :func:`rote_batch`'s output: the contract's columns plus the level ids."""
    extra = []
    for level in levels:
        extra += [
            pa.field(f"hist_{level}_id", pa.list_(pa.int64())),
            pa.field(f"hist_{level}_id_rel", pa.list_(pa.int64())),
            pa.field(f"target_{level}_id", pa.int64()),
            pa.field(f"target_{level}_id_rel", pa.int64()),
        ]
    from features.sequences.contracts import ROTE_FEATURES

    return pa.schema(list(ROTE_FEATURES.schema) + extra)


def rote_batch(batch: pa.RecordBatch | pa.Table, levels: Iterable[str] = PAPER_LEVELS) -> pa.Table:
    """``user_sequences`` rows -> ``rote_features`` rows (see :func:`rote_table_schema`).

    Needs ``event_id``, ``user_id``, ``hist_ts`` (list of UTC timestamps, oldest first),
    ``target_ts`` and ``target_date``. Histories are right-padded into one matrix, passed
    through :func:`rote_features` with an explicit mask, and cut back to lists of ``hist_len``.
    """
    levels = tuple(levels)
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    hist = table.column("hist_ts").combine_chunks()
    if hist.null_count:
        hist = hist.fill_null(pa.scalar([], hist.type))
    n = len(hist)
    lengths = pc.list_value_length(hist).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    width = int(lengths.max()) if n else 0
    rows = np.repeat(np.arange(n), lengths)
    pos = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)
    flat = to_epoch_seconds(pc.list_flatten(hist))
    ts = np.zeros((n, max(width, 1)), dtype=np.int64)
    mask = np.zeros_like(ts, dtype=bool)
    ts[rows, pos] = flat
    mask[rows, pos] = True
    target = to_epoch_seconds(table.column("target_ts"))
    feats = rote_features(ts, target, mask=mask, levels=levels, relative=True, gaps=True)
    off = pa.array(offsets.astype(np.int32), pa.int32())

    def as_list(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(off, pa.array(values[rows, pos], typ))

    schema = rote_table_schema(levels)
    cols = {
        "event_id": table.column("event_id"),
        "user_id": table.column("user_id"),
        "hist_len": pa.array(lengths.astype(np.int32), pa.int32()),
        "target_date": table.column("target_date"),
    }
    for field in schema:
        if field.name in cols:
            continue
        values = feats[field.name]
        if pa.types.is_list(field.type):
            cols[field.name] = as_list(values, field.type.value_type)
        else:
            cols[field.name] = pa.array(values, field.type)
    return pa.table([cols[f.name] for f in schema], schema=schema)
