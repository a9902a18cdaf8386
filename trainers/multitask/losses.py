"""ESMM losses over the exposure space.

The multi-task models (``conditional``) give the click's logit ``l_0`` and, for every other
task k, the logit of ``p(task k | click)``; the exposure-space probability of task k is
``p_k = σ(l_0) · σ(l_k)`` (ESMM's pCTCVR = pCTR · pCVR), trained against the exposure-space
label ``click ∧ task`` on every impression, so the conditional towers are never trained on the
click-selected rows alone (no sample selection bias). The single-task models give ``p_k = σ(l_k)``.

Computed in log space: ``log p_k = logsigmoid(l_0) + logsigmoid(l_k)`` and
``log(1 − p_k) = log(−expm1(log p_k))`` (``logsigmoid(−l)`` exactly for a plain sigmoid).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

#: log p is clamped to at most this before log(1 - p) (p = 1 - 1e-7 at most).
_MAX_LOG_P = -1e-7


def exposure_log_probs(logits: torch.Tensor, conditional: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p, log(1 - p))`` [B, K] of the exposure-space probabilities."""
    ls = F.logsigmoid(logits)
    if not conditional or logits.shape[1] == 1:
        return ls, F.logsigmoid(-logits)
    click = ls[:, :1]
    logp_rest = click + ls[:, 1:]
    log1mp_rest = torch.log(-torch.expm1(logp_rest.clamp(max=_MAX_LOG_P)))
    return torch.cat([click, logp_rest], 1), torch.cat([F.logsigmoid(-logits[:, :1]), log1mp_rest], 1)


def exposure_probs(logits: torch.Tensor, conditional: bool) -> torch.Tensor:
    return exposure_log_probs(logits, conditional)[0].exp()


def task_losses(logits: torch.Tensor, y: torch.Tensor, conditional: bool) -> torch.Tensor:
    """Mean binary cross-entropy per task [K] of the exposure-space probabilities against ``y`` [B, K]."""
    logp, log1mp = exposure_log_probs(logits, conditional)
    return -(y * logp + (1 - y) * log1mp).mean(0)
