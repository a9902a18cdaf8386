"""DIN: Deep Interest Network (Zhou et al., KDD'18) for click-through rate, optionally with CAPE
contextual positions in its target attention.

Reads ``events`` (and ``items`` for the item side fields) through the contracts; the model page
is the "DIN" section of ``docs/training.md``.

**Rows and labels.** One row per impression (an ``events`` row whose ``is_click`` is not null),
label ``is_click``. Split by whole UTC days of ``event_date`` exactly as the watch-time models
(:class:`trainers.config.DateSplit`: train, validation and test are consecutive day windows
ending at the last day of ``events``).

**Point-in-time history.** For an impression of user ``u`` at time ``t`` the history is the
user's behaviours (``history``: their clicks, or all their impressions) with ``event_ts < t``,
strictly: an event at the same microsecond as the impression (a tie, or the impression itself)
is never in it, whatever the source order. The most recent ``max_len`` are kept, oldest first,
left-padded. Histories may draw on every earlier day of ``events`` (``history_days`` limits how
far before the training window), including the validation days for test rows, since those
events happened before the impression. Built by :func:`history_windows` with one sort and a
binary search, no per-user loop; ``tests/trainers/test_din.py`` checks it against a brute-force
reference on data full of ties.

**Inputs.** Every behaviour and the target are one item vector: the concatenated embeddings of
``item_id`` and the item side fields (``item_fields``, from ``items``; a field the source lacks
is left out). Encoders are fitted on the training days' impressions; index 0 is an unseen or
null value.

**Model.** The attention unit scores each history item ``h_j`` against the target ``t`` with an
MLP over ``[h_j, t, h_j - t, h_j * t]`` (Dice or PReLU), and the history is sum-pooled with these
raw scores as weights: no softmax, as in DIN. Pads get weight 0. With ``cape`` the target is
CAPE's single query (:meth:`trainers.cape.CAPE.target_attention`): gates ``1 - sigmoid(a_j)`` of
the target-history scores, suffix sums to the most recent item, the interpolated table logits
added to the scores before pooling. The tower is an MLP over ``[t, pooled]`` to one logit,
trained with BCE.

**Dice** (:class:`Dice`) normalises with batch statistics in training and running statistics
in evaluation (FuxiCTR's ``Dice``: batch norm without affine, eps 1e-9, momentum 0.01, alpha
from 0). In the attention unit the statistics are taken over *real* history positions only:
FuxiCTR feeds the pads into the batch norm, so there the padding changes the outputs in
training. Here pads change no output, in training or evaluation (tested).

**Evaluation** on the validation days (each epoch) and the test days (best epoch): gAUC
(per-user AUC weighted by the user's impressions, users with both classes only,
:func:`trainers.metrics.gauc_impressions`), AUC and logloss of ``sigmoid(logit)``.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pydantic import Field
from torch import nn

from trainers import metrics as M
from trainers.cape import CAPE
from trainers.config import TrainerConfig
from trainers.data import (
    Dimension,
    FieldEncoder,
    FieldSpec,
    check_columns,
    encoders_record,
    load_dimension,
    partitions_between,
    stream_table,
    table_record,
)
from trainers.tables import snapshot

MODEL_NAME = "din"
EVENTS_TABLE = "events"
ITEMS_TABLE = "items"

#: Item side fields DIN can concatenate to the item id (``items`` columns; ``tag_pop`` is the
#: most frequent tag of the training rows, as the watch-time models' field of that name).
ITEM_FIELDS: dict[str, FieldSpec] = {
    "author_id": FieldSpec("author_id", ITEMS_TABLE, "author_id"),
    "music_id": FieldSpec("music_id", ITEMS_TABLE, "music_id"),
    "tag_pop": FieldSpec("tag_pop", ITEMS_TABLE, "tag", "most_frequent_tag"),
    "video_type": FieldSpec("video_type", ITEMS_TABLE, "video_type"),
    "upload_type": FieldSpec("upload_type", ITEMS_TABLE, "upload_type"),
}
ItemField = Literal["author_id", "music_id", "tag_pop", "video_type", "upload_type"]

#: Columns read from ``events``, with their arrow types (checked before reading).
EVENT_COLUMNS: dict[str, str] = {
    "event_id": "string",
    "user_id": "string",
    "item_id": "string",
    "event_ts": "",  # a UTC timestamp; Spark may write it without the zone name (features/contracts.py)
    "event_date": "date32[day]",
    "is_click": "bool",
    "source_file": "string",
    "source_line": "int64",
}
#: Metrics where lower is better (model selection minimises them).
LOWER_IS_BETTER = {"logloss"}
#: Training batches sorted by history length together (see :func:`train_batches`).
BUCKET_BATCHES = 16


class DINConfig(TrainerConfig):
    """DIN settings (``training.models.din`` in ``recfeat.yaml``)."""

    max_len: Annotated[int, Field(ge=1, le=1_000)] = Field(50, description="history length (most recent behaviours)")
    history: Literal["clicks", "impressions"] = Field(
        "clicks", description="behaviours in the history: the user's earlier clicks, or all earlier impressions"
    )
    history_days: Annotated[int, Field(ge=0)] | None = Field(
        None, description="days before the training window the histories may draw on; null: every earlier day"
    )
    item_fields: tuple[ItemField, ...] = Field(
        ("author_id", "tag_pop"), description="item side fields concatenated to the item id embedding (from items)"
    )
    embed_dim: Annotated[int, Field(ge=1)] = Field(16, description="embedding size per field")
    attention_units: tuple[Annotated[int, Field(ge=1)], ...] = Field((64,), description="attention unit MLP hidden sizes")
    tower_units: tuple[Annotated[int, Field(ge=1)], ...] = Field((200, 80), description="tower MLP hidden sizes")
    activation: Literal["dice", "prelu"] = Field("dice", description="hidden activation of both MLPs")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="dropout after each tower hidden layer")
    cape: bool = Field(False, description="add CAPE contextual position logits to the target-attention scores")
    cape_dim: Annotated[int, Field(ge=1)] = Field(16, description="CAPE position dimension C (official grid: 16, 32, 64)")
    cape_masked_keys: Literal["ignore", "add"] = Field(
        "ignore", description="what pads add to CAPE's gate sums: ignore (nothing) or add (official: 0.5 each)"
    )
    select_metric: Literal["gauc", "auc", "logloss"] = Field("gauc", description="validation metric for early stopping")
    epochs: Annotated[int, Field(ge=1)] = 10
    patience: Annotated[int, Field(ge=1)] = Field(2, description="epochs without a validation gain before stopping")
    batch_size: Annotated[int, Field(ge=1)] = 1024
    eval_batch: Annotated[int, Field(ge=1)] = Field(4_096, description="impressions scored at once in evaluation")


# --------------------------------------------------------------------------- data


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
    snap = snapshot(root, EVENTS_TABLE, versions.get(EVENTS_TABLE))
    check_columns(snap, EVENT_COLUMNS)
    days = sorted(dt.date.fromisoformat(k) for k in snap.manifest.partitions)
    if not days:
        raise ValueError(f"{EVENTS_TABLE} v{snap.version} has no rows")
    windows = cfg.split.windows(days[-1])
    for name, (a, b) in windows.items():
        if not partitions_between(snap, a, b):
            raise ValueError(f"the {name} split [{a}, {b}) has no {EVENTS_TABLE} partitions (data: {days[0]} .. {days[-1]})")
    end = windows["test"][1]
    first = dt.date.min if cfg.history_days is None else windows["train"][0] - dt.timedelta(days=cfg.history_days)
    parts = partitions_between(snap, first, end)
    cols: dict[str, list[np.ndarray]] = {c: [] for c in ("event_id", "user_id", "item_id", "source_file", "source_line",
                                                        "ts", "day", "has_label", "clicked")}
    for rb in stream_table(snap, list(EVENT_COLUMNS), parts, batch_rows):  # per batch: files may differ in string types
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
        dim = Dimension(ITEMS_TABLE, "item_id", "item_id")
        wanted = [ITEM_FIELDS[f] for f in cfg.item_fields]
        try:
            frame, isnap = load_dimension(root, dim, [f.column for f in wanted], versions.get(ITEMS_TABLE))
        except FileNotFoundError:
            raise ValueError(
                f"item_fields {list(cfg.item_fields)} need the {ITEMS_TABLE} table, which {root} lacks; "
                "set item_fields: [] for item ids only"
            ) from None
        dims[ITEMS_TABLE] = (dim, frame)
        tables[ITEMS_TABLE] = table_record(isnap)
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
    tables[EVENTS_TABLE] = table_record(snap, parts)
    return DINData(pool_x, pool_ts, pool_users, splits, encoder, windows, user_ids, tables, time.perf_counter() - t0)


# --------------------------------------------------------------------------- model


class Dice(nn.Module):
    """Dice (DIN): ``p(x) x + alpha (1 - p(x)) x`` with ``p = sigmoid((x - mean) / sqrt(var + eps))``.

    Per channel (the last dimension). Training: the batch mean and biased variance over the rows
    where ``mask`` is True (every row without a mask), and the running statistics move by
    ``momentum`` (the unbiased variance, as batch norm); evaluation: the running statistics.
    Without a mask this is FuxiCTR's ``Dice`` (``BatchNorm1d(affine=False, eps=1e-9,
    momentum=0.01)``, alpha from 0).
    """

    def __init__(self, dim: int, eps: float = 1e-9, momentum: float = 0.01):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.alpha = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            rows = x.reshape(-1, x.shape[-1])
            if mask is not None:
                rows = rows[mask.reshape(-1)]
            n = rows.shape[0]
            if n == 0:  # no real row: nothing to estimate from
                mean, var = self.running_mean, self.running_var
            else:
                mean, var = rows.mean(0), rows.var(0, unbiased=False)
                with torch.no_grad():
                    self.running_mean.lerp_(mean.detach(), self.momentum)
                    if n > 1:
                        self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((x - mean) / torch.sqrt(var + self.eps))
        return p * x + self.alpha * (1 - p) * x


class PReLU(nn.Module):
    """PReLU with one slope per channel of the *last* dimension (torch's acts on dimension 1), from 0.25."""

    def __init__(self, dim: int, init: float = 0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.weight * x)


class MLP(nn.Module):
    """Linear -> activation (-> dropout) per hidden size, then a Linear to ``out_dim``.

    ``forward(x, mask)``: ``mask`` (bool, ``x.shape[:-1]``) tells Dice which rows are real.
    """

    def __init__(self, in_dim: int, units: tuple[int, ...], activation: str, dropout: float = 0.0, out_dim: int = 1):
        super().__init__()
        dims = [in_dim, *units]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        if activation == "dice":
            self.acts = nn.ModuleList(Dice(u) for u in units)
        elif activation == "prelu":
            self.acts = nn.ModuleList(PReLU(u) for u in units)
        else:
            raise ValueError(f"activation must be dice or prelu, got {activation!r}")
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dims[-1], out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for lin, act in zip(self.linears, self.acts):
            x = lin(x)
            x = act(x, mask) if isinstance(act, Dice) else act(x)
            x = self.drop(x)
        return self.out(x)


class TargetAttention(nn.Module):
    """DIN's activation unit and weighted sum pooling, optionally with CAPE.

    ``forward(target [B, D], history [B, L, D], mask [B, L])`` returns the pooled history
    ``[B, D]`` and the weights ``[B, L]`` (0 at pads): ``w_j = a_j (+ E_j)`` with
    ``a_j = MLP([h_j, t, h_j - t, h_j * t])`` and ``E`` CAPE's contextual position logits for the
    target as the query.
    """

    def __init__(self, dim: int, units: tuple[int, ...], activation: str, cape: CAPE | None = None):
        super().__init__()
        self.unit = MLP(4 * dim, units, activation)
        self.cape = cape

    def scores(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = target[:, None, :].expand_as(history)
        a = self.unit(torch.cat([history, t, history - t, history * t], dim=-1), mask)[..., 0]
        return a.masked_fill(~mask, 0.0)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor):
        a = self.scores(target, history, mask)
        if self.cape is not None:
            a = a + self.cape.target_attention(target, a, mask)
        w = a.masked_fill(~mask, 0.0)
        return (w[..., None] * history).sum(1), w


class DIN(nn.Module):
    """DIN over encoded item fields (``cardinalities``: one embedding table per field, row 0 = unknown)."""

    def __init__(self, cardinalities: list[int], cfg: DINConfig):
        super().__init__()
        d = cfg.embed_dim
        self.embeddings = nn.ModuleList(nn.Embedding(c, d) for c in cardinalities)
        dim = d * len(cardinalities)
        cape = CAPE(dim, cfg.max_len, cfg.cape_dim, 1, cfg.cape_masked_keys) if cfg.cape else None
        self.attention = TargetAttention(dim, tuple(cfg.attention_units), cfg.activation, cape)
        self.tower = MLP(2 * dim, tuple(cfg.tower_units), cfg.activation, cfg.dropout)
        for emb in self.embeddings:  # FuxiCTR's default embedding init
            nn.init.normal_(emb.weight, std=1e-4)
        for m in self.modules():  # and its Linear init: xavier-normal weights, zero biases
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Item vectors ``[..., fields * embed_dim]`` of codes ``[..., fields]``."""
        return torch.cat([emb(codes[..., k]) for k, emb in enumerate(self.embeddings)], dim=-1)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = self.embed(target)
        pooled, _ = self.attention(t, self.embed(history), mask)
        return self.tower(torch.cat([t, pooled], dim=-1))[:, 0]


# --------------------------------------------------------------------------- training and evaluation


def _tensors(data: DINData, split: Impressions, rows: np.ndarray):
    codes, mask, _ = history_arrays(data, split, rows)
    return (torch.from_numpy(split.target[rows]), torch.from_numpy(codes), torch.from_numpy(mask),
            torch.from_numpy(split.label[rows]))


def train_batches(data: DINData, cfg: DINConfig, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffled training batches ``(target, history, mask, label)``; the order depends on (seed, epoch) only.

    Length bucketing, as SASRec's: the shuffled rows are cut into groups of ``BUCKET_BATCHES``
    batches, each group is sorted by history length and cut into batches, the batches are
    shuffled, and each batch is padded to its own longest history. Padding changes no output
    (tested), and short histories (KuaiRand: 4.6 clicks per user) then cost little.
    """
    tr = data.splits["train"]
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(len(tr))
    lengths = tr.hist_len
    group = cfg.batch_size * BUCKET_BATCHES
    batches = []
    for g in range(0, len(order), group):
        chunk = order[g : g + group]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + cfg.batch_size] for i in range(0, len(chunk), cfg.batch_size)]
    for k in rng.permutation(len(batches)):
        yield _tensors(data, tr, np.sort(batches[k]))


