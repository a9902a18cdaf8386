"""CAPE: contextual-aware position encoding (Yuan, Cai and Dong, WWW'25 companion, arXiv 2502.09027).

A key's position, seen from a query, is counted by context instead of by slot: every key from
it to the end of the row adds a gate that says how *dissimilar* the query is to that key, and
the (fractional) count is read from a learned table by linear interpolation. The result is
added to the attention logits before the softmax (self-attention) or to the attention scores
(DIN-style target attention). Spec: ``shared/specs/sequences.md`` section 2; official code:
``yjdy/CAPE`` @ ``4414d78``, ``fuxictr/pytorch/layers/attentions/position_encoding.py``.

For a query ``i`` and keys ``j`` of one row, with ``a_ij`` the attention logits already scaled
by ``1/sqrt(d)`` and masked::

    g_ij = 1 - sigmoid(a_ij)                         gate: 1 = dissimilar, 0 = similar
    p_ij = min(sum_{k >= j} g_ik, T - 1)             suffix sum to the end of the row, clamped
    e_it = silu(W q_i + b) . P[:, t]                 P: a C x T table, zero-initialised
    E_ij = (p - floor p) e_i,ceil(p) + (1 - (p - floor p)) e_i,floor(p)

``T`` is the table length (``max_len``), ``C`` the position dimension (``pos_dim``).

Choices of ours (the official code has one head and one reading of masked keys):

* **Heads.** Computed per head: each head has its own projection ``W_h: head_dim -> C`` and its
  own table ``P_h``; the query of head ``h`` is the per-head query the attention uses. With one
  head this is exactly the official computation (``pre_proj`` = Linear + SiLU, table ``1 x C x T``),
  tested against a transcription of it. The official self-attention path passes per-head
  queries to a projection sized for the whole embedding, so it only lines up with one head.
* **Masked keys** (``masked_keys``). ``"add"`` (official): a masked key's gate is computed from
  the logit it was given and adds to the sum like any other, so with ``-inf`` logits every
  causally masked (future) key adds 1 and every post-padding slot adds its gate (DIN's pads
  have logit 0: 0.5 each). Positions then depend on the row width and on the padding side.
  ``"ignore"`` (ours, the default): masked keys add nothing, so ``p_ij`` counts only the keys
  the query may see, and the output is the same for left and right padding and for any
  number of padding columns.
* **Padding side.** The module takes the key mask, so it works with either side. Under
  ``"ignore"`` both sides give identical positions; under ``"add"`` they differ exactly as in
  the official code (pre-padding puts pads before the real keys, where they add to no real
  key's sum; post-padding puts them after, where they add to all).

**Target attention** (DIN, :meth:`CAPE.target_attention`): the target item is the single query
(``Lq = 1``, one head, ``query_dim`` the item vector size) and the logits are the attention
scores of the history items, with pads set to 0 as the official DIN path multiplies them by the
mask (so under ``"add"`` each pad's gate is 0.5). The official code repeats the target along the
sequence (spec section 2.3), one identical query per key; one query gives the same ``E``.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

MaskedKeys = Literal["ignore", "add"]
MASKED_KEYS = ("ignore", "add")


def contextual_positions(
    logits: torch.Tensor, allowed: torch.Tensor | None, max_len: int, masked_keys: MaskedKeys = "ignore"
) -> torch.Tensor:
    """``p_ij``: the clamped suffix sums of the gates ``1 - sigmoid(a_ij)`` (see the module docstring).

    ``logits``: ``[..., Lq, Lk]``; ``allowed``: bool, broadcastable to it (True where the query
    may see the key), or ``None`` (every key counts). Returns a float tensor of ``logits``' shape
    with values in ``[0, max_len - 1]``.
    """
    if masked_keys not in MASKED_KEYS:
        raise ValueError(f"masked_keys must be one of {MASKED_KEYS}, got {masked_keys!r}")
    gates = 1.0 - torch.sigmoid(logits)
    if allowed is not None and masked_keys == "ignore":
        gates = gates.masked_fill(~allowed, 0.0)
    return gates.flip(-1).cumsum(-1).flip(-1).clamp(max=max_len - 1)


def interpolate(table_logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``E_ij``: row ``i`` of ``table_logits`` (``[..., Lq, T]``) read at the fractional ``p_ij``."""
    lo = positions.floor()
    frac = positions - lo
    lo_i = lo.long()
    hi_i = positions.ceil().long()
    return frac * table_logits.gather(-1, hi_i) + (1.0 - frac) * table_logits.gather(-1, lo_i)


