"""Multi-level rotary time embedding (RoTE) for attention queries and keys.

RoTE (SIGIR'26, arXiv 2604.13389; official code ``XiaoLongtaoo/RoTE`` @ ``11ea986``,
``code/modules/rotary_time_embedding.py`` and ``fusion.py``) rotates each per-head query and key
vector by the time of its item, once per time level, and sums the rotated copies with fixed
weights:

    omega[l, i] = base_l ** (-2 i / d_head)                 i = 0 .. d_head/2 - 1
    R_l(x)[2i], R_l(x)[2i+1] = rotation of the pair (x[2i], x[2i+1]) by angle t_l * omega[l, i]
    x' = sum_l weight_l * R_l(x)                            (paper: 1.5 year + 1.0 month + 0.5 day)

Pairs are interleaved (even, odd), not the half-split RoPE layout. Only Q and K are rotated,
after their linear projections, in every layer; V is not.

Each single rotation is orthogonal (it preserves norms) and a single level's score
``R(q, t1) . R(k, t2)`` depends only on ``t1 - t2``; the weighted sum over several levels keeps
neither property exactly (cross-level terms), which is the official design.

Precision: the official code builds the angles in float32 from float32 unix seconds, whose
spacing near 1.7e9 s is 128 s, and angles of ~2e4 radians (days since 1970 at the day level's
fastest frequency) lose about 1e-3 rad. Here angles and their cos / sin are computed in float64
and only then cast to the model's dtype.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

#: Official bases and fusion weights (``code/modules/fusion.py``).
YEAR_BASE, MONTH_BASE, DAY_BASE = 1_000_000.0, 10_000.0, 100.0
YEAR_WEIGHT, MONTH_WEIGHT, DAY_WEIGHT = 1.5, 1.0, 0.5


@dataclass(frozen=True)
class Level:
    """One time level: the name of its value array, its frequency base and its fusion weight."""

    name: str
    base: float
    weight: float


#: The paper's levels, fed with the SASRec form of ``features.sequences.rote.sasrec_levels``.
PAPER_LEVELS: tuple[Level, ...] = (
    Level("years_f", YEAR_BASE, YEAR_WEIGHT),
    Level("months_f", MONTH_BASE, MONTH_WEIGHT),
    Level("days_f", DAY_BASE, DAY_WEIGHT),
)
#: Ours, beyond the paper: the paper's levels plus whole hours since the epoch
#: (``features.sequences.rote.calendar_ids`` level ``hour``). Base 100 as the day level (fastest period
#: 2 pi hours, slowest about 22 days) and weight 0.25, continuing the halving 1.0 -> 0.5; the
#: paper gives no guidance for levels finer than a day.
FINER_LEVELS: tuple[Level, ...] = PAPER_LEVELS + (Level("hour_id", 100.0, 0.25),)
LEVEL_SETS: dict[str, tuple[Level, ...]] = {"paper": PAPER_LEVELS, "finer": FINER_LEVELS}


def inv_freq(head_dim: int, base: float) -> torch.Tensor:
    """float64 ``base ** (-2 i / head_dim)`` for ``i = 0 .. head_dim/2 - 1``."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
    if base <= 0:
        raise ValueError(f"base must be positive, got {base}")
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))


def cos_sin(t: torch.Tensor, freqs: torch.Tensor, dtype: torch.dtype = torch.float32):
    """cos and sin of the angles ``t[..., None] * freqs`` (computed in float64), as ``dtype``."""
    theta = t.to(torch.float64)[..., None] * freqs.to(torch.float64)
    return theta.cos().to(dtype), theta.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs ``(x[..., 2i], x[..., 2i+1])`` by the angles behind cos / sin.

    ``cos`` and ``sin`` have ``x``'s shape with the last dimension halved (broadcastable).
    """
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class MultiLevelRotary(torch.nn.Module):
    """``x' = sum_l w_l R_l(x)`` for per-head vectors ``x`` [batch, heads, positions, head_dim].

    No parameters. :meth:`cache` turns level values ``{name: [batch, positions]}`` into the
    cos / sin tables once per forward pass; :meth:`forward` applies them (to Q and to K).
    """

    def __init__(self, head_dim: int, levels: Sequence[Level] = PAPER_LEVELS):
        super().__init__()
        if not levels:
            raise ValueError("at least one level is needed")
        self.head_dim = head_dim
        self.levels = tuple(levels)
        for lv in self.levels:
            self.register_buffer(f"inv_{lv.name}", inv_freq(head_dim, lv.base), persistent=False)

    def cache(self, values: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32):
        """Per level (weight, cos, sin), cos / sin shaped [batch, 1, positions, head_dim / 2]."""
        missing = [lv.name for lv in self.levels if lv.name not in values]
        if missing:
            raise KeyError(f"missing time level(s) {missing}")
        out = []
        for lv in self.levels:
            c, s = cos_sin(values[lv.name], getattr(self, f"inv_{lv.name}"), dtype)
            out.append((lv.weight, c.unsqueeze(1), s.unsqueeze(1)))
        return out

    def forward(self, x: torch.Tensor, cache) -> torch.Tensor:
        total = None
        for weight, c, s in cache:
            part = weight * rotate(x, c, s)
            total = part if total is None else total + part
        return total