def loss_of(model: DIN, batch) -> torch.Tensor:
    target, history, mask, label = batch
    return nn.functional.binary_cross_entropy_with_logits(model(target, history, mask), label)


@torch.no_grad()
def predict(model: DIN, data: DINData, split: Impressions, batch: int = 4_096) -> np.ndarray:
    """Logits of every impression of ``split`` (evaluation mode), in row order."""
    model.eval()
    out = np.zeros(len(split), np.float64)
    by_length = np.argsort(split.hist_len, kind="stable")  # similar lengths together: less padding
    for i in range(0, len(split), batch):
        rows = np.sort(by_length[i : i + batch])
        target, history, mask, _ = _tensors(data, split, rows)
        out[rows] = model(target, history, mask).double().numpy()
    return out


def evaluate_logits(split: Impressions, logits: np.ndarray) -> dict[str, float]:
    """gAUC (impression-weighted), AUC and logloss of ``sigmoid(logits)`` against the clicks."""
    y = split.label.astype(bool)
    prob = 1.0 / (1.0 + np.exp(-logits))
    return {
        "gauc": M.gauc_impressions(split.users, y, logits),
        "auc": M.auc(y, logits),
        "logloss": M.logloss(y, prob),
        "rows": float(len(split)),
        "click_rate": float(y.mean()) if len(y) else float("nan"),
    }


