"""Losses of the watch-time labels. Every model outputs a raw score ``s``.

- Soft labels in [0, 1] (PCR, WTG = Φ(gain), D2Q, D²Co): BCE of σ(s) against the label, as the
  D²Co code trains them.
- Raw watch time: squared error of ``s`` against the standardised watch time (the mean and std of
  the training split; predictions map back with them).
- CWM (KDD'24, ``model/loss_func.py``): with target t = logit(clamp(exp(-c_inv/(w+1)))), rows
  played to the end (censored) contribute −log σ((s − t)/σ) and the others (s − t)²/(2σ²); the
  loss is the sum of the two subsets' means. A subset absent from a batch contributes 0, not the
  NaN of an empty mean (the official code's failure on small last batches).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_bce(score: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(score, label)


def regression(score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(score, target)


def cwm_loss(score: torch.Tensor, target: torch.Tensor, censored: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    censored = censored.bool()
    observed = ~censored
    zero = score.sum() * 0.0
    z = (score - target) / sigma
    nll_obs = (z[observed].pow(2) / 2.0).mean() if bool(observed.any()) else zero
    nll_cens = (-F.logsigmoid(z[censored])).mean() if bool(censored.any()) else zero
    return nll_obs + nll_cens
