"""Watch-time labels on the synthetic source: how well each label ranks the planted interest.

The synthetic generator records the latent interest behind every impression (the
``synthetic_truth`` table), so a model trained on a watch-time label can be scored against
what the user actually liked, not only against a long-view proxy. For each label (raw watch
time, PCR, WTG, D2Q, D²Co, CWM) the FM backbone is trained with the default day split
(train / validation / test = 9 / 2 / 3 days), early-stopped on validation GAUC (long-view
relevance, as in the KuaiRand table), and scored on the test days:

- ``ndcg@k_interest``: per-user nDCG@k with the planted interest (in (0, 1)) as graded gain;
- ``gauc``, ``ndcg@k``: against D²Co's long view, as in the KuaiRand table;
- a random-score row for scale (every test row has a positive gain, so nDCG against the
  interest is far from 0 even for a random order).

``--build`` first builds the warehouse from the generator's defaults (the ``synthetic:`` block
of ``recfeat.yaml``: 200,000 events, 14 days from 2022-04-08) with the pipeline jobs: generate,
ingest (``pipelines.ingest``), ``users`` / ``items``, ``synthetic_truth``, ``duration_stats``
and ``watch_time_labels`` (label settings at their defaults: fitted on the first 9 days, the
training days). Without ``--build`` the warehouse must already hold these tables (for example
the one ``recfeat demo`` builds).

    .venv/bin/python benchmarks/watch_time_synthetic.py --build --warehouse var/wh_synthetic \\
        --source-dir var/sources/synthetic_results --seeds 61 62 63 --out var/watch_time_synthetic.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

LABELS = ("watch_time", "pcr", "wtg", "d2q", "d2co", "cwm")
KS = (1, 3, 5)
SHOW = ("ndcg@1_interest", "ndcg@3_interest", "ndcg@5_interest", "gauc", "ndcg@3", "mae")


def build_warehouse(warehouse: str, source_dir: str, spark_master: str, driver_memory: str) -> None:
    """Generate the default synthetic source and build every table the watch-time trainer reads."""
    from pipelines.ingest import ingest_dimension, ingest_with_settings
    from pipelines.labels import build_duration_stats, build_watch_time_labels
    from pipelines.settings import SourceConfig, load_settings
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark
    from pipelines.synthetic import generate
    from pipelines.synthetic_truth import build_synthetic_truth
    from pipelines.warehouse import Warehouse

    settings = load_settings()
    t0 = time.perf_counter()
    src = generate(source_dir, settings.synthetic)
    print(f"generated {src.events:,} events in {len(src.log_files)} files ({time.perf_counter() - t0:.0f} s)", flush=True)
    spark_settings = settings.spark.model_copy(update={"master": spark_master, "driver_memory": driver_memory,
                                                       "shuffle_partitions": 4})
    spark = get_spark(spark_settings)
    wh = Warehouse(warehouse)
    name = "synthetic"
    adapter = adapter_for(name, SourceConfig(kind="synthetic", path=source_dir))
    result = ingest_with_settings(spark, wh, adapter, settings)
    print(result.summary(), flush=True)
    for table in ("users", "items"):
        ingest_dimension(wh, adapter, table)
    m = build_synthetic_truth(spark, wh, str(src.truth_file), name)
    print(f"synthetic_truth v{m.version}: {m.row_count:,} rows", flush=True)
    r = build_duration_stats(spark, wh, settings.labels)
    print(f"duration_stats v{r.manifest.version}", flush=True)
    r = build_watch_time_labels(spark, wh, settings.labels)
    print(f"watch_time_labels v{r.manifest.version}: {r.manifest.row_count:,} rows "
          f"(fit {settings.labels.fit_start} .. {settings.labels.fit_end} exclusive; {time.perf_counter() - t0:.0f} s)",
          flush=True)


def random_baseline(data, seeds) -> dict[str, list[float]]:
    """nDCG@k against the interest and GAUC of random scores on the test days (one draw per seed)."""
    from trainers import metrics as M

    users = data.groups["test"]
    rel = data.splits["test"].columns["is_long_view_d2co"]
    out: dict[str, list[float]] = {}
    for seed in seeds:
        s = np.random.default_rng(seed).random(len(users))
        row = {f"ndcg@{k}_interest": M.ndcg_at_k(users, data.interest["test"], s, k) for k in KS}
        row["gauc"] = M.gauc(users, rel, s)
        row["ndcg@3"] = M.ndcg_at_k(users, rel, s, 3)
        for key, v in row.items():
            out.setdefault(key, []).append(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warehouse", default="var/wh_synthetic")
    ap.add_argument("--build", action="store_true", help="generate the default source and build the tables first")
    ap.add_argument("--source-dir", default="var/sources/synthetic_results")
    ap.add_argument("--spark-master", default="local[2]")
    ap.add_argument("--driver-memory", default="2g")
    ap.add_argument("--runs-root", default="var/runs/synthetic")
    ap.add_argument("--labels", nargs="+", default=list(LABELS), choices=LABELS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[61])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--out", default="var/watch_time_synthetic.json")
    args = ap.parse_args()

    t_start = time.perf_counter()
    if args.build:
        build_warehouse(args.warehouse, args.source_dir, args.spark_master, args.driver_memory)

    from trainers.config import build_config
    from trainers.registry import get_model
    from trainers.watch_time.trainer import load_data, train_on_data

    spec = get_model("watch_time_fm")

    def cfg(**kw):
        base = {"warehouse": args.warehouse, "runs_root": args.runs_root, "epochs": args.epochs,
                "patience": args.patience, "batch_size": args.batch_size, "progress": False}
        return build_config(spec.config_cls, base, kw)

    data = load_data(cfg(seed=args.seeds[0]))
    if "test" not in data.interest or not np.isfinite(data.interest["test"]).all():
        sys.exit("the warehouse has no synthetic_truth for every test row: not a synthetic source")
    rows = {k: len(s) for k, s in data.splits.items()}
    test_users = np.unique(data.groups["test"], return_counts=True)[1]
    print(f"rows {rows}; test users {len(test_users):,} (median {int(np.median(test_users))} rows, "
          f"{int((test_users == 1).sum()):,} with one row); "
          f"windows { {k: [str(a), str(b)] for k, (a, b) in data.windows.items()} }", flush=True)

    final: dict = {"random": {"test": random_baseline(data, args.seeds)}}
    for label in args.labels:
        ms = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            m = train_on_data(cfg(label=label, seed=seed), data, "watch_time_fm").metrics
            ms.append(m)
            line = ", ".join(f"{k} {m['test'][k]:.4f}" for k in SHOW)
            print(f"  fm {label} seed {seed}: test {line} (best epoch {m['best_epoch']}, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
        final[label] = {
            "test": {k: [m["test"][k] for m in ms] for k in ms[0]["test"]},
            "valid": {k: [m["valid"][k] for m in ms] for k in ms[0]["valid"]},
            "best_epoch": [m["best_epoch"] for m in ms],
        }

    print("\n| label | " + " | ".join(SHOW) + " | best epochs |")
    print("|---|" + "---|" * (len(SHOW) + 1))
    for label, r in final.items():
        cells = [
            f"{np.mean(r['test'][k]):.4f} ± {np.std(r['test'][k], ddof=1) if len(r['test'][k]) > 1 else 0.0:.4f}" if k in r["test"] else "–" for k in SHOW
        ]
        print(f"| {label} | " + " | ".join(cells) + f" | {r.get('best_epoch', '–')} |")
    out = {"rows": rows, "test_users": len(test_users), "seeds": args.seeds, "epochs": args.epochs,
           "patience": args.patience, "batch_size": args.batch_size, "final": final,
           "wall_s": time.perf_counter() - t_start, "tables": data.tables}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1, default=str)
    print(f"\nwritten {args.out} in {time.perf_counter() - t_start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
