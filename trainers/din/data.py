"""DIN's data: every impression of ``events`` with its point-in-time history, encoded."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.dimensions import ITEMS
from features.events import EVENTS
from trainers.data import Dimension, FieldEncoder, FieldSpec, load_dimension
from trainers.din.config import EVENTS_TABLE, ITEM_FIELDS, ITEMS_TABLE, DINConfig
from trainers.tables import open_table

#: Columns read from ``events`` (their types are the contract's).
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id", "user_id", "item_id", "event_ts", "event_date", "is_click", "source_file", "source_line",
)


def history_windows(
    pool_users: np.ndarray, pool_ts: np.ndarray, users: np.ndarray, ts: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[start, end)`` into the pool of each query's point-in-time history.

    The pool (behaviour events) must be sorted by (user code, timestamp). For query ``q`` the
    window holds the pool rows of user ``users[q]`` with timestamp ``< ts[q]`` (strictly), the
    last ``max_len`` of them. Timestamps are ranked densely so that (user, rank) packs into one
    sortable int64 key; a binary search then finds the first pool row at or after the query.
    """
    pool_users = np.asarray(pool_users, np.int64)
    users = np.asarray(users, np.int64)
    if len(pool_users) == 0:
        z = np.zeros(len(users), np.int64)
        return z, z.copy()
    _, ranks = np.unique(np.concatenate([np.asarray(pool_ts, np.int64), np.asarray(ts, np.int64)]), return_inverse=True)
    width = np.int64(ranks.max() + 2)
    pool_key = pool_users * width + ranks[: len(pool_users)]
    if np.any(np.diff(pool_key) < 0):
        raise ValueError("the history pool must be sorted by user, then time")
    query_key = users * width + ranks[len(pool_users):]
    end = np.searchsorted(pool_key, query_key, side="left")
    first = np.searchsorted(pool_key, users * width, side="left")
    start = np.maximum(first, end - max_len)
    return start.astype(np.int64), end.astype(np.int64)


@dataclass
class Impressions:
    """One split: per impression its target codes, label, user, time and history window."""

    target: np.ndarray  # int64 [n, fields]
    label: np.ndarray  # float32 [n]
    users: np.ndarray  # int64 [n] user codes (shared by every split)
    ts_us: np.ndarray  # int64 [n], microseconds since the epoch (UTC)
    hist_start: np.ndarray  # int64 [n], into DINData.pool_*
    hist_end: np.ndarray  # int64 [n]
    event_ids: np.ndarray  # object [n]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def hist_len(self) -> np.ndarray:
        return self.hist_end - self.hist_start


@dataclass
class DINData:
    pool_x: np.ndarray  # int64 [pool, fields]: encoded behaviours, sorted by user then time
    pool_ts_us: np.ndarray  # int64 [pool]
    pool_users: np.ndarray  # int64 [pool]
    splits: dict[str, Impressions]
    encoder: FieldEncoder
    windows: dict[str, tuple[dt.date, dt.date]]
    user_ids: np.ndarray  # object: user code -> user_id
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    read_s: float = 0.0

    @property
    def fields(self) -> list[str]:
        return [f.name for f in self.encoder.fields]


def history_arrays(data: DINData, split: Impressions, rows: np.ndarray, width: int | None = None):
    """Left-padded histories of ``rows``: (codes ``[n, L, fields]``, mask ``[n, L]``, timestamps ``[n, L]``).

    ``width`` defaults to the longest history among the rows (at least 1); pads hold code 0 and
    time 0 and are False in the mask.
    """
    start, end = split.hist_start[rows], split.hist_end[rows]
    if width is None:
        width = max(int((end - start).max()) if len(rows) else 0, 1)
    idx = end[:, None] - width + np.arange(width)[None, :]
    mask = idx >= start[:, None]
    safe = np.where(mask, idx, 0)
    if len(data.pool_x) == 0:
        codes = np.zeros((len(rows), width, data.pool_x.shape[1]), np.int64)
        ts = np.zeros((len(rows), width), np.int64)
    else:
        codes = np.where(mask[..., None], data.pool_x[safe], 0)
        ts = np.where(mask, data.pool_ts_us[safe], 0)
    return codes, mask, ts


def _ts_micros(column: pa.Array) -> np.ndarray:
    return pc.cast(column, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)


