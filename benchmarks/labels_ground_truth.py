"""Ground truth: how well each watch-time label ranks the planted interest of the synthetic source.

For each seed: generate the synthetic source, compute every label with the pandas path of
``features.labels.math`` (the same numbers as the Spark job, tested), and report the Spearman
rank correlation between the label and the generator's planted ``interest``, over all rows
and averaged over users (the ranking a recommender makes for one user, across videos of
different durations). Rows: the events dated after the fit window (labels use stats fitted on
the first days only).

    .venv/bin/python benchmarks/labels_ground_truth.py --events 200000 --seeds 1 2 3
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.labels import math as lm
from pipelines.labels import LabelSettings
from pipelines.settings import SyntheticSettings
from pipelines.synthetic import generate

LABELS = ["watch_time_s", "pcr", "wtg", "d2q", "d2q_dense", "d2co"]


def load(root: Path, files) -> pd.DataFrame:
    frames = []
    for f in files:
        df = pd.read_csv(f, usecols=["user_id", "video_id", "time_ms", "play_time_ms", "duration_ms"])
        df["source_file"] = Path(f).name
        df["source_line"] = np.arange(1, len(df) + 1)
        frames.append(df)
    ev = pd.concat(frames, ignore_index=True)
    truth = pd.read_parquet(root / "truth" / "ground_truth.parquet", columns=["source_file", "source_line", "interest"])
    ev = ev.merge(truth, on=["source_file", "source_line"], how="inner")
    ev["event_date"] = pd.to_datetime(ev["time_ms"], unit="ms", utc=True).dt.date
    ev["event_id"] = np.arange(len(ev)).astype(str)
    return ev


def spearman_overall(x, y) -> float:
    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def spearman_per_user(df: pd.DataFrame, col: str, min_rows: int = 5) -> float:
    g = df.groupby("user_id")
    n = g[col].transform("size")
    d = df[n >= min_rows]
    rx = d.groupby("user_id")[col].rank()
    ry = d.groupby("user_id")["interest"].rank()
    t = pd.DataFrame({"u": d["user_id"], "x": rx, "y": ry})
    t["x"] -= t.groupby("u")["x"].transform("mean")
    t["y"] -= t.groupby("u")["y"].transform("mean")
    num = (t["x"] * t["y"]).groupby(t["u"]).sum()
    den = np.sqrt((t["x"] ** 2).groupby(t["u"]).sum() * (t["y"] ** 2).groupby(t["u"]).sum())
    r = (num / den).replace([np.inf, -np.inf], np.nan).dropna()
    return float(r.mean())


def run(seed: int, events: int, alphas: list[float]) -> list[dict]:
    s = LabelSettings()
    with tempfile.TemporaryDirectory() as tmp:
        src = generate(tmp, SyntheticSettings(events=events, seed=seed))
        ev = load(Path(tmp), src.log_files)
    out = []
    for alpha in alphas:
        params = s.model_copy(update={"alpha": alpha}).params()
        rows = lm.prepare_rows_pandas(ev, params, s.fit_start, s.fit_end)
        stats, table = lm.fit_stats_pandas(rows, params)
        lab = lm.label_frame_pandas(rows, stats, table, params)
        test = lab[~lab["is_in_fit_window"]]
        cols = LABELS if alpha == alphas[0] else ["d2co"]
        for c in cols:
            name = c if c != "d2co" else f"d2co(a={alpha:g})"
            out.append({"seed": seed, "label": name, "overall": spearman_overall(test[c], test["interest"]),
                        "per_user": spearman_per_user(test, c), "rows": len(test)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.3, -0.05])
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = pd.DataFrame([r for seed in a.seeds for r in run(seed, a.events, a.alphas)])
    print(f"labels vs planted interest: {a.events:,} events per seed, seeds {a.seeds}, {os.cpu_count()} CPUs")
    print(f"rows scored per seed (after the fit window): {res.groupby('seed')['rows'].first().tolist()}")
    tab = res.pivot_table(index="label", columns="seed", values=["overall", "per_user"])
    summary = pd.DataFrame({
        "overall_mean": res.groupby("label")["overall"].mean(),
        "overall_min": res.groupby("label")["overall"].min(),
        "per_user_mean": res.groupby("label")["per_user"].mean(),
        "per_user_min": res.groupby("label")["per_user"].min(),
    }).sort_values("per_user_mean")
    print(tab.round(4).to_string())
    print()
    print(summary.round(4).to_string())
    print(f"elapsed {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
