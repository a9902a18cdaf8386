"""The FAIR network: a Transformer over code tokens with focused (differential) attention,
parallel prediction of the next item's tokens, and its three losses (docs/fair.md).

Focused attention (Differential Transformer form, Ye et al. 2024; the FAIR summaries describe
"two separate sets of Q/K projections whose softmax maps are subtracted"): per head

    A1 = softmax(Q1 K1ᵀ / √d), A2 = softmax(Q2 K2ᵀ / √d)     (causal and key-padding masked)
    λ  = exp(λq1 · λk1) − exp(λq2 · λk2) + λ_init
    O  = RMSNorm((A1 − λ A2) V) · (1 − λ_init)

with λ_init = 0.8 − 0.6 exp(−0.3 layer) (0-based layer) unless configured; the λ vectors (one
set per layer, shared by its heads) start at N(0, 0.1²). ``attention: standard`` is SASRec's
single map without the norm. Every choice of dimension, normalisation and initialisation is
ours: no FAIR code is public (spec section 4).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from trainers.fair.config import FAIRConfig
from trainers.sasrec.model import FeedForward, attention_allowed, position_ids

NO_CODE_SCORE = -1e30


def lambda_init_of(layer: int) -> float:
    """The Differential Transformer's depth schedule ``0.8 - 0.6 exp(-0.3 layer)`` (0-based)."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


def masked_softmax(q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)


def differential_attention(q1, k1, q2, k2, v, allowed, lam, lambda_init: float = 0.0, head_norm: bool = True,
                           dropout: nn.Module | None = None) -> torch.Tensor:
    """``(A1 − λ A2) V`` per head ([batch, heads, L, d] inputs), RMS-normalised per head and
    scaled by ``1 − λ_init`` when ``head_norm``. With ``lam = 0`` and no norm this is standard
    softmax attention with ``q1``, ``k1`` (tested)."""
    weights = masked_softmax(q1, k1, allowed) - lam * masked_softmax(q2, k2, allowed)
    if dropout is not None:
        weights = dropout(weights)
    out = weights @ v
    if head_norm:
        out = F.rms_norm(out, (out.shape[-1],), eps=1e-5) * (1.0 - lambda_init)
    return out


class FocusedAttention(nn.Module):
    """Multi-head self-attention: ``focused`` (differential) or ``standard`` (one map)."""

    def __init__(self, hidden: int, heads: int, dropout: float, focused: bool, lambda_init: float):
        super().__init__()
        self.heads, self.head_dim, self.focused = heads, hidden // heads, focused
        self.q1, self.k1, self.v, self.out = (nn.Linear(hidden, hidden) for _ in range(4))
        self.drop = nn.Dropout(dropout)
        self.lambda_init = float(lambda_init)
        if focused:
            self.q2, self.k2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
            self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
                nn.Parameter(torch.randn(self.head_dim) * 0.1) for _ in range(4))

    def lam(self) -> torch.Tensor:
        return (torch.exp((self.lambda_q1 * self.lambda_k1).sum()) - torch.exp((self.lambda_q2 * self.lambda_k2).sum())
                + self.lambda_init)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, hidden = x.shape

        def split(t):
            return t.view(b, length, self.heads, self.head_dim).transpose(1, 2)

        q1, k1, v = split(self.q1(x)), split(self.k1(x)), split(self.v(x))
        if self.focused:
            o = differential_attention(q1, k1, split(self.q2(x)), split(self.k2(x)), v, allowed, self.lam(),
                                       self.lambda_init, True, self.drop)
        else:
            o = self.drop(masked_softmax(q1, k1, allowed)) @ v
        return self.out(o.transpose(1, 2).reshape(b, length, hidden))


