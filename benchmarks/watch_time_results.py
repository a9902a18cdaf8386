"""The watch-time results table: every label × FM/DeepFM on a warehouse, 3 seeds, with the
hyperparameters chosen on the validation days only.

1. Grid (FM, first seed), scored on the validation days: D²Co α × T, CWM c_inv × σ, D2Q bin
   count, and the learning rate of each backbone (on the D²Co label). The official defaults are
   points of the grid. Each label's point with the best validation GAUC is kept.
2. Final runs: each label × backbone × seed with the chosen point; test metrics as mean ± std.

Prints the grid and the table (markdown) and writes everything as JSON (``--out``).

    .venv/bin/python benchmarks/watch_time_results.py --warehouse var/warehouse --out var/watch_time_results.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import numpy as np

LABELS = ("pcr", "wtg", "d2q", "watch_time", "d2co", "cwm")
GRID = {
    "d2co": [{"d2co_alpha": a, "d2co_window": t} for a, t in itertools.product((-0.05, 0.0, 0.3), (1, 3))],
    "cwm": [{"cwm_c_inv": c, "cwm_sigma": 2.0} for c in (20.0, 40.0, 80.0)] + [{"cwm_c_inv": 40.0, "cwm_sigma": 1.0}],
    "d2q": [{"d2q_bins": b} for b in (30, 120)],
}
#: Learning rates tried per backbone (on the D²Co label at α=0, T=3).
LR_GRID = {"fm": (1e-3, 5e-3), "deepfm": (1e-3,)}
SHOW = ("gauc", "ndcg@1", "ndcg@3", "ndcg@5", "mae", "xauc")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--runs-root", default="var/runs/results")
    ap.add_argument("--seeds", type=int, nargs="+", default=[61, 62, 63])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--out", default="var/watch_time_results.json")
    args = ap.parse_args()

    from trainers.config import build_config
    from trainers.registry import get_model
    from trainers.watch_time.trainer import load_data, train_on_data

    def cfg(backbone, **kw):
        spec = get_model(f"watch_time_{backbone}")
        base = {"warehouse": args.warehouse, "runs_root": args.runs_root, "epochs": args.epochs,
                "patience": args.patience, "batch_size": args.batch_size, "progress": False, "seed": args.seeds[0]}
        return build_config(spec.config_cls, base, kw)

    t_start = time.perf_counter()
    data = load_data(cfg("fm"))
    rows = {k: len(s) for k, s in data.splits.items()}
    print(f"rows {rows}; windows { {k: [str(a), str(b)] for k, (a, b) in data.windows.items()} }", flush=True)

    def run(backbone, **kw):
        t0 = time.perf_counter()
        r = train_on_data(cfg(backbone, **kw), data, f"watch_time_{backbone}")
        m = r.metrics
        line = ", ".join(f"{k} {m['valid'][k]:.4f}" for k in SHOW)
        print(f"  {backbone} {kw}: valid {line} (epoch {m['best_epoch']}, {time.perf_counter() - t0:.0f} s)", flush=True)
        return m

    grid_out: dict = {"lr": {}, "labels": {}}
    print("grid: learning rate (D²Co label, defaults α=0, T=3)", flush=True)
    chosen_lr = {}
    for backbone in ("fm", "deepfm"):
        scores = []
        for lr in LR_GRID[backbone]:
            m = run(backbone, label="d2co", lr=lr)
            scores.append((m["valid"]["gauc"], lr))
            grid_out["lr"][f"{backbone}:{lr}"] = m["valid"]
        chosen_lr[backbone] = max(scores)[1]
    print(f"chosen lr: {chosen_lr}", flush=True)
    chosen_hp = {label: {} for label in LABELS}
    for label, points in GRID.items():
        print(f"grid: {label}", flush=True)
        scores = []
        for point in points:
            m = run("fm", label=label, lr=chosen_lr["fm"], **point)
            scores.append((m["valid"]["gauc"], json.dumps(point, sort_keys=True)))
            grid_out["labels"][f"{label}:{json.dumps(point, sort_keys=True)}"] = m["valid"]
        chosen_hp[label] = json.loads(max(scores)[1])
    print(f"chosen label hyperparameters: {chosen_hp}", flush=True)

    final: dict = {}
    print("final runs (test days)", flush=True)
    for backbone in ("fm", "deepfm"):
        for label in LABELS:
            ms = []
            for seed in args.seeds:
                m = run(backbone, label=label, lr=chosen_lr[backbone], seed=seed, **chosen_hp[label])
                ms.append(m)
            final[f"{backbone}:{label}"] = {
                "test": {k: [m["test"][k] for m in ms] for k in ms[0]["test"]},
                "valid": {k: [m["valid"][k] for m in ms] for k in ms[0]["valid"]},
                "best_epoch": [m["best_epoch"] for m in ms],
            }
    print("\n| backbone | label | " + " | ".join(SHOW) + " |")
    print("|---|---|" + "---|" * len(SHOW))
    for key, r in final.items():
        backbone, label = key.split(":")
        cells = [f"{np.mean(r['test'][k]):.4f} ± {np.std(r['test'][k], ddof=1) if len(r['test'][k]) > 1 else 0.0:.4f}" for k in SHOW]
        print(f"| {backbone} | {label} | " + " | ".join(cells) + " |")
    out = {"rows": rows, "seeds": args.seeds, "epochs": args.epochs, "patience": args.patience,
           "chosen_lr": chosen_lr, "chosen_hp": chosen_hp, "grid": grid_out, "final": final,
           "wall_s": time.perf_counter() - t_start, "tables": data.tables}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1, default=str)
    print(f"\nwritten {args.out} in {time.perf_counter() - t_start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
