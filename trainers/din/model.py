"""The DIN network: Dice and PReLU, the MLPs, the target attention (optionally with CAPE), DIN."""
from __future__ import annotations

import torch
from torch import nn

from trainers.cape import CAPE
from trainers.din.config import DINConfig

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
        # p x + alpha (1 - p) x is computed as x (alpha + (1 - alpha) p), the variance as the mean
        # squared deviation (two passes) and the scale as rsqrt: the same function in fewer
        # full-size operations (torch's ``var`` over dimension 0 is many times slower than a mean).
        centred = None
        if self.training:
            rows = x.reshape(-1, x.shape[-1])
            if mask is not None:
                rows = rows[mask.reshape(-1)]
            n = rows.shape[0]
            if n == 0:  # no real row: nothing to estimate from
                mean, var = self.running_mean, self.running_var
            else:
                mean = rows.mean(0)
                dev = rows - mean
                var = (dev * dev).mean(0)
                if mask is None:
                    centred = dev.view_as(x)
                with torch.no_grad():
                    self.running_mean.lerp_(mean.detach(), self.momentum)
                    if n > 1:
                        self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        if centred is None:
            centred = x - mean
        p = torch.sigmoid(centred * torch.rsqrt(var + self.eps))
        return x * torch.addcmul(self.alpha, p, 1 - self.alpha)


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
        return self.after_first(self.first(x), mask)

    @property
    def first(self) -> nn.Linear:
        """The first Linear (the output layer when there is no hidden one)."""
        return self.linears[0] if len(self.linears) else self.out

    def after_first(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The rest of :meth:`forward` given the first Linear's output ``x``."""
        if not len(self.linears):
            return x
        for k, (lin, act) in enumerate(zip(self.linears, self.acts)):
            if k:
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
        """``a`` ``[B, L]``: the unit's score of every real history item, 0 at pads.

        The unit runs on the real items only (packed, in row-major order), and its first Linear
        over ``[h, t, h - t, h * t]`` is applied in its split form
        ``h (W_h + W_d)ᵀ + (h * t) W_pᵀ + [t (W_t - W_d)ᵀ + b]`` with the target's part computed
        once per row: the same function as :meth:`scores_reference` (up to float rounding) at
        about half the multiply-adds, and pads cost nothing.
        """
        b, length, d = history.shape
        real = mask.reshape(-1).nonzero().squeeze(1)  # flat positions of the real items, row-major
        rows = real // length  # the row (target) of each
        h = history.reshape(-1, d).index_select(0, real)
        first = self.unit.first
        w_h, w_t, w_d, w_p = first.weight.split(d, dim=1)
        per_target = nn.functional.linear(target, w_t - w_d, first.bias)
        x = (nn.functional.linear(h, w_h + w_d) + nn.functional.linear(h * target.index_select(0, rows), w_p)
             + per_target.index_select(0, rows))
        a = self.unit.after_first(x)[:, 0]
        return history.new_zeros(b * length).index_copy(0, real, a).view(b, length)

    def scores_reference(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:meth:`scores` as written in the paper: the unit on every position of the
        concatenation ``[h, t, h - t, h * t]``, Dice statistics over the real items, pads set to 0."""
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
