"""RAR's co-interaction module and the two backbones it plugs into (DeepFM, DIN).

The backbones are the project's own (``trainers.watch_time.models.DeepFM``,
``trainers.din.model.DIN``), subclassed only to take RAR's vector ``r`` as one more input of their
deep part: DeepFM's MLP sees ``[field embeddings, r]``, DIN's tower ``[target, pooled history, r]``.
With no source (``r`` absent) each is exactly its backbone.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from trainers.din.config import DINConfig
from trainers.din.model import DIN, MLP
from trainers.rar.config import RARConfig
from trainers.rar.selection import exact_topk, simhash_planes, simhash_topk
from trainers.watch_time.models import DeepFM


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension among ``mask``; all-masked rows give zeros (not NaN)."""
    s = scores.masked_fill(~mask, float("-inf"))
    any_real = mask.any(-1, keepdim=True)
    w = torch.softmax(torch.where(any_real, s, torch.zeros_like(s)), dim=-1)
    return torch.where(mask, w, torch.zeros_like(w))


class SetAttention(nn.Module):
    """One set attending over another: ``q + softmax(Q K^T / sqrt(d)) V`` (keys masked; a query
    with no real key keeps itself)."""

    def __init__(self, dim: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        s = torch.einsum("bqd,bkd->bqk", self.q(queries), self.k(keys)) * self.scale
        w = masked_softmax(s, key_mask[:, None, :].expand_as(s))
        return queries + torch.einsum("bqk,bkd->bqd", w, self.v(keys))


def target_pool(target: torch.Tensor, elements: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ_j softmax_j(<t, e_j> / sqrt(d)) e_j`` over the real elements (zeros when there are none)."""
    s = (elements * target[:, None, :]).sum(-1) / math.sqrt(target.shape[-1])
    return (masked_softmax(s, mask)[..., None] * elements).sum(1)


class CoInteraction(nn.Module):
    """Set-to-set co-interaction of the user set ``U`` (the user and its look-alikes) and the
    selected recall items ``I``.

    Both sets are projected to ``dim``. With both sources each set attends over the other
    (``U' = U + Attn(U, I)``, ``I' = I + Attn(I, U)``: the look-alikes read the items and the items
    the look-alikes); with one source the set attends over itself. Each set is then pooled with
    the target item as the query (:func:`target_pool`) and ``r = [pool(U'), pool(I')]``. The
    recall-item supervision logit is ``<pool(I'), t> + b``: the recall branch alone scoring the
    target, trained on the click (the joint loss).
    """

    def __init__(self, user_dim: int, item_dim: int, dim: int, sources: tuple[str, ...]):
        super().__init__()
        self.sources = tuple(sources)
        self.target = nn.Linear(item_dim, dim)
        if "u2u" in self.sources:
            self.users = nn.Linear(user_dim, dim)
            self.u_attn = SetAttention(dim)
        if "i2i" in self.sources:
            self.items = nn.Linear(item_dim, dim)
            self.i_attn = SetAttention(dim)
            self.aux_bias = nn.Parameter(torch.zeros(1))
        self.out_dim = dim * len(self.sources)

    def forward(self, target, users=None, user_mask=None, items=None, item_mask=None):
        t = self.target(target)
        u = self.users(users) if users is not None else None
        i = self.items(items) if items is not None else None
        if u is not None and i is not None:
            u2, i2 = self.u_attn(u, i, item_mask), self.i_attn(i, u, user_mask)
        else:
            u2 = self.u_attn(u, u, user_mask) if u is not None else None
            i2 = self.i_attn(i, i, item_mask) if i is not None else None
        parts, aux = [], None
        if u2 is not None:
            parts.append(target_pool(t, u2, user_mask))
        if i2 is not None:
            pooled = target_pool(t, i2, item_mask)
            parts.append(pooled)
            aux = (pooled * t).sum(-1) + self.aux_bias
        return torch.cat(parts, dim=-1), aux


class RARDeepFM(DeepFM):
    """DeepFM whose MLP also reads RAR's ``r`` (``extra`` wide); ``r=None``: DeepFM itself."""

    def __init__(self, cardinalities, embed_dim: int, mlp_dims, dropout: float, extra: int = 0):
        super().__init__(cardinalities, embed_dim, mlp_dims, dropout)
        if extra:
            first = self.mlp[0]
            self.mlp[0] = nn.Linear(first.in_features + extra, first.out_features)

    def forward(self, x: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(x)
        deep = e.flatten(1) if r is None else torch.cat([e.flatten(1), r], dim=-1)
        return self.fm_score(x, e) + self.mlp(deep).squeeze(1)


class RARDIN(DIN):
    """DIN whose tower also reads RAR's ``r`` (``extra`` wide); ``r=None``: DIN itself."""

    def __init__(self, cardinalities, cfg: DINConfig, extra: int = 0):
        super().__init__(cardinalities, cfg)
        if extra:
            dim = cfg.embed_dim * len(cardinalities)
            self.tower = MLP(2 * dim + extra, tuple(cfg.tower_units), cfg.activation, cfg.dropout)
            for m in self.tower.modules():  # DIN's Linear init
                if isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, target, history, mask, r: torch.Tensor | None = None) -> torch.Tensor:
        t = self.embed(target)
        pooled, _ = self.attention(t, self.embed(history), mask)
        z = [t, pooled] if r is None else [t, pooled, r]
        return self.tower(torch.cat(z, dim=-1))[:, 0]


def din_model_config(cfg: RARConfig) -> DINConfig:
    return DINConfig(embed_dim=cfg.embed_dim, max_len=cfg.max_len, attention_units=cfg.attention_units,
                     tower_units=cfg.tower_units, activation=cfg.activation, dropout=cfg.dropout)


class RAR(nn.Module):
    """A backbone with RAR plugged in (``cfg.sources``; none: the bare backbone).

    ``forward(batch)`` returns ``(logit [B], aux [B] or None)``. ``batch`` holds ``target``
    (item field codes ``[B, F]``), ``user`` (RAR user codes ``[B]``), ``lookalikes`` ``[B, k_users]``,
    ``pool`` (item field codes ``[B, P, F]``, all 0 at pads) and, for DIN, ``history`` / ``mask``.
    The ``k_items`` recall items are chosen inside the forward pass, without gradient, by SimHash
    (or the exact cosine) between the current item embeddings of the target and of the pool.
    """

    def __init__(self, item_cardinalities: list[int], n_users: int, cfg: RARConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone_name = cfg.backbone
        self.n_item_fields = len(item_cardinalities)
        item_dim = cfg.embed_dim * self.n_item_fields
        self.co = CoInteraction(cfg.rar_dim, item_dim, cfg.rar_dim, cfg.sources) if cfg.sources else None
        extra = self.co.out_dim if self.co is not None else 0
        if cfg.backbone == "deepfm":
            self.backbone = RARDeepFM([n_users, *item_cardinalities], cfg.embed_dim, cfg.mlp_dims, cfg.dropout, extra)
        elif cfg.backbone == "din":
            self.backbone = RARDIN(item_cardinalities, din_model_config(cfg), extra)
        else:
            raise ValueError(f"backbone must be deepfm or din, got {cfg.backbone!r}")
        if cfg.uses_u2u:
            self.user_emb = nn.Embedding(n_users, cfg.rar_dim)
            nn.init.normal_(self.user_emb.weight, std=0.01)
        if cfg.uses_i2i and cfg.selection == "simhash":
            try:
                planes = simhash_planes(item_dim, cfg.simhash_groups, cfg.simhash_bits, cfg.seed)
            except ValueError as exc:
                raise ValueError(f"{exc} (embed_dim x item fields read)") from None
            for g, p in enumerate(planes):
                self.register_buffer(f"plane_{g}", p)
            self.n_planes = len(planes)

    def planes(self) -> list[torch.Tensor]:
        return [getattr(self, f"plane_{g}") for g in range(self.n_planes)]

    def item_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Item vectors ``[..., fields * embed_dim]`` of item field codes ``[..., fields]`` (the backbone's embeddings)."""
        if self.backbone_name == "deepfm":
            emb = self.backbone.embed
            e = emb.embedding(codes + emb.offsets[1:])
            return e.flatten(-2)
        return self.backbone.embed(codes)

    def select_items(self, target_vec: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k_items`` pool entries most similar to the target: their codes ``[B, k, F]`` and mask."""
        mask = pool.any(-1)
        with torch.no_grad():
            pv = self.item_vectors(pool)
            if self.cfg.selection == "simhash":
                idx, m = simhash_topk(target_vec.detach(), pv, mask, self.cfg.k_items, self.planes())
            else:
                idx, m = exact_topk(target_vec.detach(), pv, mask, self.cfg.k_items)
        codes = torch.gather(pool, 1, idx[..., None].expand(-1, -1, pool.shape[-1]))
        return codes, m

    def forward(self, batch: dict[str, torch.Tensor]):
        target = batch["target"]
        r = aux = None
        if self.co is not None:
            t = self.item_vectors(target)
            users = user_mask = items = item_mask = None
            if self.cfg.uses_u2u:
                codes = torch.cat([batch["user"][:, None], batch["lookalikes"]], dim=1)
                users, user_mask = self.user_emb(codes), codes > 0
            if self.cfg.uses_i2i:
                sel, item_mask = self.select_items(t, batch["pool"])
                items = self.item_vectors(sel)
            r, aux = self.co(t, users, user_mask, items, item_mask)
        if self.backbone_name == "deepfm":
            x = torch.cat([batch["user"][:, None], target], dim=1)
            return self.backbone(x, r), aux
        return self.backbone(target, batch["history"], batch["mask"], r), aux


def selected_items(model: RAR, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """Codes of the items :meth:`RAR.select_items` picks for ``batch`` (for inspection and tests)."""
    codes, mask = model.select_items(model.item_vectors(batch["target"]), batch["pool"])
    return np.where(mask[..., None].numpy(), codes.numpy(), 0)