def load_din_data(cfg: DINConfig, batch_rows: int = 65_536) -> DINData:
    """Read ``events`` (and ``items``), build every impression's point-in-time history, encode."""
    t0 = time.perf_counter()
    versions = cfg.table_versions
    root = cfg.warehouse
    snap = open_table(root, EVENTS, versions.get(EVENTS_TABLE))
    days = snap.days()
    if not days:
        raise ValueError(f"{EVENTS_TABLE} v{snap.version} has no rows")
    windows = cfg.split.windows(days[-1])
    for name, (a, b) in windows.items():
        if not snap.partitions_between(a, b):
            raise ValueError(f"the {name} split [{a}, {b}) has no {EVENTS_TABLE} partitions (data: {days[0]} .. {days[-1]})")
    end = windows["test"][1]
    first = dt.date.min if cfg.history_days is None else windows["train"][0] - dt.timedelta(days=cfg.history_days)
    parts = snap.partitions_between(first, end)
    cols: dict[str, list[np.ndarray]] = {c: [] for c in ("event_id", "user_id", "item_id", "source_file", "source_line",
                                                        "ts", "day", "has_label", "clicked")}
    for rb in snap.batches(EVENT_COLUMNS, parts, batch_rows):  # per batch: files may differ in string types
        for c in ("event_id", "user_id", "item_id", "source_file"):
            cols[c].append(rb.column(c).to_numpy(zero_copy_only=False).astype(object))
        cols["source_line"].append(rb.column("source_line").to_numpy(zero_copy_only=False))
        cols["ts"].append(_ts_micros(rb.column("event_ts")))
        cols["day"].append(rb.column("event_date").to_numpy(zero_copy_only=False).astype("datetime64[D]"))
        click = rb.column("is_click")
        cols["has_label"].append(click.is_valid().to_numpy(zero_copy_only=False))
        cols["clicked"].append(pc.fill_null(click, False).to_numpy(zero_copy_only=False).astype(bool))
    if not cols["ts"] or not sum(len(t) for t in cols["ts"]):
        raise ValueError(f"{EVENTS_TABLE} v{snap.version} has no rows before {end}")
    ev = {c: np.concatenate(v) for c, v in cols.items()}

    # the total order within a user (docs/sequences.md): time, then source order, then event_id
    user_ids, user_code = np.unique(ev["user_id"], return_inverse=True)
    order = np.lexsort((ev["event_id"].astype(str), ev["source_line"], ev["source_file"].astype(str), ev["ts"], user_code))
    ev = {c: v[order] for c, v in ev.items()}
    user_code, ts = user_code[order].astype(np.int64), ev["ts"]
    has_label, clicked, day = ev["has_label"], ev["clicked"], ev["day"]
    if not has_label.any():
        raise ValueError(f"{EVENTS_TABLE} v{snap.version} has no is_click values: DIN needs a click label")

    # encoders: the item id and its side fields, fitted on the training days' impressions
    tables: dict[str, dict[str, Any]] = {}
    dims = {}
    specs = [FieldSpec("item_id", EVENTS_TABLE, "item_id")]
    if cfg.item_fields:
        dim = Dimension(ITEMS, "item_id", "item_id")
        wanted = [ITEM_FIELDS[f] for f in cfg.item_fields]
        try:
            frame, isnap = load_dimension(root, dim, [f.column for f in wanted], versions.get(ITEMS_TABLE))
        except FileNotFoundError:
            raise ValueError(
                f"item_fields {list(cfg.item_fields)} need the {ITEMS_TABLE} table, which {root} lacks; "
                "set item_fields: [] for item ids only"
            ) from None
        dims[ITEMS_TABLE] = (dim, frame)
        tables[ITEMS_TABLE] = isnap.record()
        specs += [f for f in wanted if frame[f.column].notna().any()]  # a column the source lacks is left out
    encoder = FieldEncoder(specs, EVENTS_TABLE, dims)
    frame = pd.DataFrame({"item_id": ev["item_id"]})
    a, b = windows["train"]
    in_train = has_label & (day >= np.datetime64(a)) & (day < np.datetime64(b))
    encoder.fit(lambda: iter([frame[in_train].reset_index(drop=True)]))
    x = encoder.encode(frame)

    pool = clicked if cfg.history == "clicks" else np.ones(len(ts), bool)
    pool_users, pool_ts, pool_x = user_code[pool], ts[pool], x[pool]
    event_ids = ev["event_id"]
    splits = {}
    for name, (a, b) in windows.items():
        rows = np.flatnonzero(has_label & (day >= np.datetime64(a)) & (day < np.datetime64(b)))
        if len(rows) == 0:
            raise ValueError(f"the {name} split [{a}, {b}) has no {EVENTS_TABLE} rows with is_click")
        start, stop = history_windows(pool_users, pool_ts, user_code[rows], ts[rows], cfg.max_len)
        splits[name] = Impressions(
            target=x[rows], label=clicked[rows].astype(np.float32), users=user_code[rows], ts_us=ts[rows],
            hist_start=start, hist_end=stop, event_ids=event_ids[rows],
        )
    tables[EVENTS_TABLE] = snap.record(parts)
    return DINData(pool_x, pool_ts, pool_users, splits, encoder, windows, user_ids, tables, time.perf_counter() - t0)
