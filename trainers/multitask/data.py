"""The multi-task data set: every impression of ``events`` joined to ``items`` and ``users``, split by day.

One row per exposure (impression). Inputs are the watch-time models' pre-impression fields
(user and video ids, author, music, most frequent tag, video and upload type, the user profile
ranges; ``trainers.watch_time.data.DEFAULT_FIELDS`` read from ``events`` instead of
``watch_time_labels``); no feedback flag is an input. Labels, all on the exposure space:

- ``click``: ``is_click``;
- a task conditioned on the click (``long_view``, ``like``, ``follow``, ``comment``): the event
  *and* a click (``is_click ∧ is_like``...), the CTCVR label of ESMM, so that
  ``p(task) = p(click) · p(task | click)`` holds for the label. On the KuaiRand slice 99.6 % of
  long views, 82 % of likes, 86 % of follows and 97 % of comments follow a click; the others
  count as negatives (docs/training.md).

Encoders are fitted on the training days only (index 0: unseen or null), as every trainer's.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from features.events import EVENTS
from trainers.data import (
    EncodedSplit,
    FieldEncoder,
    FieldSpec,
    KUAIRAND_DIMENSIONS,
    kuairand_side_fields,
    load_dimension,
)
from trainers.tables import open_table

EVENTS_TABLE = EVENTS.name

#: Task name -> the ``events`` column of its flag. ``click`` is the exposure-level task every
#: other one is conditioned on (the exposure → click → conversion structure).
TASK_COLUMNS: dict[str, str] = {
    "click": "is_click",
    "long_view": "is_long_view",
    "like": "is_like",
    "follow": "is_follow",
    "comment": "is_comment",
}
CLICK = "click"

FIELDS: tuple[FieldSpec, ...] = kuairand_side_fields(EVENTS_TABLE)
DIMENSIONS = KUAIRAND_DIMENSIONS
#: Columns read from ``events`` besides the task flags (their types are the contract's).
BASE_COLUMNS: tuple[str, ...] = ("event_id", "user_id", "item_id", "event_date")


@dataclass
class MultiTaskData:
    tasks: tuple[str, ...]
    splits: dict[str, EncodedSplit]  # columns: "y" float32 [rows, tasks], exposure-space labels
    encoder: FieldEncoder
    windows: dict[str, tuple[dt.date, dt.date]]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_s: float = 0.0

    def positives(self) -> dict[str, dict[str, int]]:
        return {s: {t: int(d.columns["y"][:, k].sum()) for k, t in enumerate(self.tasks)} for s, d in self.splits.items()}


def exposure_labels(flags: dict[str, np.ndarray], tasks: tuple[str, ...]) -> np.ndarray:
    """[rows, tasks] float32: ``click``, and every other task's flag and the click (CTCVR)."""
    click = flags[CLICK].astype(bool)
    cols = [click if t == CLICK else (flags[t].astype(bool) & click) for t in tasks]
    return np.stack(cols, axis=1).astype(np.float32)


def load_multitask_data(
    root: str, split, tasks: tuple[str, ...], versions: dict[str, int] | None = None, batch_rows: int = 65_536
) -> MultiTaskData:
    """Read ``events`` (the three date windows), join ``items``/``users``, encode, label."""
    t0 = time.perf_counter()
    if tasks[0] != CLICK:
        raise ValueError(f"the first task must be {CLICK!r} (every other task is conditioned on it), got {tasks}")
    versions = versions or {}
    snap = open_table(root, EVENTS, versions.get(EVENTS_TABLE))
    columns = [*BASE_COLUMNS, *(TASK_COLUMNS[t] for t in tasks)]
    days = snap.days()
    if not days:
        raise ValueError(f"{EVENTS_TABLE} v{snap.version} has no rows")
    windows = split.windows(days[-1])
    parts = {name: snap.partitions_between(a, b) for name, (a, b) in windows.items()}
    for name, keys in parts.items():
        if not keys:
            a, b = windows[name]
            raise ValueError(f"the {name} split [{a}, {b}) has no {EVENTS_TABLE} partitions (data: {days[0]} .. {days[-1]})")

    dims, tables = {}, {}
    for name in sorted({f.table for f in FIELDS} - {EVENTS_TABLE}):
        dim = DIMENSIONS[name]
        try:
            frame, dsnap = load_dimension(root, dim, [f.column for f in FIELDS if f.table == name], versions.get(name))
        except FileNotFoundError:
            continue  # a source without this dimension: its fields are left out
        dims[name] = (dim, frame)
        tables[name] = dsnap.record()
    present = [f for f in FIELDS if f.table == EVENTS_TABLE or (f.table in dims and dims[f.table][1][f.column].notna().any())]
    encoder = FieldEncoder(present, EVENTS_TABLE, dims)

    def frames(name):
        for rb in snap.batches(columns, parts[name], batch_rows):
            df = rb.select(list(BASE_COLUMNS)).to_pandas()
            for t in tasks:
                df[t] = pc.fill_null(rb.column(TASK_COLUMNS[t]), False).to_numpy(zero_copy_only=False)
            yield df

    encoder.fit(lambda: frames("train"))
    splits = {}
    for name in ("train", "valid", "test"):
        xs, ys = [], []
        for df in frames(name):
            xs.append(encoder.encode(df))
            ys.append(exposure_labels({t: df[t].to_numpy() for t in tasks}, tasks))
        x = np.concatenate(xs) if xs else np.zeros((0, len(present)), np.int64)
        y = np.concatenate(ys) if ys else np.zeros((0, len(tasks)), np.float32)
        splits[name] = EncodedSplit(x, {"y": y})
    tables[EVENTS_TABLE] = snap.record(sorted(k for ks in parts.values() for k in ks))
    return MultiTaskData(tuple(tasks), splits, encoder, windows, tables, time.perf_counter() - t0)


def conditional_rates(data: MultiTaskData) -> pd.DataFrame:
    """Per split and task: rows, positives and the positive rate (exposure space)."""
    recs = []
    for s, d in data.splits.items():
        for k, t in enumerate(data.tasks):
            pos = int(d.columns["y"][:, k].sum())
            recs.append({"split": s, "task": t, "rows": len(d), "positives": pos, "rate": pos / max(len(d), 1)})
    return pd.DataFrame(recs)
