"""RAR's data: DIN's impressions (``trainers.din.load_din_data``) plus each example's look-alike
users and recall pool from the builds valid at its time (:mod:`trainers.rar.selection`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.lookalike import LOOKALIKE_USERS
from features.recall import RECALL_ITEMS
from trainers.din.config import DINConfig
from trainers.din.data import DINData, Impressions, load_din_data
from trainers.rar.config import LOOKALIKE_TABLE, RECALL_TABLE, RARConfig
from trainers.tables import snapshot
from trainers.rar.selection import (
    Build,
    Reader,
    choose_builds,
    list_builds,
    read_lookalikes,
    read_pools,
    table_reader,
)


@dataclass
class Sets:
    """One split's RAR inputs, per example (codes 0 are pads or values unknown to the encoders)."""

    user: np.ndarray  # int64 [n]: the RAR user code of the example's user (0: no training impression)
    lookalikes: np.ndarray  # int64 [n, k_users]: RAR user codes of the look-alike users
    pool: np.ndarray  # int64 [n, pool_size]: rows of RARData.item_codes (0: pad)
    lookalike_build: np.ndarray  # int64 [n]: the version read, -1 none
    recall_build: np.ndarray  # int64 [n]: the version read, -1 none


@dataclass
class RARData:
    din: DINData
    sets: dict[str, Sets]
    item_codes: np.ndarray  # int64 [items + 1, fields]: encoded item fields per pool item (row 0: pad)
    user_ids: np.ndarray  # object: RAR user code - 1 -> user_id (the users with a training impression)
    builds: dict[str, list[Build]]
    selection_stats: dict[str, Any]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    read_s: float = 0.0

    @property
    def splits(self) -> dict[str, Impressions]:
        return self.din.splits

    @property
    def fields(self) -> list[str]:
        return self.din.fields

    @property
    def n_users(self) -> int:
        return len(self.user_ids) + 1


def din_config(cfg: RARConfig) -> DINConfig:
    """The DIN data settings of a RAR config (DIN's loader is reused for both backbones)."""
    return DINConfig(
        warehouse=cfg.warehouse, runs_root=cfg.runs_root, seed=cfg.seed, split=cfg.split, table_versions=cfg.table_versions,
        threads=cfg.threads, progress=cfg.progress, max_len=cfg.max_len, history="clicks", history_days=cfg.history_days,
        item_fields=cfg.item_fields, embed_dim=cfg.embed_dim,
    )


def _codes(ids: np.ndarray, vocab: np.ndarray) -> np.ndarray:
    """1-based positions of ``ids`` in the sorted ``vocab`` (0: absent or ``""``)."""
    flat = ids.reshape(-1).astype(str)
    pos = np.searchsorted(vocab, flat)
    pos_c = np.minimum(pos, max(len(vocab) - 1, 0))
    hit = (pos < len(vocab)) & (vocab[pos_c] == flat) if len(vocab) else np.zeros(len(flat), bool)
    return np.where(hit, pos_c + 1, 0).astype(np.int64).reshape(ids.shape)


def _cached(reader: Reader) -> Reader:
    memo: dict = {}

    def read(contract, version, columns):
        key = (contract.name, version, tuple(columns))
        if key not in memo:
            memo[key] = reader(contract, version, columns)
        return memo[key]

    return read


