"""The watch-time dataset: ``watch_time_labels`` joined to ``items`` and ``users``, split by day.

Only categorical features known before the impression are inputs (user and video ids, author,
music, the most frequent tag, upload and video type, the user profile ranges). Duration is never
an input, nor is post-exposure feedback (like, follow, comment, ...).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from features.synthetic_truth import SYNTHETIC_TRUTH
from trainers.data import (
    EncodedSplit,
    FieldEncoder,
    FieldSpec,
    KUAIRAND_DIMENSIONS,
    kuairand_side_fields,
    load_dimension,
)
from trainers.tables import open_table

LABELS_TABLE = WATCH_TIME_LABELS.name
STATS_TABLE = DURATION_STATS.name
TRUTH_TABLE = SYNTHETIC_TRUTH.name

#: Pre-impression fields (D²Co/CWM's KuaiRand inputs minus feedback flags and ``tab``, which the
#: events table does not carry). A field whose column a source lacks is left out.
DEFAULT_FIELDS: tuple[FieldSpec, ...] = kuairand_side_fields(LABELS_TABLE)

DIMENSIONS = KUAIRAND_DIMENSIONS

#: Numeric and flag columns of ``watch_time_labels`` a split keeps (their types are the contract's).
NUMERIC = ["duration_s", "watch_time_s", "pcr", "wtg_gain", "wtg", "d2q_bin", "d2q", "d2co", "cwm_target"]
FLAGS = ["is_censored", "is_long_view_d2co", "is_long_view_cwm"]
#: Every column read from ``watch_time_labels``.
LABEL_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id", "event_date", *NUMERIC, "play_time_ms", *FLAGS)
#: Columns read from ``duration_stats``.
STATS_COLUMNS: tuple[str, ...] = (
    "duration_s", "rows", "wt_mean_s", "wt_std_s", "noise_wt_s", "interest_wt_s", "noise_wt_smoothed_s",
    "interest_wt_smoothed_s", "fit_start", "fit_end",
)


class LabelWindowError(ValueError):
    """duration_stats was fitted on days outside the training split (the labels would leak)."""


@dataclass
class WatchTimeData:
    splits: dict[str, EncodedSplit]
    groups: dict[str, np.ndarray]  # per split: the user of each row, as an int code (for GAUC, nDCG)
    event_ids: dict[str, np.ndarray]
    stats: pd.DataFrame  # duration_stats, indexed by duration_s
    encoder: FieldEncoder
    windows: dict[str, tuple[dt.date, dt.date]]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    loader_samples_per_s: float = 0.0
    interest: dict[str, np.ndarray] = field(default_factory=dict)  # synthetic planted interest, if any
    #: per split, with ``keep_raw``: the rows before encoding (:func:`load_watch_time_data`)
    raw: dict[str, pd.DataFrame] = field(default_factory=dict)


def _read_stats(root: str, version: int | None) -> tuple[pd.DataFrame, Any]:
    snap = open_table(root, DURATION_STATS, version)
    frames = [b.to_pandas() for b in snap.batches(STATS_COLUMNS)]
    df = pd.concat(frames, ignore_index=True).sort_values("duration_s").set_index("duration_s")
    return df, snap


def load_watch_time_data(
    root: str,
    split,
    fields: tuple[FieldSpec, ...] = DEFAULT_FIELDS,
    versions: dict[str, int] | None = None,
    check_label_window: bool = True,
    batch_rows: int = 65_536,
    keep_raw: bool = False,
) -> WatchTimeData:
    """Read, join, split and encode; fit the encoders on the training days only.

    ``keep_raw``: also keep, per split, the joined rows before encoding (``WatchTimeData.raw``):
    ``event_id``, one column per field holding its value as the encoder sees it (text, the
    attributes attached by :mod:`features.attributes`, the tag picked), and the label columns
    (``NUMERIC``, ``FLAGS``), row-aligned with ``splits``. A training set for the same rows
    gives the same values (tests/pipelines/test_training_set_kuairand.py)."""
    import time

    versions = versions or {}
    snap = open_table(root, WATCH_TIME_LABELS, versions.get(LABELS_TABLE))
    days = snap.days()
    if not days:
        raise ValueError(f"{LABELS_TABLE} v{snap.version} has no rows")
    windows = split.windows(days[-1])
    parts = {name: snap.partitions_between(a, b) for name, (a, b) in windows.items()}
    for name, keys in parts.items():
        if not keys:
            a, b = windows[name]
            raise ValueError(f"the {name} split [{a}, {b}) has no {LABELS_TABLE} partitions (data: {days[0]} .. {days[-1]})")

    stats, stats_snap = _read_stats(root, versions.get(STATS_TABLE))
    fit_start, fit_end = stats["fit_start"].iloc[0], stats["fit_end"].iloc[0]
    train0, train_end = windows["train"]
    if check_label_window and (fit_start < train0 or fit_end > train_end):
        raise LabelWindowError(
            f"{STATS_TABLE} v{stats_snap.version} was fitted on [{fit_start}, {fit_end}) but the training split is "
            f"[{train0}, {train_end}): labels fitted on validation or test days leak; refit the labels on the "
            "training window (labels settings) or change training.split"
        )

    dims, tables = {}, {}
    used_dims = {f.table for f in fields} - {LABELS_TABLE}
    for name in sorted(used_dims):
        dim = DIMENSIONS[name]
        frame, dsnap = load_dimension(root, dim, [f.column for f in fields if f.table == name], versions.get(name))
        dims[name] = (dim, frame)
        tables[name] = dsnap.record()
    present = [f for f in fields if f.table == LABELS_TABLE or dims[f.table][1][f.column].notna().any()]
    encoder = FieldEncoder(present, LABELS_TABLE, dims)

    def batches(name):
        for b in snap.batches(LABEL_COLUMNS, parts[name], batch_rows):
            yield b.to_pandas()

    encoder.fit(lambda: batches("train"))
    splits, groups, event_ids, raw = {}, {}, {}, {}
    t_read = 0.0
    n_read = 0
    user_codes: dict[str, int] = {}
    for name in ("train", "valid", "test"):
        xs, cols, users, ids, raws = [], {c: [] for c in NUMERIC + FLAGS}, [], [], []
        t0 = time.perf_counter()
        for df in batches(name):
            xs.append(encoder.encode(df))
            for c in NUMERIC:
                cols[c].append(df[c].to_numpy(dtype=np.float64 if c != "d2q_bin" else np.int64))
            for c in FLAGS:
                cols[c].append(df[c].to_numpy(dtype=bool))
            users.append(df["user_id"].map(lambda u: user_codes.setdefault(u, len(user_codes))).to_numpy(np.int64))
            ids.append(df["event_id"].to_numpy(dtype=object))
            if keep_raw:
                fields_raw = encoder.raw_fields(df)
                raws.append(pd.DataFrame({"event_id": df["event_id"].to_numpy(dtype=object),
                                          **{k: v.to_numpy(dtype=object) for k, v in fields_raw.items()},
                                          **{c: df[c].to_numpy() for c in NUMERIC + FLAGS}}))
        t_read += time.perf_counter() - t0
        x = np.concatenate(xs) if xs else np.zeros((0, len(present)), np.int64)
        n_read += len(x)
        splits[name] = EncodedSplit(x, {c: np.concatenate(v) for c, v in cols.items()})
        groups[name] = np.concatenate(users)
        event_ids[name] = np.concatenate(ids)
        if keep_raw:
            raw[name] = pd.concat(raws, ignore_index=True) if raws else pd.DataFrame()
    tables[LABELS_TABLE] = snap.record(sorted(k for ks in parts.values() for k in ks))
    tables[STATS_TABLE] = stats_snap.record()
    data = WatchTimeData(
        splits, groups, event_ids, stats, encoder, windows, tables, loader_samples_per_s=n_read / t_read if t_read else 0.0,
        raw=raw,
    )
    _attach_truth(root, data, versions.get(TRUTH_TABLE))
    return data


def _attach_truth(root: str, data: WatchTimeData, version: int | None) -> None:
    """Synthetic sources: the planted interest of each row (for nDCG against the truth)."""
    try:
        snap = open_table(root, SYNTHETIC_TRUTH, version)
    except FileNotFoundError:
        return
    frames = [b.to_pandas() for b in snap.batches(["event_id", "interest"])]
    truth = pd.concat(frames, ignore_index=True).set_index("event_id")["interest"]
    for name, ids in data.event_ids.items():
        data.interest[name] = truth.reindex(ids).to_numpy(dtype=np.float64)
    data.tables[TRUTH_TABLE] = snap.record()
