"""FAIR against SASRec and SASRec + RoTE on ML-100K and KuaiRand clicks (5-core), under one budget.

Builds (once) a warehouse per data set under ``--root`` with ``user_sequences`` (leave-one-out,
max_len 50, ``benchmarks/_sasrec_data.py``) and ``item_codes`` (the item_codes family's job, fitted
on the training rows of ``user_sequences`` only: ``fit_on: user_sequences_train``, 4 levels x 256
codes of a 32-d co-occurrence embedding, cutoff 2100-01-01 so the training rows alone bound it),
then trains every {data set} x {variant} x {seed} run with the same epoch budget, validation
schedule and Adam settings, and prints the test HR@5/10 (= Recall@5/10) and NDCG@5/10, mean +-
sample standard deviation over seeds, and each variant's relative change against SASRec and
against full FAIR, measured in the same run.

    .venv/bin/python benchmarks/fair_results.py --out var/fair-logs/all.json      # the docs/results.md table
    .venv/bin/python benchmarks/fair_results.py --datasets ml-100k --seeds 1 --epochs 2
    .venv/bin/python benchmarks/fair_results.py --merge var/fair-logs/ml100k.json var/fair-logs/kuairand.json
    .venv/bin/python benchmarks/fair_results.py --datasets ml-100k --variants fair --levels 3 --codebook-size 16 --root var/fair-3x16
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _sasrec_data import DATASETS, REPO, prepare  # noqa: E402

DEFAULT_ROOT = REPO / "var" / "fair"
METRICS = ("test_hr@5", "test_hr@10", "test_ndcg@5", "test_ndcg@10")
#: (model, config overrides). FAIR's defaults: focused attention, noise and MI losses on.
VARIANTS = {
    "popularity": ("popularity", {}),
    "sasrec": ("sasrec", {}),
    "sasrec+rote": ("sasrec", {"rote": True}),
    "fair": ("fair", {}),
    "fair-standard-attn": ("fair", {"attention": "standard"}),
    "fair-no-noise": ("fair", {"noise_weight": 0.0}),
    "fair-no-mi": ("fair", {"mi_weight": 0.0}),
    "fair-base": ("fair", {"attention": "standard", "noise_weight": 0.0, "mi_weight": 0.0}),
}
CODES_CUTOFF = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)


def prepare_codes(uri: str, levels: int = 4, codebook_size: int = 256) -> dict:
    """Build ``item_codes`` in ``uri`` (from the training rows of ``user_sequences``) unless the
    committed one has these ``levels`` and ``codebook_size``."""
    from pipelines.item_codes import ItemCodeSettings, build_item_codes_table, check_item_codes
    from pipelines.warehouse import Warehouse

    wh = Warehouse(uri)
    settings = ItemCodeSettings(cutoff_ts=CODES_CUTOFF, fit_on="user_sequences_train", levels=levels,
                                codebook_size=codebook_size)
    built = wh.manifest("item_codes").producer if wh.exists("item_codes") else {}
    if (built.get("levels"), built.get("codebook_size")) != (str(levels), str(codebook_size)):
        from pipelines.settings import SparkSettings
        from pipelines.spark import get_spark

        spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4, driver_memory="3g"))
        stats = build_item_codes_table(spark, wh, settings).stats["item_codes"]
        print(f"item_codes for {uri}: {stats}", flush=True)
    bad = {k: v for k, v in check_item_codes(wh, settings).items() if k != "rows" and v}
    if bad:
        raise SystemExit(f"item_codes in {uri} breaks its invariants: {bad}")
    return dict(wh.manifest("item_codes").producer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="epoch budget of every run (the same for every model)")
    p.add_argument("--eval-interval", type=int, default=5, help="validate every this many epochs (and after the last)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch of every model (SASRec's default: 512)")
    p.add_argument("--levels", type=int, default=4, help="item_codes.levels of the semantic IDs")
    p.add_argument("--codebook-size", type=int, default=256, help="item_codes.codebook_size")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the data set warehouses live")
    p.add_argument("--out", type=Path, default=None, help="also write every run's metrics as JSON here (after each run)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, help="train nothing: print the table of these --out files")
    args = p.parse_args(argv)
    if args.merge:
        runs = [r for f in args.merge for r in json.loads(f.read_text())]
        summarise(runs, [d for d in DATASETS if any(r["dataset"] == d for r in runs)],
                  [v for v in VARIANTS if any(r["variant"] == v for r in runs)])
        return 0

    from trainers.fair import FAIRConfig
    from trainers.fair import train as train_fair
    from trainers.sasrec import SASRecConfig
    from trainers.sasrec import train as train_sasrec

    runs: list[dict] = []
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    for dataset in args.datasets:
        uri = prepare(dataset, args.root)
        prepare_codes(uri, args.levels, args.codebook_size)
        for variant in args.variants:
            model, overrides = VARIANTS[variant]
            for seed in range(1, args.seeds + 1):
                common = dict(warehouse=uri, runs_root=str(args.root / "runs" / dataset), seed=seed, epochs=args.epochs,
                              patience=args.epochs, eval_interval=args.eval_interval, threads=args.threads, progress=False,
                              batch_size=args.batch_size)
                t0 = time.perf_counter()
                if model == "popularity":
                    m = popularity(SASRecConfig(**common))
                else:
                    cls, train = (SASRecConfig, train_sasrec) if model == "sasrec" else (FAIRConfig, train_fair)
                    m = train(cls(**common, **overrides)).metrics
                wall = time.perf_counter() - t0
                row = {"dataset": dataset, "variant": variant, "seed": seed, "wall_s": wall,
                       **{f"test_{k}": v for k, v in m["test"].items()}, **{f"valid_{k}": v for k, v in m["valid"].items()},
                       **{k: v for k, v in m.items() if k not in ("history", "valid", "test")}}
                runs.append(row)
                if args.out:
                    args.out.write_text(json.dumps(runs, indent=1, default=str))
                print(f"{dataset:9s} {variant:18s} seed {seed}: " + " ".join(f"{k[5:]} {row[k]:.4f}" for k in METRICS)
                      + f" | best epoch {m['best_epoch']}, {m['epochs_run']} run, {wall:.0f} s", flush=True)
    print(f"\nwall time {time.perf_counter() - t_all:.0f} s for {len(runs)} runs")
    summarise(runs, args.datasets, args.variants)
    return 0


def popularity(config) -> dict:
    """The reference without training: every item scored by its count in the training rows'
    histories and targets, evaluated by SASRec's full ranking (the same exclusions)."""
    import numpy as np
    import torch

    from trainers.sasrec import evaluate, load_data

    data = load_data(config)
    tr = data.train
    counts = np.bincount(tr.targets[tr.targets > 0], minlength=data.vocab.size).astype(float)
    counts += np.bincount(tr.items[tr.mask], minlength=data.vocab.size)

    class Popularity(torch.nn.Module):
        def score_last(self, items, mask, levels):
            return torch.from_numpy(np.log1p(counts)).expand(items.shape[0], -1).clone()

    def strip(d, prefix):
        return {k[len(prefix) + 1:]: v for k, v in d.items() if k.startswith(prefix + "_")}

    return {"test": strip(evaluate(Popularity(), data, data.test, "test"), "test"),
            "valid": strip(evaluate(Popularity(), data, data.valid, "valid"), "valid"), "best_epoch": "-", "epochs_run": 0}


