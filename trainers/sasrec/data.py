"""SASRec's inputs from one committed ``user_sequences`` version: the leave-one-out splits, the
per-user item sets full ranking excludes, sampled negatives and the RoTE time levels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.sequences import USER_SEQUENCES, rote
from trainers.rotary import LEVEL_SETS
from trainers.sasrec.config import SASRecConfig
from trainers.sequences import FIRST_ITEM, PAD, ItemVocab, read_sequences
from trainers.tables import open_table

@dataclass
class Split:
    """Padded (left) inputs of one split; ``levels`` are the RoTE time arrays (empty without RoTE)."""

    items: np.ndarray  # int64 [n, L]
    mask: np.ndarray  # bool [n, L]
    levels: dict[str, np.ndarray]
    targets: np.ndarray  # int64 [n] (valid/test) or positives [n, L] (train)
    users: np.ndarray  # int64 [n], index into SASRecData.user_ids

    def __len__(self) -> int:
        return int(self.items.shape[0])


@dataclass
class SASRecData:
    vocab: ItemVocab
    table_version: int
    user_ids: np.ndarray
    train: Split
    valid: Split
    test: Split
    user_items_ptr: np.ndarray  # CSR over users: every item of the user (all splits)
    user_items: np.ndarray
    train_keys: np.ndarray  # sorted user * vocab.size + item of every training item


def time_levels(ts_s: np.ndarray, mask: np.ndarray, level_set: str) -> dict[str, np.ndarray]:
    """The RoTE level arrays (float64, 0 at pads) that ``LEVEL_SETS[level_set]`` rotates by."""
    ints = np.asarray(ts_s).astype(np.int64)
    out = {f"{k}": v for k, v in rote.sasrec_levels(ints, mask=mask).items()}
    if level_set == "finer":
        out["hour_id"] = rote.calendar_ids(ints, ("hour",), mask=mask)["hour_id"].astype(np.float64)
    names = {lv.name for lv in LEVEL_SETS[level_set]}
    return {k: v for k, v in out.items() if k in names}


def load_data(config: SASRecConfig, root: str | None = None, version: int | None = None) -> SASRecData:
    """Everything SASRec trains and evaluates on, from one committed ``user_sequences`` version."""
    root = root or config.warehouse
    table = USER_SEQUENCES
    version = version if version is not None else config.table_versions.get(table.name)
    snap = open_table(root, table, version)
    vocab = ItemVocab.fit(root, table, snap.version)
    parts = [b.to_pandas() for b in snap.batches(["event_id", "user_id", "target_item_id", "seq_pos", "split"])]
    rows = pd.concat(parts, ignore_index=True)
    if not set(rows["split"]) >= {"train", "valid", "test"}:
        raise ValueError("user_sequences needs train, valid and test rows (a leave-one-out build)")
    user_ids, user_idx = np.unique(rows["user_id"].to_numpy(dtype=object), return_inverse=True)
    rows["u"] = user_idx
    rows["item"] = vocab.encode(rows["target_item_id"].to_numpy(dtype=object))
    train_rows = rows[rows["split"] == "train"]
    last_train = set(train_rows.loc[train_rows.groupby("u")["seq_pos"].idxmax(), "event_id"])
    known = rows[rows["item"] >= FIRST_ITEM]
    by_user = known.sort_values(["u", "item"]).drop_duplicates(["u", "item"])
    ptr = np.zeros(len(user_ids) + 1, np.int64)
    np.cumsum(np.bincount(by_user["u"].to_numpy(), minlength=len(user_ids)), out=ptr[1:])
    kt = train_rows[train_rows["item"] >= FIRST_ITEM]
    train_keys = np.unique(kt["u"].to_numpy(np.int64) * vocab.size + kt["item"].to_numpy(np.int64))
    uindex = pd.Index(user_ids)

    def where(rb):
        ev = rb.column("event_id").to_numpy(zero_copy_only=False)
        sp = rb.column("split").to_numpy(zero_copy_only=False)
        return (sp != "train") | np.fromiter((e in last_train for e in ev), bool, len(ev))

    chunks: dict[str, list] = {"train": [], "valid": [], "test": []}
    for b in read_sequences(root, vocab, config.max_len, "left", where=where, version=snap.version, table=table):
        for name in chunks:
            sel = b.split == name
            if sel.any():
                chunks[name].append((b.item_ids[sel], b.mask[sel], b.ts_s[sel], b.target_item_id[sel], b.user_id[sel]))

    def build(name: str) -> Split:
        got = chunks[name]
        items = np.concatenate([c[0] for c in got]) if got else np.zeros((0, config.max_len), np.int64)
        mask = np.concatenate([c[1] for c in got]) if got else np.zeros((0, config.max_len), bool)
        ts = np.concatenate([c[2] for c in got]) if got else np.zeros((0, config.max_len))
        tgt = np.concatenate([c[3] for c in got]) if got else np.zeros(0, np.int64)
        users = uindex.get_indexer(np.concatenate([c[4] for c in got])) if got else np.zeros(0, np.int64)
        order = np.argsort(users, kind="stable")  # deterministic whatever the file order
        items, mask, ts, tgt, users = items[order], mask[order], ts[order], tgt[order], users[order]
        if name == "train":
            keep = mask.any(axis=1)
            items, mask, ts, tgt, users = items[keep], mask[keep], ts[keep], tgt[keep], users[keep]
            pos = np.concatenate([items[:, 1:], tgt[:, None]], axis=1)
            tgt = np.where(mask, pos, PAD)
        levels = time_levels(ts, mask, config.rote_levels) if config.rote else {}
        return Split(items, mask, levels, tgt, users.astype(np.int64))

    return SASRecData(
        vocab=vocab, table_version=snap.version, user_ids=user_ids, train=build("train"), valid=build("valid"),
        test=build("test"), user_items_ptr=ptr, user_items=by_user["item"].to_numpy(np.int64), train_keys=train_keys,
    )


def sample_negatives(
    positives: np.ndarray, users: np.ndarray, train_keys: np.ndarray, n_items: int, rng: np.random.Generator,
    tries: int = 20,
) -> np.ndarray:
    """One uniform negative in ``[FIRST_ITEM, n_items)`` per non-pad position, outside the user's training items.

    Rejection sampling, vectorised; after ``tries`` rounds a position that still hits a training
    item keeps it (only possible for a user who has seen almost every item).
    """
    neg = rng.integers(FIRST_ITEM, n_items, size=positives.shape)
    if len(train_keys) == 0:  # nobody has training items: every draw is already valid
        return np.where(positives != PAD, neg, PAD)
    for _ in range(tries):
        keys = users[:, None] * n_items + neg
        pos = np.searchsorted(train_keys, keys)
        hit = (pos < len(train_keys)) & (train_keys[np.minimum(pos, len(train_keys) - 1)] == keys)
        hit &= positives != PAD
        if not hit.any():
            break
        neg[hit] = rng.integers(FIRST_ITEM, n_items, size=int(hit.sum()))
    return np.where(positives != PAD, neg, PAD)


def first_used_column(mask: np.ndarray) -> int:
    """First column any row of a left-padded batch uses (the columns before it are all padding)."""
    used = mask.any(axis=0)
    return int(np.argmax(used)) if used.any() else mask.shape[1] - 1


def sample_users(split: Split, n_max: int | None, seed: int) -> Split:
    """The rows of a fixed random sample of ``n_max`` users (all rows when there are fewer).

    The official evaluation samples 10,000 users when a data set has more; here the sample is
    drawn once per run (from the seed), so every validation epoch compares the same users.
    """
    if n_max is None or len(split) <= n_max:
        return split
    rows = np.sort(np.random.default_rng([seed, 7]).choice(len(split), n_max, replace=False))
    return Split(split.items[rows], split.mask[rows], {k: v[rows] for k, v in split.levels.items()},
                 split.targets[rows], split.users[rows])
