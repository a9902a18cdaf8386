"""SASRec with and without RoTE on ML-100K and the KuaiRand slice: 3 seeds each, mean and spread.

Builds (once) a warehouse per data set with ``user_sequences`` (leave-one-out, max_len 50) from
``../shared/data`` (see ``benchmarks/_sasrec_data.py``), then trains every
{data set} x {no RoTE, RoTE} x {seed} configuration with ``trainers.sasrec.train`` and prints the
test HR@5/10 and NDCG@5/10 (mean +- sample standard deviation over seeds) and the relative
change RoTE makes, measured in the same run. Model selection: the epoch with the best
validation NDCG@10, evaluated every ``--eval-interval`` epochs (the official protocol: 200 epochs,
every 20, Adam betas 0.9 / 0.98). KuaiRand sequences are click sequences with the 5-core filter
(``_sasrec_data.py``). Several processes can split the work (``--datasets``, ``--variants``,
``--out``) and ``--merge`` prints the table of their JSON files together.

    .venv/bin/python benchmarks/sasrec_results.py                       # the docs/results.md table
    .venv/bin/python benchmarks/sasrec_results.py --datasets ml-100k --seeds 1 --epochs 20
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _sasrec_data import DATASETS, DEFAULT_ROOT, prepare  # noqa: E402

METRICS = ("test_hr@5", "test_hr@10", "test_ndcg@5", "test_ndcg@10")
VARIANTS = {
    "sasrec": {},
    "sasrec+rote": {"rote": True},
    "sasrec+cape": {"cape": True},
    "sasrec+rote+cape": {"rote": True, "cape": True},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=200, help="epoch cap per run")
    p.add_argument("--patience", type=int, default=200,
                   help="epochs without a validation NDCG@10 gain (default: no early stop within 200)")
    p.add_argument("--eval-interval", type=int, default=20, help="validate every this many epochs (official: 20)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the data set warehouses live")
    p.add_argument("--out", type=Path, default=None, help="also write every run's metrics as JSON here (after each run)")
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="train nothing: print the table of these --out files together")
    args = p.parse_args(argv)
    if args.merge:
        runs = [r for f in args.merge for r in json.loads(f.read_text())]
        datasets = [d for d in DATASETS if any(r["dataset"] == d for r in runs)]
        variants = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
        summarise(runs, datasets, variants)
        return 0

    from trainers.sasrec import SASRecConfig, train

    runs: list[dict] = []
    for dataset in args.datasets:
        uri = prepare(dataset, args.root)
        for variant in args.variants:
            for seed in range(1, args.seeds + 1):
                cfg = SASRecConfig(
                    warehouse=uri, runs_root=str(args.root / "runs" / dataset), seed=seed, epochs=args.epochs,
                    patience=args.patience, eval_interval=args.eval_interval, threads=args.threads, progress=False,
                    **VARIANTS[variant],
                )
                t0 = time.perf_counter()
                m = train(cfg).metrics
                wall = time.perf_counter() - t0
                row = {"dataset": dataset, "variant": variant, "seed": seed, "wall_s": wall,
                       **{f"test_{k}": v for k, v in m["test"].items()}, **{f"valid_{k}": v for k, v in m["valid"].items()},
                       **{k: v for k, v in m.items() if k not in ("history", "valid", "test")}}
                runs.append(row)
                if args.out:
                    args.out.write_text(json.dumps(runs, indent=1, default=str))
                print(f"{dataset:9s} {variant:12s} seed {seed}: " + " ".join(f"{k[5:]} {row[k]:.4f}" for k in METRICS)
                      + f" | best epoch {m['best_epoch']}, {m['epochs_run']} run, {wall:.0f} s,"
                      f" {m['throughput']['train_samples_per_s']:.0f} train seq/s", flush=True)
    summarise(runs, args.datasets, args.variants)
    return 0


def summarise(runs: list[dict], datasets: list[str], variants: list[str]) -> None:
    """Print the results table (mean ± sample standard deviation over seeds) and RoTE's change."""
    print()
    print("| data set | model | " + " | ".join(k[5:] for k in METRICS) + " | epochs (best) |")
    print("|---|---|" + "---|" * (len(METRICS) + 1))
    summary: dict[tuple[str, str], dict[str, float]] = {}
    for dataset in datasets:
        for variant in variants:
            rs = [r for r in runs if r["dataset"] == dataset and r["variant"] == variant]
            cells, means = [], {}
            for k in METRICS:
                vals = [r[k] for r in rs]
                means[k] = statistics.fmean(vals)
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{means[k]:.4f} ± {sd:.4f}")
            summary[(dataset, variant)] = means
            best = ", ".join(str(r["best_epoch"]) for r in rs)
            print(f"| {dataset} | {variant} | " + " | ".join(cells) + f" | {best} |")
    if "sasrec" in variants:
        print()
        for dataset in datasets:
            base = summary[(dataset, "sasrec")]
            for variant in variants:
                if variant == "sasrec":
                    continue
                other = summary[(dataset, variant)]
                ratios = ", ".join(
                    f"{k[5:]} {100 * (other[k] / base[k] - 1):+.1f}%" if base[k] else f"{k[5:]} n/a" for k in METRICS
                )
                print(f"{variant} vs sasrec on {dataset} (relative change of the means): {ratios}")


if __name__ == "__main__":
    raise SystemExit(main())