def load_rar_data(cfg: RARConfig, reader: Reader | None = None) -> RARData:
    """Read the impressions, then each example's look-alike users and recall pool (the sources
    ``cfg`` uses) from the builds valid at its time; encode them.

    ``ValueError`` naming ``sources`` when a table a source needs is missing.
    """
    t0 = time.perf_counter()
    din = load_din_data(din_config(cfg))
    root = cfg.warehouse
    reader = _cached(reader or table_reader(root))
    tables = dict(din.tables)

    train = din.splits["train"]
    user_ids = np.unique(din.user_ids[train.users].astype(str)).astype(object)  # users with a training impression

    builds: dict[str, list[Build]] = {}
    for source, contract in (("u2u", LOOKALIKE_USERS), ("i2i", RECALL_ITEMS)):
        if source not in cfg.sources:
            continue
        try:
            builds[contract.name] = list_builds(root, contract, cfg.table_versions.get(contract.name))
        except FileNotFoundError:
            raise ValueError(
                f"sources includes {source}, which needs the {contract.name} table, which {root} lacks: "
                f"materialize it, or leave {source} out of sources"
            ) from None

    # the item side codes of every pool item, encoded with the impressions' encoder
    pool_ids: dict[str, Any] = {}
    sets: dict[str, Sets] = {}
    stats: dict[str, Any] = {}
    for name, split in din.splits.items():
        n = len(split)
        users = din.user_ids[split.users].astype(object)
        s = {"examples": n}
        la = np.zeros((n, cfg.k_users), np.int64)
        la_build = np.full(n, -1, np.int64)
        if LOOKALIKE_TABLE in builds:
            b = builds[LOOKALIKE_TABLE]
            chosen = choose_builds(b, split.ts_us) if b else np.full(n, -1, np.int64)
            rows = read_lookalikes(reader, LOOKALIKE_USERS, b, chosen, users, cfg.k_users)
            la = _codes(rows.ids(np.arange(n)), user_ids.astype(str))
            la_build = np.where(chosen >= 0, np.array([x.version for x in b] + [-1], np.int64)[chosen], -1)
            s.update(lookalike_before_first_cutoff=int((chosen < 0).sum()),
                     with_lookalikes=int((la > 0).any(1).sum()), mean_known_lookalikes=float((la > 0).sum(1).mean()) if n else 0.0)
        pool = np.full((n, cfg.pool_size), "", dtype=object)
        rc_build = np.full(n, -1, np.int64)
        if RECALL_TABLE in builds:
            b = builds[RECALL_TABLE]
            chosen = choose_builds(b, split.ts_us) if b else np.full(n, -1, np.int64)
            rows = read_pools(reader, RECALL_ITEMS, b, chosen, users, cfg.pool_size)
            pool = rows.ids(np.arange(n))
            rc_build = np.where(chosen >= 0, np.array([x.version for x in b] + [-1], np.int64)[chosen], -1)
            s.update(recall_before_first_cutoff=int((chosen < 0).sum()), with_pool=int((pool != "").any(1).sum()),
                     mean_pool=float((pool != "").sum(1).mean()) if n else 0.0)
        pool_ids[name] = pool
        sets[name] = Sets(_codes(users, user_ids.astype(str)), la, np.zeros(pool.shape, np.int64), la_build, rc_build)
        stats[name] = s

    everything = np.concatenate([p.reshape(-1) for p in pool_ids.values()]) if pool_ids else np.zeros(0, object)
    vocab = np.unique(everything[everything != ""].astype(str))
    if len(vocab):
        codes = din.encoder.encode(pd.DataFrame({"item_id": vocab.astype(object)}))
    else:
        codes = np.zeros((0, len(din.fields)), np.int64)
    item_codes = np.concatenate([np.zeros((1, len(din.fields)), np.int64), np.asarray(codes, np.int64)])
    unknown = ~item_codes.any(1)  # no field known to the encoders: nothing to embed, a pad
    for name, pool in pool_ids.items():
        rows = _codes(pool, vocab)
        rows[unknown[rows]] = 0
        sets[name].pool = rows
        stats[name]["mean_known_pool"] = float((rows > 0).sum(1).mean()) if len(rows) else 0.0

    for table, bs in builds.items():
        used = sorted({int(v) for s in sets.values() for v in (s.lookalike_build if table == LOOKALIKE_TABLE else s.recall_build) if v >= 0})
        record = {"builds": [b.record() for b in bs], "versions_used": used}
        # the newest build (table_versions pins it to reproduce the run); without a build, the version looked at
        record["version"] = max(b.version for b in bs) if bs else cfg.table_versions.get(table, snapshot(root, table).version)
        tables[table] = record
    return RARData(din, sets, item_codes, user_ids, builds, stats, tables, time.perf_counter() - t0)