def summarise(runs: list[dict], datasets: list[str], variants: list[str]) -> None:
    """The results table (mean ± sample standard deviation over seeds) and the relative changes."""
    print()
    print("| data set | model | " + " | ".join(k[5:] for k in METRICS) + " | best epochs | s / run |")
    print("|---|---|" + "---|" * (len(METRICS) + 2))
    summary: dict[tuple[str, str], dict[str, float]] = {}
    for dataset in datasets:
        for variant in variants:
            rs = [r for r in runs if r["dataset"] == dataset and r["variant"] == variant]
            if not rs:
                continue
            cells, means = [], {}
            for k in METRICS:
                vals = [r[k] for r in rs]
                means[k] = statistics.fmean(vals)
                cells.append(f"{means[k]:.4f} ± {statistics.stdev(vals) if len(vals) > 1 else 0.0:.4f}")
            summary[(dataset, variant)] = means
            best = ", ".join(str(r["best_epoch"]) for r in rs)
            wall = statistics.fmean(r["wall_s"] for r in rs)
            print(f"| {dataset} | {variant} | " + " | ".join(cells) + f" | {best} | {wall:.0f} |")
    print()
    for base_name in ("sasrec", "fair"):
        for dataset in datasets:
            base = summary.get((dataset, base_name))
            if base is None:
                continue
            for variant in variants:
                other = summary.get((dataset, variant))
                if variant == base_name or other is None:
                    continue
                ratios = ", ".join(f"{k[5:]} {100 * (other[k] / base[k] - 1):+.1f}%" if base[k] else f"{k[5:]} n/a"
                                   for k in METRICS)
                print(f"{variant} vs {base_name} on {dataset}: {ratios}")


if __name__ == "__main__":
    raise SystemExit(main())
