"""Base click models for ReLoop2, each exposing its last hidden layer as the memory key.

Two bases over the same impressions (:class:`trainers.din.DINData`: the date split, the
point-in-time click histories and the item encoders of the DIN trainer, fitted on the training
days):

- **DIN** (:class:`trainers.din.DIN`): the key is the input of the tower's output layer, i.e.
  the last hidden layer after its activation (``tower_units[-1]`` wide, 80 by default).
- **DeepFM** (:class:`trainers.watch_time.models.DeepFM`, the watch-time backbone with a click
  label): fields ``user_id`` (its own encoder, fitted on the training days' impressions, 0 for a
  user unseen there) and the DIN item fields of the target (``item_id``, ``author_id``,
  ``tag_pop``); no history. The key is the input of the MLP's output layer (the last of the
  ``mlp_dims`` hidden layers, after batch norm, ReLU and dropout; 64 wide by default). The FM
  part is not in the key: it has no hidden layer.

Both are trained with BCE on the logit, the keys read by a forward pre-hook on that layer
(:func:`logits_and_keys`), so the models themselves are unchanged.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainers.din import DIN, DINConfig, DINData, Impressions, history_arrays, train_batches
from trainers.watch_time.models import DeepFM


@dataclass(frozen=True)
class DeepFMSettings:
    """The click DeepFM (the watch-time DeepFM's torchfm defaults)."""

    embed_dim: int = 10
    mlp_dims: tuple[int, ...] = (64, 64, 64)
    dropout: float = 0.2


def concat_impressions(parts: list[Impressions]) -> Impressions:
    """One split of several (their windows index the same behaviour pool), rows in time order
    (ties kept in split order, then row order)."""
    cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in
           ("target", "label", "users", "ts_us", "hist_start", "hist_end", "event_ids")}
    order = np.argsort(cat["ts_us"], kind="stable")
    return Impressions(**{f: v[order] for f, v in cat.items()})


def logits_and_keys(model: nn.Module, key_layer: nn.Module, inputs: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """``model(*inputs)`` and the input of ``key_layer`` during that call (the last hidden layer)."""
    got: list[torch.Tensor] = []
    handle = key_layer.register_forward_pre_hook(lambda _m, args: got.append(args[0].detach()))
    try:
        logits = model(*inputs)
    finally:
        handle.remove()
    if len(got) != 1:
        raise RuntimeError(f"the key layer ran {len(got)} times in one forward pass (expected once)")
    return logits, got[0].reshape(logits.shape[0], -1)


class ClickBase:
    """A base model family on :class:`DINData`: batches, the model, the key layer."""

    name = "base"

    def __init__(self, data: DINData, cfg: DINConfig):
        self.data, self.cfg = data, cfg

    # subclasses
    def build(self) -> nn.Module:
        raise NotImplementedError

    def key_layer(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def inputs(self, split: Impressions, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        raise NotImplementedError

    # shared
    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        *inputs, label = batch
        return nn.functional.binary_cross_entropy_with_logits(model(*inputs), label)

    def batch(self, split: Impressions, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (*self.inputs(split, rows), torch.from_numpy(split.label[rows]))

    def key_dim(self, model: nn.Module) -> int:
        return int(self.key_layer(model).in_features)

    @torch.no_grad()
    def score(self, model: nn.Module, split: Impressions, rows: np.ndarray | None = None,
              batch: int = 4_096) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``[n]`` and keys ``[n, d]`` of ``rows`` (all by default), evaluation mode, row order."""
        model.eval()
        rows = np.arange(len(split)) if rows is None else np.asarray(rows)
        logits = np.zeros(len(rows), np.float64)
        keys = np.zeros((len(rows), self.key_dim(model)), np.float32)
        by_length = np.argsort(split.hist_len[rows], kind="stable")  # similar lengths together: less padding
        layer = self.key_layer(model)
        for i in range(0, len(rows), batch):
            pos = np.sort(by_length[i : i + batch])
            out, key = logits_and_keys(model, layer, self.inputs(split, rows[pos]))
            logits[pos], keys[pos] = out.double().numpy(), key.float().numpy()
        return logits, keys


class DINBase(ClickBase):
    name = "din"

    def build(self) -> nn.Module:
        return DIN([self.data.encoder.encoders[f].cardinality for f in self.data.fields], self.cfg)

    def key_layer(self, model: nn.Module) -> nn.Module:
        return model.tower.out

    def inputs(self, split: Impressions, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        codes, mask, _ = history_arrays(self.data, split, rows)
        return torch.from_numpy(split.target[rows]), torch.from_numpy(codes), torch.from_numpy(mask)

    def train_batches(self, epoch: int):
        return train_batches(self.data, self.cfg, epoch)


class DeepFMBase(ClickBase):
    name = "deepfm"

    def __init__(self, data: DINData, cfg: DINConfig, settings: DeepFMSettings = DeepFMSettings()):
        super().__init__(data, cfg)
        self.settings = settings
        # user encoder fitted on the training days' impressions: code -> 1..m, 0 for the rest
        seen = np.unique(data.splits["train"].users)
        n_users = int(max(int(s.users.max()) for s in data.splits.values()) + 1)
        self.user_index = np.zeros(n_users, np.int64)
        self.user_index[seen] = np.arange(1, len(seen) + 1)
        self.cardinalities = [len(seen) + 1] + [data.encoder.encoders[f].cardinality for f in data.fields]

    def build(self) -> nn.Module:
        s = self.settings
        return DeepFM(self.cardinalities, s.embed_dim, s.mlp_dims, s.dropout)

    def key_layer(self, model: nn.Module) -> nn.Module:
        return model.mlp[-1]

    def x(self, split: Impressions, rows: np.ndarray) -> np.ndarray:
        return np.concatenate([self.user_index[split.users[rows]][:, None], split.target[rows]], axis=1)

    def inputs(self, split: Impressions, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (torch.from_numpy(self.x(split, rows)),)

    def train_batches(self, epoch: int):
        tr = self.data.splits["train"]
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(tr))
        for i in range(0, len(order), self.cfg.batch_size):
            yield self.batch(tr, order[i : i + self.cfg.batch_size])


BASES: dict[str, type[ClickBase]] = {"din": DINBase, "deepfm": DeepFMBase}