class FAIR(nn.Module):
    """Items in, item scores out: inputs and targets are mapped to code tokens by ``codes``.

    ``codes``: int64 [n_items, K] (-1: item without a semantic ID), ``sizes``: tokens per level.
    Input item embedding = the mean of its K token embeddings (level ``j`` has its own table of
    ``sizes[j] + 1`` rows; the last row is the level's mask token, also used for items without a
    code) times ``sqrt(hidden)``, plus a learned position (SASRec's end-counted ids), dropout,
    ``blocks`` post-LN blocks, a last LayerNorm. Output: per level, a linear map of the hidden
    state dotted with that level's token table (tied), giving ``sizes[j]`` logits; the K
    tokens of the next item are predicted in parallel from the same state.
    """

    def __init__(self, codes, sizes, config: FAIRConfig):
        super().__init__()
        h = config.hidden
        self.config = config
        self.max_len = config.max_len
        self.sizes = tuple(int(s) for s in sizes)
        codes = torch.as_tensor(codes, dtype=torch.long)
        self.register_buffer("codes", codes, persistent=False)
        mask_rows = torch.tensor(self.sizes, dtype=torch.long)
        self.register_buffer("mask_token", mask_rows, persistent=False)
        self.register_buffer("input_tokens", torch.where(codes >= 0, codes, mask_rows), persistent=False)
        self.tok = nn.ModuleList(nn.Embedding(s + 1, h) for s in self.sizes)
        self.pos_emb = nn.Embedding(config.max_len + 1, h, padding_idx=0)
        self.emb_drop = nn.Dropout(config.dropout)
        lam = [config.lambda_init if config.lambda_init is not None else lambda_init_of(i) for i in range(config.blocks)]
        self.attn = nn.ModuleList(
            FocusedAttention(h, config.heads, config.dropout, config.attention == "focused", lam[i]) for i in range(config.blocks))
        self.attn_norm = nn.ModuleList(nn.LayerNorm(h, eps=1e-8) for _ in range(config.blocks))
        self.ffn = nn.ModuleList(FeedForward(h, config.dropout) for _ in range(config.blocks))
        self.ffn_norm = nn.ModuleList(nn.LayerNorm(h, eps=1e-8) for _ in range(config.blocks))
        self.last_norm = nn.LayerNorm(h, eps=1e-8)
        self.heads_out = nn.ModuleList(nn.Linear(h, h) for _ in self.sizes)
        self.mi_proj = nn.Linear(h, h)
        for name, p in self.named_parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.pos_emb.weight[0].zero_()

    # ----------------------------------------------------------------- encoder
    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., K] token ids (mask row allowed) -> [..., hidden] mean token embedding."""
        return torch.stack([t(tokens[..., j]) for j, t in enumerate(self.tok)], 0).mean(0)

    def encode_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(tokens) * math.sqrt(self.config.hidden)
        x = x + self.pos_emb(position_ids(mask, self.max_len))
        x = self.emb_drop(x) * mask[..., None]
        allowed = attention_allowed(mask)
        for attn, an, ffn, fn in zip(self.attn, self.attn_norm, self.ffn, self.ffn_norm):
            x = an(x + attn(x, allowed))
            x = fn(x + ffn(x))
        return self.last_norm(x)

    def logits(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Per level, [..., sizes[j]] logits of the next item's token."""
        return [head(h) @ t.weight[:s].T for head, t, s in zip(self.heads_out, self.tok, self.sizes)]

    def perturb(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each real token replaced with chance ``noise_prob``: by a random code of its level or the mask token."""
        hit = (torch.rand(tokens.shape) < self.config.noise_prob) & mask[..., None]
        if self.config.noise_kind == "mask":
            repl = self.mask_token.expand_as(tokens)
        else:
            u = torch.rand(tokens.shape)
            repl = (u * self.mask_token.to(u.dtype)).long().clamp_max(self.mask_token - 1)
        return torch.where(hit, repl, tokens)

    # ----------------------------------------------------------------- losses
    def losses(self, items: torch.Tensor, mask: torch.Tensor, positives: torch.Tensor) -> dict[str, torch.Tensor]:
        """``next``: mean over levels of the CE of the next item's token at every real position
        (targets without a code are ignored); ``noise``: mean over levels of
        KL(stop-gradient(clean) ‖ perturbed) at real positions; ``mi``: InfoNCE between the last
        position's state and its target's token embedding, in-batch negatives (rows with the
        same target are not negatives)."""
        tokens = self.input_tokens[items]
        h = self.encode_tokens(tokens, mask)
        real = mask & (positives > 0)
        tgt = self.codes[positives]  # -1 where the target has no code
        hr = h[real]
        logit = self.logits(hr)
        next_loss = torch.stack([F.cross_entropy(lg, tgt[real][:, j], ignore_index=-1)
                                 for j, lg in enumerate(logit)]).mean()
        out = {"next": next_loss}
        cfg = self.config
        if cfg.noise_weight > 0:
            hn = self.encode_tokens(self.perturb(tokens, mask), mask)[real]
            out["noise"] = torch.stack([
                F.kl_div(F.log_softmax(ln, -1), F.log_softmax(lc.detach(), -1), log_target=True, reduction="batchmean")
                for ln, lc in zip(self.logits(hn), logit)]).mean()
        if cfg.mi_weight > 0:
            last_t = positives[:, -1]
            ok = (last_t > 0) & (self.codes[last_t, 0] >= 0)
            if int(ok.sum()) > 1:
                z = F.normalize(self.mi_proj(h[ok, -1]), dim=-1)
                t = F.normalize(self.embed_tokens(self.input_tokens[last_t[ok]]), dim=-1)
                sim = z @ t.T / cfg.mi_temperature
                same = last_t[ok][:, None] == last_t[ok][None, :]
                sim = sim.masked_fill(same & ~torch.eye(len(z), dtype=torch.bool), float("-inf"))
                out["mi"] = F.cross_entropy(sim, torch.arange(len(z)))
        return out

    def loss(self, items, mask, positives) -> torch.Tensor:
        parts = self.losses(items, mask, positives)
        cfg = self.config
        return parts["next"] + cfg.noise_weight * parts.get("noise", 0.0) + cfg.mi_weight * parts.get("mi", 0.0)

    # ----------------------------------------------------------------- scoring
    def token_log_probs(self, items, mask) -> list[torch.Tensor]:
        """Per level, [batch, sizes[j]] log-probabilities of the next item's token at the last position."""
        h = self.encode_tokens(self.input_tokens[items], mask)[:, -1]
        return [F.log_softmax(lg, -1) for lg in self.logits(h)]

    def score_last(self, items, mask, levels=None) -> torch.Tensor:
        """[batch, n_items]: every item's summed token log-probability (the score of its full
        code sequence: exhaustive constrained decoding); items without a code get a floor of
        ``-1e30`` so they rank last."""
        lp = self.token_log_probs(items, mask)
        safe = self.codes.clamp_min(0)
        total = sum(l[:, safe[:, j]] for j, l in enumerate(lp))
        return torch.where(self.codes[:, 0] >= 0, total, torch.full_like(total, NO_CODE_SCORE))
