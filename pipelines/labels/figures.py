"""Pictures of the labels (matplotlib, Agg backend), written as PNGs to ``<reports>/labels/``.

* ``gmm_fits.png``: the fitted w⁻ (noise) and w⁺ (interest/bias) per duration, raw and smoothed,
  over the mean watch time, with the training rows per duration underneath;
* ``watch_time_by_duration.png``: mean raw watch time by duration (before correction) and the
  mean of each label by duration (after correction: a debiased label is flat in duration);
* ``label_distributions.png``: per label, box plots over equal-frequency duration buckets.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

FIGURE_DIR = "labels"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def gmm_figure(stats: pd.DataFrame, path: str) -> str:
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    d = stats["duration_s"]
    ax.plot(d, stats["wt_mean_s"], color="0.6", lw=1, label="mean watch time")
    ax.scatter(d, stats["noise_wt_s"], s=8, color="tab:blue", alpha=0.5, label="w⁻ fitted (noise)")
    ax.scatter(d, stats["interest_wt_s"], s=8, color="tab:red", alpha=0.5, label="w⁺ fitted (interest/bias)")
    ax.plot(d, stats["noise_wt_smoothed_s"], color="tab:blue", lw=2, label="w⁻ smoothed")
    ax.plot(d, stats["interest_wt_smoothed_s"], color="tab:red", lw=2, label="w⁺ smoothed")
    interp = stats["is_interpolated"].astype(bool)
    if interp.any():
        ax.scatter(d[interp], stats.loc[interp, "interest_wt_smoothed_s"], marker="x", color="k", s=14, label="borrowed (not fitted)")
    ax.set_ylabel("watch time (s)")
    fs, fe = stats["fit_start"].iloc[0], stats["fit_end"].iloc[0]
    ax.set_title(f"D²Co GMM components by duration (fit window {fs} .. {fe}, exclusive)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    ax2.bar(d, stats["rows"], width=1.0, color="0.5")
    ax2.set_ylabel("training rows")
    ax2.set_xlabel("duration (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


LABEL_COLUMNS = ("pcr", "wtg", "d2q", "d2co")


def watch_time_figure(sample: pd.DataFrame, path: str) -> str:
    plt = _plt()
    g = sample.groupby("duration_s")
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.plot(g["watch_time_s"].mean().index, g["watch_time_s"].mean().to_numpy(), color="k", lw=2, label="raw watch time (s), left axis")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("mean watch time (s)")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    for c in LABEL_COLUMNS:
        m = g[c].mean()
        right.plot(m.index, m.rolling(5, center=True, min_periods=1).mean().to_numpy(), lw=1.5, label=f"{c} (right axis)")
    right.set_ylabel("mean label (5-s rolling)")
    right.set_ylim(0, 1)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = right.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    ax.set_title("Before correction (watch time) and after (labels) by duration")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def distributions_figure(sample: pd.DataFrame, path: str, buckets: int = 6) -> str:
    plt = _plt()
    b = pd.qcut(sample["duration_s"], buckets, duplicates="drop")
    cats = b.cat.categories
    fig, axes = plt.subplots(1, len(LABEL_COLUMNS), figsize=(13, 4), sharey=True)
    for ax, c in zip(axes, LABEL_COLUMNS):
        data = [sample.loc[b == cat, c].to_numpy() for cat in cats]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(cats) + 1))
        ax.set_xticklabels([f"{int(np.ceil(cat.left))}-{int(cat.right)}" for cat in cats], rotation=45, fontsize=7)
        ax.set_title(c)
        ax.set_xlabel("duration bucket (s)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("label")
    fig.suptitle("Label distributions per duration bucket (equal-frequency buckets)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def figure_dir(reports: str) -> str:
    path = os.path.join(reports, FIGURE_DIR)
    os.makedirs(path, exist_ok=True)
    return path
