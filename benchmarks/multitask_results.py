"""Multi-task ranking on the KuaiRand slice: single-task, MMoE, PLE, MMoE + EKTM, PLE + EKTM, with
Adam (equal task weights) and with PUB, 3 seeds; per-task test AUC and the average, mean ± sample SD.

Builds (once) a warehouse under ``--root`` with ``events``, ``items`` and ``users`` ingested from
``../shared/data/kuairand-pure-slice`` with the settings of ``configs/kuairand.yaml`` (as
``benchmarks/din_results.py`` does, plus ``users``), loads the multi-task data once
(``trainers.multitask.trainer.load_data``: the date split of docs/training.md) and trains every
variant × seed on it with ``train_on_data``. Results are written to ``--out`` after every run
(so an interrupted run keeps what it finished), then the markdown table is printed.

    .venv/bin/python benchmarks/multitask_results.py --out var/multitask/results.json
    .venv/bin/python benchmarks/multitask_results.py --seeds 61 --epochs 1 --variants mmoe mmoe+pub   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED_DATA = REPO.parent / "shared" / "data" / "kuairand-pure-slice"
DEFAULT_ROOT = REPO / "var" / "multitask"
VARIANTS: dict[str, dict] = {
    "single": {"backbone": "single"},
    "shared_bottom": {"backbone": "shared_bottom"},
    "shared_bottom+pub": {"backbone": "shared_bottom", "optimizer": "pub"},
    "mmoe": {"backbone": "mmoe"},
    "mmoe+pub": {"backbone": "mmoe", "optimizer": "pub"},
    "ple": {"backbone": "ple"},
    "ple+pub": {"backbone": "ple", "optimizer": "pub"},
    "mmoe+ektm": {"backbone": "mmoe", "ektm": True},
    "mmoe+ektm+pub": {"backbone": "mmoe", "ektm": True, "optimizer": "pub"},
    "ple+ektm": {"backbone": "ple", "ektm": True},
    "ple+ektm+pub": {"backbone": "ple", "ektm": True, "optimizer": "pub"},
}
#: The docs/results.md table (shared-bottom is left out of it for the time budget).
DEFAULT_VARIANTS = ["single", "mmoe", "mmoe+pub", "ple", "ple+pub", "mmoe+ektm", "mmoe+ektm+pub", "ple+ektm", "ple+ektm+pub"]


def prepare(root: Path, data: Path = SHARED_DATA) -> str:
    """The warehouse URI holding ``events``, ``items`` and ``users`` of the KuaiRand slice (built on first use)."""
    from _kuairand_warehouse import prepare_kuairand

    return prepare_kuairand(root, ("events", "items", "users"), data)


def _cell(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def table(results: dict, tasks: list[str]) -> str:
    lines = ["| model | optimiser | " + " | ".join(f"{t} AUC" for t in tasks) + " | average AUC | best epochs |",
             "|---|---|" + "---|" * (len(tasks) + 2)]
    for name, runs in results.items():
        if not runs:
            continue
        opt = "PUB" if name.endswith("+pub") else "Adam"
        model = name.removesuffix("+pub").replace("single", "single-task").replace("shared_bottom", "shared-bottom")
        model = model.replace("mmoe", "MMoE").replace("ple", "PLE").replace("+ektm", " + EKTM")
        cells = [_cell([r["test"][f"auc_{t}"] for r in runs]) for t in tasks] + [_cell([r["test"]["auc_mean"] for r in runs])]
        epochs = ", ".join(str(r["best_epoch"]) for r in runs)
        lines.append(f"| {model} | {opt} | " + " | ".join(cells) + f" | {epochs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the warehouse and run directories live")
    p.add_argument("--data", type=Path, default=SHARED_DATA, help="the KuaiRand-Pure slice folder")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[61, 62, 63])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--patience", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_ROOT / "results.json")
    args = p.parse_args(argv)

    from trainers.config import build_config
    from trainers.multitask.trainer import MultiTaskConfig, load_data, train_on_data

    uri = prepare(args.root, args.data)
    base = {"warehouse": uri, "runs_root": str(args.root / "runs"), "epochs": args.epochs, "patience": args.patience,
            "progress": False}
    t_start = time.perf_counter()
    data = load_data(build_config(MultiTaskConfig, base))
    tasks = list(data.tasks)
    print(f"rows { {k: len(s) for k, s in data.splits.items()} }; positives {data.positives()}; "
          f"windows { {k: [str(a), str(b)] for k, (a, b) in data.windows.items()} } ({data.load_s:.0f} s)", flush=True)
    results: dict[str, list] = {v: [] for v in args.variants}
    out = {"rows": {k: len(s) for k, s in data.splits.items()}, "positives": data.positives(), "seeds": args.seeds,
           "epochs": args.epochs, "patience": args.patience, "tables": data.tables, "results": results}
    for seed in args.seeds:  # seeds outside: an interrupted run still has whole seeds of every variant
        for name in args.variants:
            cfg = build_config(MultiTaskConfig, base, VARIANTS[name], {"seed": seed})
            t0 = time.perf_counter()
            m = train_on_data(cfg, data).metrics
            m = {k: m[k] for k in ("valid", "test", "best_epoch", "epochs_run", "parameters", "throughput", "pub") if k in m}
            m["seed"], m["wall_s"] = seed, time.perf_counter() - t0
            results[name].append(m)
            aucs = ", ".join(f"{t} {m['test'][f'auc_{t}']:.4f}" for t in tasks)
            print(f"  {name} seed {seed}: test {aucs}, mean {m['test']['auc_mean']:.4f} "
                  f"(best epoch {m['best_epoch']}, {m['wall_s']:.0f} s)", flush=True)
            out["wall_s"] = time.perf_counter() - t_start
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1, default=str))
    print("\n" + table(results, tasks))
    print(f"\nwritten {args.out} in {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
