"""SASRec (Kang and McAuley, 2018), optionally with RoTE multi-level rotary time embeddings
and/or CAPE contextual position logits.

Reads ``user_sequences`` (leave-one-out split) through :mod:`trainers.sequences`; the model page
is ``docs/sasrec.md``. Defaults follow the RoTE code's SASRec config
(``XiaoLongtaoo/RoTE`` @ ``11ea986``, ``configs/rote_sasrec.yaml``; spec section 1.4):
hidden 64, 2 blocks, 1 head, dropout 0.5, post-LN, xavier-normal init, max length 50, Adam
(lr 1e-3, betas 0.9 / 0.98), BCE on one positive and one sampled negative per position.

Data per user (leave-one-out, one row per target event in the table):

* **train**: the user's *last* ``train`` row; input = its history (the most recent ``max_len``
  train events), positives = the history shifted by one plus the row's target (the next item at
  every position), one negative per position drawn uniformly from the known items outside the
  user's training items. Users whose last train row has no history are skipped (as the official
  sampler skips users with one training item).
* **valid** / **test**: the ``valid`` / ``test`` row; its history already ends with the
  validation item for test (the spec's "append the validation item").
* **evaluation**: full ranking of all known items at the last position, excluding every other
  item of the user (train, valid and test targets), HR@5/10 and NDCG@5/10
  (:func:`trainers.metrics.full_ranking_metrics`, pessimistic ties). A target outside the
  training vocabulary cannot be ranked and counts as a miss (``*_unknown_targets``).

RoTE (``rote=True``): Q and K of every layer are rotated by :class:`trainers.rotary.MultiLevelRotary`
with each input item's own time (so the last position's query time is the last input item's
time; the target's time is never used), and the learned position embedding is removed.

CAPE (``cape=True``, :mod:`trainers.cape`): in every layer, per head, contextual position logits
computed from the scaled, masked attention logits and the query the attention uses (rotated when
RoTE is on) are added to the logits before the softmax; the learned position embedding is removed
(CAPE's positions replace it). Masked keys (future and padding) add nothing to the gate sums by
default (``cape_masked_keys``), so the outputs do not depend on the padding.

Differences from the official code, on purpose (see ``docs/sasrec.md``): a key-padding mask
(the official attention has only the causal mask, so pads leak into real positions), float64
rotary angles, position ids counted from the end of the real sequence, one fixed evaluation
sample of users per run (the official code draws 10,000 users anew at each evaluation).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from features import rote
from features.sequences import USER_SEQUENCES
from trainers.cape import CAPE
from trainers.config import TrainerConfig
from trainers.metrics import full_ranking_metrics
from trainers.rotary import LEVEL_SETS, MultiLevelRotary
from trainers.sequences import FIRST_ITEM, OOV, PAD, ItemVocab, read_sequences
from trainers.tables import iter_batches, snapshot

MODEL_NAME = "sasrec"
KS = (5, 10)


class SASRecConfig(TrainerConfig):
    """SASRec / RoTE-SASRec settings (``training.models.sasrec`` in ``recfeat.yaml``)."""

    max_len: Annotated[int, Field(ge=1, le=1_000)] = Field(50, description="input positions (most recent events)")
    hidden: Annotated[int, Field(ge=2)] = Field(64, description="embedding and hidden size")
    blocks: Annotated[int, Field(ge=1)] = Field(2, description="self-attention blocks")
    heads: Annotated[int, Field(ge=1)] = Field(1, description="attention heads (hidden must divide by heads)")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.5, description="dropout rate")
    norm_first: bool = Field(False, description="pre-LN blocks (False: post-LN, the RoTE code's default)")
    beta2: Annotated[float, Field(gt=0, lt=1)] = Field(0.98, description="Adam beta2 (beta1 is 0.9)")
    rote: bool = Field(False, description="rotate Q and K by RoTE time levels; drops the position embedding")
    rote_levels: Literal["paper", "finer"] = Field(
        "paper", description="paper: year, month, day; finer: also whole hours (ours, beyond the paper)"
    )
    cape: bool = Field(False, description="add CAPE contextual position logits in every layer; drops the position embedding")
    cape_dim: Annotated[int, Field(ge=1)] = Field(16, description="CAPE position dimension C (official grid: 16, 32, 64)")
    cape_masked_keys: Literal["ignore", "add"] = Field(
        "ignore", description="what masked keys add to CAPE's gate sums: ignore (ours: nothing) or add (official)"
    )
    epochs: Annotated[int, Field(ge=1)] = 200
    patience: Annotated[int, Field(ge=1)] = Field(20, description="epochs without a validation NDCG@10 gain before stopping")
    eval_interval: Annotated[int, Field(ge=1)] = Field(
        1, description="validate every this many epochs (and after the last); the official protocol: 20"
    )
    eval_batch: Annotated[int, Field(ge=1)] = Field(1_024, description="users scored at once in full ranking")
    eval_users_max: Annotated[int, Field(ge=1)] | None = Field(
        10_000, description="evaluate a fixed random sample of this many users when there are more (official: 10,000); null: all"
    )

    def model_post_init(self, _ctx) -> None:
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ValueError("hidden / heads must be an even integer (rotary pairs)")


# --------------------------------------------------------------------------- data


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
    table = USER_SEQUENCES.name
    version = version if version is not None else config.table_versions.get(table)
    snap = snapshot(root, table, version)
    vocab = ItemVocab.fit(root, table, snap.version)
    parts = [
        b.to_pandas()
        for b in iter_batches(root, table, ["event_id", "user_id", "target_item_id", "seq_pos", "split"], snap.version)
    ]
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


# --------------------------------------------------------------------------- model


def position_ids(mask: torch.Tensor, max_len: int) -> torch.Tensor:
    """Learned-position ids: ``max_len`` for the last real position, ``max_len - 1`` before it, ..., 0 at pads.

    Counted from the end of the real sequence and from ``max_len`` (the model's input width), not
    from the batch width: the same history gets the same ids whether its batch was trimmed of
    leading all-padding columns or not, and left and right padding give the same ids. With
    left padding to ``max_len`` they equal the official slot index + 1.
    """
    if mask.shape[1] > max_len:
        raise ValueError(f"mask has {mask.shape[1]} positions, max_len is {max_len}")
    from_end = mask.flip(1).long().cumsum(1).flip(1)  # 1 at the last real position
    return torch.where(mask, max_len - from_end + 1, torch.zeros_like(from_end))


def attention_allowed(mask: torch.Tensor) -> torch.Tensor:
    """[batch, 1, L, L] bool: query i may see key j when j <= i and j is real (or j == i)."""
    length = mask.shape[1]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=mask.device))
    eye = torch.eye(length, dtype=torch.bool, device=mask.device)
    return (causal & (mask[:, None, :] | eye))[:, None]


class TimeAttention(nn.Module):
    """Multi-head self-attention whose Q and K are optionally rotated by RoTE after projection."""

    def __init__(self, hidden: int, heads: int, dropout: float, rotary: MultiLevelRotary | None,
                 cape: CAPE | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q, self.k, self.v, self.out = (nn.Linear(hidden, hidden) for _ in range(4))
        self.drop = nn.Dropout(dropout)
        self.rotary = rotary
        self.cape = cape

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, rot_cache=None) -> torch.Tensor:
        b, length, hidden = x.shape

        def split(t):
            return t.view(b, length, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        if self.rotary is not None:
            q, k = self.rotary(q, rot_cache), self.rotary(k, rot_cache)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed, float("-inf"))
        if self.cape is not None:  # contextual positions from the scaled, masked logits (trainers/cape.py)
            scores = scores + self.cape(q, scores, allowed)
        weights = self.drop(torch.softmax(scores, dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(b, length, hidden))


class FeedForward(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden), nn.Dropout(dropout), nn.ReLU(), nn.Linear(hidden, hidden), nn.Dropout(dropout)
        )

    def forward(self, x):
        return self.net(x)


class SASRec(nn.Module):
    """SASRec over item indices of an :class:`ItemVocab` (row 0 = padding, 1 = unknown)."""

    def __init__(self, n_items: int, config: SASRecConfig):
        super().__init__()
        h = config.hidden
        self.max_len, self.norm_first, self.use_rote = config.max_len, config.norm_first, config.rote
        self.item_emb = nn.Embedding(n_items, h, padding_idx=PAD)
        self.pos_emb = None if (config.rote or config.cape) else nn.Embedding(config.max_len + 1, h, padding_idx=0)
        self.emb_drop = nn.Dropout(config.dropout)
        self.rotary = MultiLevelRotary(h // config.heads, LEVEL_SETS[config.rote_levels]) if config.rote else None
        self.attn = nn.ModuleList(
            TimeAttention(h, config.heads, config.dropout, self.rotary,
                          CAPE(h // config.heads, config.max_len, config.cape_dim, config.heads, config.cape_masked_keys)
                          if config.cape else None)
            for _ in range(config.blocks)
        )
        self.attn_norm = nn.ModuleList(nn.LayerNorm(h, eps=1e-8) for _ in range(config.blocks))
        self.ffn = nn.ModuleList(FeedForward(h, config.dropout) for _ in range(config.blocks))
        self.ffn_norm = nn.ModuleList(nn.LayerNorm(h, eps=1e-8) for _ in range(config.blocks))
        self.last_norm = nn.LayerNorm(h, eps=1e-8)
        for p in self.parameters():  # xavier-normal on every matrix, as the official code
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for m in self.modules():  # CAPE keeps its own init: nn.Linear-like projection, zero table
            if isinstance(m, CAPE):
                m.reset_parameters()
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()
            if self.pos_emb is not None:
                self.pos_emb.weight[0].zero_()

    def encode(self, items: torch.Tensor, mask: torch.Tensor, levels: dict[str, torch.Tensor] | None = None):
        """Hidden states [batch, L, hidden] of padded inputs (any padding side)."""
        if items.shape[1] > self.max_len:
            raise ValueError(f"inputs have {items.shape[1]} positions, the model at most {self.max_len}")
        x = self.item_emb(items) * math.sqrt(self.item_emb.embedding_dim)
        if self.pos_emb is not None:
            x = x + self.pos_emb(position_ids(mask, self.max_len))
        x = self.emb_drop(x) * mask[..., None]
        allowed = attention_allowed(mask)
        cache = self.rotary.cache(levels, x.dtype) if self.rotary is not None else None
        for attn, an, ffn, fn in zip(self.attn, self.attn_norm, self.ffn, self.ffn_norm):
            if self.norm_first:
                x = x + attn(an(x), allowed, cache)
                x = x + ffn(fn(x))
            else:
                x = an(x + attn(x, allowed, cache))
                x = fn(x + ffn(x))
        return self.last_norm(x)

    def forward(self, items, mask, levels, positives, negatives):
        h = self.encode(items, mask, levels)
        return (h * self.item_emb(positives)).sum(-1), (h * self.item_emb(negatives)).sum(-1)

    def score_last(self, items, mask, levels) -> torch.Tensor:
        """Scores [batch, n_items] of every vocabulary row at the last position (left padding)."""
        h = self.encode(items, mask, levels)[:, -1]
        return h @ self.item_emb.weight.T


def bce_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean BCE of positives (label 1) plus mean BCE of negatives (label 0) over non-pad positions."""
    real = positives != PAD
    bce = nn.functional.binary_cross_entropy_with_logits
    p, n = pos_logits[real], neg_logits[real]
    return bce(p, torch.ones_like(p)) + bce(n, torch.zeros_like(n))


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def rank_scores(model: SASRec, data: SASRecData, split: Split, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores [rows, n_items] with excluded items at -inf, targets) for full ranking.

    Excluded: padding, the unknown id, and every item of the user other than the target. An
    unknown target gets -inf too; :func:`evaluate` counts it as a miss.
    """
    model.eval()
    first = _trim(split.mask[rows])  # leading all-padding columns change nothing; skip them
    scores = model.score_last(
        torch.from_numpy(split.items[rows, first:]), torch.from_numpy(split.mask[rows, first:]),
        {k: torch.from_numpy(v[rows, first:]) for k, v in split.levels.items()},
    ).double().numpy()
    targets = split.targets[rows]
    scores[:, [PAD, OOV]] = -np.inf
    users = split.users[rows]
    starts, ends = data.user_items_ptr[users], data.user_items_ptr[users + 1]
    r = np.repeat(np.arange(len(rows)), ends - starts)
    cols = data.user_items[np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])] if len(r) else r
    keep = cols != targets[r]
    scores[r[keep], cols[keep]] = -np.inf
    return scores, targets


def evaluate(model: SASRec, data: SASRecData, split: Split, prefix: str, batch: int = 1_024) -> dict[str, float]:
    """HR@5/10 and NDCG@5/10 over every row of ``split`` (full ranking)."""
    n = len(split)
    sums: dict[str, float] = {}
    by_length = np.argsort(split.mask.sum(axis=1), kind="stable")  # similar lengths together: less padding
    for start in range(0, n, batch):
        rows = np.sort(by_length[start : start + batch])
        scores, targets = rank_scores(model, data, split, rows)
        known = targets >= FIRST_ITEM  # an unknown target is a miss: it adds 0 to every sum
        if not known.any():
            continue
        ranked = full_ranking_metrics(scores[known], targets[known], KS, exclude=np.isneginf(scores[known]))
        for k, v in ranked.items():
            sums[k] = sums.get(k, 0.0) + v * int(known.sum())
    out = {f"{prefix}_{m}@{k}": sums.get(f"{m}@{k}", 0.0) / n if n else float("nan") for m in ("hr", "ndcg") for k in KS}
    out[f"{prefix}_rows"] = n
    out[f"{prefix}_unknown_targets"] = int((split.targets == OOV).sum())
    return out


# --------------------------------------------------------------------------- training


def _trim(mask: np.ndarray) -> int:
    """First column any row of a left-padded batch uses (the columns before it are all padding)."""
    used = mask.any(axis=0)
    return int(np.argmax(used)) if used.any() else mask.shape[1] - 1


#: Batches sorted by length together (see :func:`train_batches`).
BUCKET_BATCHES = 16


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


def train_batches(data: SASRecData, config: SASRecConfig, epoch: int) -> Iterator[tuple]:
    """Shuffled training batches of one epoch (order and negatives fixed by seed and epoch).

    Length bucketing: the shuffled users are cut into groups of ``BUCKET_BATCHES`` batches,
    each group is sorted by history length and cut into batches, and the batches are shuffled;
    each batch then drops its leading all-padding columns. Dropping them changes no output (the
    key-padding mask and end-counted positions make real positions independent of padding,
    tests/trainers/test_sasrec.py) and makes short-history data sets (KuaiRand: 9 events per
    user on average) several times faster.
    """
    rng = np.random.default_rng([config.seed, epoch])
    tr = data.train
    order = rng.permutation(len(tr))
    lengths = tr.mask.sum(axis=1)
    group = config.batch_size * BUCKET_BATCHES
    batches = []
    for g in range(0, len(order), group):
        chunk = order[g : g + group]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + config.batch_size] for i in range(0, len(chunk), config.batch_size)]
    for b in rng.permutation(len(batches)):
        idx = np.sort(batches[b])
        first = _trim(tr.mask[idx])
        pos = tr.targets[idx, first:]
        neg = sample_negatives(pos, tr.users[idx], data.train_keys, data.vocab.size, rng)
        yield (
            torch.from_numpy(tr.items[idx, first:]), torch.from_numpy(tr.mask[idx, first:]),
            {k: torch.from_numpy(v[idx, first:]) for k, v in tr.levels.items()},
            torch.from_numpy(pos), torch.from_numpy(neg),
        )


def loss_of(model: SASRec, batch: tuple) -> torch.Tensor:
    items, mask, levels, pos, neg = batch
    p, n = model(items, mask, levels, pos, neg)
    return bce_loss(p, n, pos)


def _fit_kwargs(config: SASRecConfig) -> dict:
    """Keyword arguments of the shared loop's ``fit``, Adam betas (0.9, ``beta2``) included."""
    return {"epochs": config.epochs, "patience": config.patience, "lr": config.lr,
            "weight_decay": config.weight_decay, "betas": (0.9, config.beta2),
            "progress": config.progress, "desc": MODEL_NAME, "eval_interval": config.eval_interval}


def train(config: SASRecConfig):
    """Train, select on validation NDCG@10, test, and write a run directory; returns a ``RunResult``."""
    from trainers.data import table_record
    from trainers.loop import deterministic, fit
    from trainers.runs import RunResult, pinned_while_training, save_run

    with contextlib.ExitStack() as pins:  # the versions read stay pinned until the run directory pins them
        with deterministic(config.seed, config.threads) as environment:
            t0 = time.perf_counter()
            data = load_data(config)
            load_s = time.perf_counter() - t0
            snap = snapshot(config.warehouse, USER_SEQUENCES.name, data.table_version)
            tables = {USER_SEQUENCES.name: table_record(snap)}
            pins.enter_context(pinned_while_training(config.warehouse, tables, MODEL_NAME))
            model = SASRec(data.vocab.size, config)
            kwargs = _fit_kwargs(config)
            valid = sample_users(data.valid, config.eval_users_max, config.seed)
            test_rows = sample_users(data.test, config.eval_users_max, config.seed)
            res = fit(
                model, loss_of, lambda epoch: train_batches(data, config, epoch),
                lambda m: evaluate(m, data, valid, "valid", config.eval_batch), "valid_ndcg@10", **kwargs,
            )
            t1 = time.perf_counter()
            test = evaluate(model, data, test_rows, "test", config.eval_batch)
            eval_s = time.perf_counter() - t1

        def strip(prefix: str, d: dict) -> dict:
            return {k[len(prefix) + 1:]: v for k, v in d.items() if k.startswith(prefix + "_")}

        metrics = {
            "valid": strip("valid", res.best_metrics),
            "test": strip("test", test),
            "select_metric": "ndcg@10",  # on the validation rows
            "best_epoch": res.best_epoch,
            "epochs_run": res.epochs_run,
            "stopped_early": res.stopped_early,
            "throughput": {
                "train_samples_per_s": res.train_samples_per_s,
                "eval_samples_per_s": len(test_rows) / eval_s if eval_s > 0 else float("nan"),
            },
            "load_s": load_s,
            "train_users": len(data.train),
            "items": len(data.vocab.item_ids),
            "adam_betas": list(kwargs["betas"]),
            "history": res.history,
        }
        cfg = config.model_dump(mode="json")
        run_dir = save_run(config.runs_root, MODEL_NAME, cfg, environment, {"items": data.vocab.to_dict()},
                            model.state_dict(), metrics, config.warehouse, tables)
    return RunResult(model=MODEL_NAME, run_dir=run_dir, metrics=metrics, tables=tables, config=cfg)


def train_sasrec(config: SASRecConfig) -> dict:
    """Train one configuration and return its metrics (see :func:`train`)."""
    return train(config).metrics


def _register() -> None:
    from trainers.registry import ModelSpec, register

    register(
        ModelSpec(
            name=MODEL_NAME,
            config_cls=SASRecConfig,
            train=train,
            tables=lambda config: [USER_SEQUENCES.name],
            description="SASRec next-item model on user_sequences (leave-one-out), optional RoTE time rotation",
            select_metric="valid_ndcg@10",
        )
    )


_register()