def train_on_data(cfg: DINConfig, data: DINData, write_run: bool = True):
    """Train and evaluate ``cfg`` on loaded data (the benchmark loads once per data set)."""
    from trainers.loop import deterministic, fit, measure_loader
    from trainers.runs import RunResult, save_run

    with deterministic(cfg.seed, cfg.threads) as environment:
        loader_sps = measure_loader(train_batches(data, cfg, 0), lambda b: len(b[0]))
        model = DIN([e.cardinality for e in (data.encoder.encoders[f] for f in data.fields)], cfg)
        t0 = time.perf_counter()
        res = fit(
            model, loss_of, lambda epoch: train_batches(data, cfg, epoch),
            lambda m: evaluate_logits(data.splits["valid"], predict(m, data, data.splits["valid"], cfg.eval_batch)),
            cfg.select_metric, maximize=cfg.select_metric not in LOWER_IS_BETTER, epochs=cfg.epochs,
            patience=cfg.patience, lr=cfg.lr, weight_decay=cfg.weight_decay, progress=cfg.progress, desc=MODEL_NAME,
        )
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        test = evaluate_logits(data.splits["test"], predict(model, data, data.splits["test"], cfg.eval_batch))
        eval_s = time.perf_counter() - t1
    metrics = {
        "valid": res.best_metrics,
        "test": test,
        "best_epoch": res.best_epoch,
        "epochs_run": res.epochs_run,
        "stopped_early": res.stopped_early,
        "select_metric": cfg.select_metric,
        "history": res.history,
        "rows": {k: len(s) for k, s in data.splits.items()},
        "mean_history_len": {k: float(s.hist_len.mean()) for k, s in data.splits.items()},
        "windows": {k: [a.isoformat(), b.isoformat()] for k, (a, b) in data.windows.items()},
        "fields": data.fields,
        "throughput": {
            "read_s": data.read_s,
            "loader_samples_per_s": loader_sps,
            "train_samples_per_s": res.train_samples_per_s,
            "eval_samples_per_s": len(data.splits["test"]) / eval_s if eval_s > 0 else float("nan"),
            "fit_wall_s": fit_s,
        },
    }
    config = cfg.model_dump(mode="json")
    run_dir = None
    if write_run:
        encoders = encoders_record(data.encoder, EVENTS_TABLE, data.windows["train"])
        run_dir = save_run(cfg.runs_root, MODEL_NAME, config, environment, encoders, model.state_dict(),
                            metrics, cfg.warehouse, data.tables)
    return RunResult(MODEL_NAME, run_dir, metrics, data.tables, config)


def train(cfg: DINConfig):
    """Load, then train with the versions read pinned until the run directory pins them."""
    from trainers.runs import pinned_while_training

    data = load_din_data(cfg)
    with pinned_while_training(cfg.warehouse, data.tables, MODEL_NAME):
        return train_on_data(cfg, data)


def tables(cfg: DINConfig | None = None) -> list[str]:
    return [EVENTS_TABLE, ITEMS_TABLE] if cfg is None or cfg.item_fields else [EVENTS_TABLE]


def _register() -> None:
    from trainers.registry import ModelSpec, register

    register(
        ModelSpec(
            name=MODEL_NAME,
            config_cls=DINConfig,
            train=train,
            tables=tables,
            description="DIN click-through model on events (point-in-time histories), optional CAPE in its target attention",
            select_metric="gauc",
        )
    )


_register()
