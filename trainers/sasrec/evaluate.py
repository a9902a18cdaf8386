"""SASRec's full-ranking evaluation: HR@5/10 and NDCG@5/10 at the last position."""
from __future__ import annotations

import numpy as np
import torch

from trainers.metrics import full_ranking_metrics
from trainers.sasrec.config import KS
from trainers.sasrec.data import SASRecData, Split, first_used_column
from trainers.sasrec.model import SASRec
from trainers.sequences import FIRST_ITEM, OOV, PAD

@torch.no_grad()
def rank_scores(model: SASRec, data: SASRecData, split: Split, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores [rows, n_items] with excluded items at -inf, targets) for full ranking.

    Excluded: padding, the unknown id, and every item of the user other than the target. An
    unknown target gets -inf too; :func:`evaluate` counts it as a miss.
    """
    model.eval()
    first = first_used_column(split.mask[rows])  # leading all-padding columns change nothing; skip them
    scores = model.score_last(
        torch.from_numpy(split.items[rows, first:]), torch.from_numpy(split.mask[rows, first:]),
        {k: torch.from_numpy(v[rows, first:]) for k, v in split.levels.items()},
    ).double().numpy()
    targets = split.targets[rows]
    scores[:, [PAD, OOV]] = -np.inf
    users = split.users[rows]
    starts, ends = data.user_items_ptr[users], data.user_items_ptr[users + 1]
    r = np.repeat(np.arange(len(rows)), ends - starts)
    cols = data.user_items[np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])] if len(r) else r
    keep = cols != targets[r]
    scores[r[keep], cols[keep]] = -np.inf
    return scores, targets


def evaluate(model: SASRec, data: SASRecData, split: Split, prefix: str, batch: int = 1_024) -> dict[str, float]:
    """HR@5/10 and NDCG@5/10 over every row of ``split`` (full ranking)."""
    n = len(split)
    sums: dict[str, float] = {}
    by_length = np.argsort(split.mask.sum(axis=1), kind="stable")  # similar lengths together: less padding
    for start in range(0, n, batch):
        rows = np.sort(by_length[start : start + batch])
        scores, targets = rank_scores(model, data, split, rows)
        known = targets >= FIRST_ITEM  # an unknown target is a miss: it adds 0 to every sum
        if not known.any():
            continue
        ranked = full_ranking_metrics(scores[known], targets[known], KS, exclude=np.isneginf(scores[known]))
        for k, v in ranked.items():
            sums[k] = sums.get(k, 0.0) + v * int(known.sum())
    out = {f"{prefix}_{m}@{k}": sums.get(f"{m}@{k}", 0.0) / n if n else float("nan") for m in ("hr", "ndcg") for k in KS}
    out[f"{prefix}_rows"] = n
    out[f"{prefix}_unknown_targets"] = int((split.targets == OOV).sum())
    return out
