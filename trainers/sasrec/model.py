"""The SASRec network: self-attention blocks with optional RoTE rotation and CAPE positions."""
from __future__ import annotations

import math

import torch
from torch import nn

from trainers.cape import CAPE
from trainers.rotary import LEVEL_SETS, MultiLevelRotary
from trainers.sasrec.config import SASRecConfig
from trainers.sequences import PAD

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