class CAPE(nn.Module):
    """Per-head contextual position logits to add to attention logits.

    ``query_dim``: the per-head query size; ``max_len``: the table length ``T`` (the longest
    context, the official ``max_sequence_length``); ``pos_dim``: ``C``; ``heads``: one projection
    and one table per head. ``forward(q, logits, allowed)`` takes per-head queries
    ``[B, H, Lq, query_dim]`` and the scaled, masked logits ``[B, H, Lq, Lk]`` and returns
    ``E`` of the logits' shape. The table starts at zero, so an untrained CAPE adds nothing.
    """

    def __init__(self, query_dim: int, max_len: int, pos_dim: int = 16, heads: int = 1,
                 masked_keys: MaskedKeys = "ignore"):
        super().__init__()
        if masked_keys not in MASKED_KEYS:
            raise ValueError(f"masked_keys must be one of {MASKED_KEYS}, got {masked_keys!r}")
        if max_len < 1 or pos_dim < 1 or heads < 1 or query_dim < 1:
            raise ValueError("CAPE needs query_dim, max_len, pos_dim and heads >= 1")
        self.max_len, self.pos_dim, self.heads, self.masked_keys = max_len, pos_dim, heads, masked_keys
        self.weight = nn.Parameter(torch.empty(heads, query_dim, pos_dim))
        self.bias = nn.Parameter(torch.empty(heads, pos_dim))
        self.table = nn.Parameter(torch.zeros(heads, pos_dim, max_len))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The projection as ``nn.Linear`` initialises itself (per head); the table at zero."""
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        with torch.no_grad():
            for h in range(self.heads):
                w = torch.empty(self.pos_dim, self.weight.shape[1])
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
                self.weight[h].copy_(w.T)
            self.bias.uniform_(-bound, bound)
            self.table.zero_()

    def table_logits(self, q: torch.Tensor) -> torch.Tensor:
        """``e_it`` = silu(W_h q_i + b_h) . P_h[:, t], ``[B, H, Lq, T]``."""
        if q.dim() != 4 or q.shape[1] != self.heads:
            raise ValueError(f"CAPE expects per-head queries [batch, {self.heads}, Lq, dim], got {tuple(q.shape)}")
        z = torch.nn.functional.silu(torch.einsum("bhqd,hdc->bhqc", q, self.weight) + self.bias[None, :, None, :])
        return torch.einsum("bhqc,hct->bhqt", z, self.table)

    def forward(self, q: torch.Tensor, logits: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        positions = contextual_positions(logits, allowed, self.max_len, self.masked_keys)
        return interpolate(self.table_logits(q), positions)

    def target_attention(self, target: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``E`` ``[B, L]`` for target attention: ``target`` ``[B, D]`` queries history scores ``[B, L]``.

        ``mask`` (bool ``[B, L]``) is True at real history items. Pads' scores are set to 0
        before the gates (the official DIN path); under ``"ignore"`` they add nothing, so the
        real items' ``E`` does not depend on the padding. Needs ``heads == 1``.
        """
        if self.heads != 1:
            raise ValueError(f"target attention has one query per row: CAPE needs heads=1, has {self.heads}")
        if target.dim() != 2 or scores.shape != mask.shape or scores.shape[0] != target.shape[0]:
            raise ValueError(
                f"expected target [batch, dim] and scores, mask [batch, L]; got {tuple(target.shape)}, "
                f"{tuple(scores.shape)}, {tuple(mask.shape)}"
            )
        logits = scores.masked_fill(~mask, 0.0)[:, None, None, :]
        return self(target[:, None, None, :], logits, mask[:, None, None, :])[:, 0, 0]
