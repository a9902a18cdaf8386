"""Training curves: one PNG per run (``curves.png`` in the run directory).

Drawn from ``metrics.json``'s ``history`` (one row per evaluated epoch, from 0): the mean
training loss of each epoch on the left (a multi-task run: one line per task and their sum) and
the validation metric used for selection on the right, the best epoch marked. Matplotlib's Agg
canvas is used directly (no ``pyplot``, no global backend switch, no display needed).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, BinaryIO

#: The curve file of a run directory.
CURVES_FILE = "curves.png"


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def select_key(history: list[dict[str, Any]], select_metric: str | None) -> str | None:
    """The history column of the selection metric: exactly ``select_metric``, ``valid_<metric>``
    (the sequence trainers' columns, ``valid_ndcg@10``) or ``valid/<metric>``, or one of those
    with the metric's MLflow-safe name (``trainers.tracking.metric_key``: ``ndcg_at_10`` for
    ``ndcg@10``); ``None`` when the history has none of them (never a column that merely ends
    with the name: ``gauc`` is not ``auc``). Without a ``select_metric``: the first numeric
    validation column."""
    from trainers.tracking import metric_key

    columns: list[str] = []
    for row in history:
        for k, v in row.items():
            if k not in ("epoch", "train_loss") and _number(v) is not None and k not in columns:
                columns.append(k)
    if select_metric:
        safe = metric_key(select_metric)
        for c in (select_metric, f"valid_{select_metric}", f"valid/{select_metric}", safe, f"valid_{safe}", f"valid/{safe}"):
            if c in columns:
                return c
        return None
    return columns[0] if columns else None


def loss_series(history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``{line: [(epoch, loss), ...]}``: ``train loss``, or per task and ``sum`` when the loss is a dict."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in history:
        epoch, loss = row.get("epoch"), row.get("train_loss")
        if _number(epoch) is None:
            continue
        if isinstance(loss, dict):
            values = {str(k): _number(v) for k, v in loss.items()}
            for k, v in values.items():
                if v is not None:
                    out.setdefault(k, []).append((int(epoch), v))
            finite = [v for v in values.values() if v is not None]
            if finite:
                out.setdefault("sum", []).append((int(epoch), sum(finite)))
        elif _number(loss) is not None:
            out.setdefault("train loss", []).append((int(epoch), float(loss)))
    return out


def plot_curves(history: list[dict[str, Any]], out: str | Path | BinaryIO, *, title: str = "",
                select_metric: str | None = None, best_epoch: int | None = None) -> None:
    """Write the curve PNG of ``history`` to ``out`` (a path or a binary file). An empty
    history gives a figure that says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_valid = fig.subplots(1, 2)
    for name, points in loss_series(history).items():
        ax_loss.plot([e for e, _ in points], [v for _, v in points], marker="o", label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean training loss")
    ax_loss.set_title("training loss")
    if ax_loss.lines:
        ax_loss.legend(fontsize="small")
    key = select_key(history, select_metric)
    if key is not None:
        points = [(int(r["epoch"]), float(r[key])) for r in history
                  if _number(r.get(key)) is not None and _number(r.get("epoch")) is not None]
        points = [(e, v) for e, v in points if math.isfinite(v)]
        ax_valid.plot([e for e, _ in points], [v for _, v in points], marker="o", color="tab:green",
                      label=key if key.startswith("valid") else f"valid {key}")
        if best_epoch is not None and best_epoch >= 0:
            ax_valid.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax_valid.legend(fontsize="small")
        ax_valid.set_ylabel(key)
    else:
        missing = f"no validation metric {select_metric!r} in the history" if select_metric else "no validation metric"
        ax_valid.text(0.5, 0.5, missing, ha="center", va="center", transform=ax_valid.transAxes)
    ax_valid.set_xlabel("epoch")
    ax_valid.set_title("validation")
    epochs = sorted({int(r["epoch"]) for r in history if _number(r.get("epoch")) is not None})
    for ax in (ax_loss, ax_valid):
        if 0 < len(epochs) <= 20:
            ax.set_xticks(epochs)  # whole epochs only, also for one or two epochs
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(out, format="png")
