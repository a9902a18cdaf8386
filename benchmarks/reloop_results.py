"""ReLoop2 on the KuaiRand slice (click): base, base + sketch memory, base + ANN memory, and
incremental fine-tuning, streamed in hourly slices; DIN and DeepFM bases, 3 seeds each.

Builds (once) a warehouse under ``--root`` with ``events`` and ``items`` of
``../shared/data/kuairand-pure-slice`` (``benchmarks/_kuairand_warehouse.py``), loads the DIN
data once (the date split of docs/training.md: train 9 days, validation 2, test 3;
point-in-time click histories), then per base and seed:

1. trains the base on the training days (early stopping on validation gAUC);
2. streams the validation and test days in time order, ``--slice-hours`` UTC hours per slice:
   every impression of a slice is scored before any label of the slice is written;
3. memories: the sketch for every ``--bits`` (``--arrays`` arrays, τ = 1) and the ANN memory
   for every ``--knn-k`` (τ = ``--knn-tau``), each compensated for every (λ, γ) of ``--lambdas``
   × ``--gammas``; the configuration with the best validation-day gAUC is reported on the test
   days (the validation days also warm the memory);
4. fine-tuning: a copy of the base, one Adam pass over each slice after scoring it, the
   learning rate of ``--ft-lr`` with the best validation-day gAUC.

Prints AUC and gAUC (``trainers.metrics``) per test day and over the test days, mean ± sample
SD over seeds, the chosen configurations, the memory footprints and the measured per-sample
cost of a write and a read (µs, batched and one at a time) against the base model's scoring.

    .venv/bin/python benchmarks/reloop_results.py --out var/reloop-logs/kuairand.json   # docs/results.md
    .venv/bin/python benchmarks/reloop_results.py --seeds 61 --bases deepfm --epochs 1  # a quick look
    .venv/bin/python benchmarks/reloop_results.py --merge var/reloop-logs/kuairand.json # print the tables again
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
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

import numpy as np  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data" / "kuairand-pure-slice"
DEFAULT_ROOT = REPO / "var" / "reloop"
STRATEGIES = ("base", "sketch", "ann", "finetune")
DAY_US = 86_400 * 1_000_000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the warehouse lives")
    p.add_argument("--data", type=Path, default=SHARED_DATA, help="the KuaiRand-Pure slice folder")
    p.add_argument("--bases", nargs="+", default=["din", "deepfm"], choices=["din", "deepfm"])
    p.add_argument("--seeds", type=int, nargs="+", default=[61, 62, 63])
    p.add_argument("--epochs", type=int, default=4, help="epoch cap of the base training")
    p.add_argument("--patience", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--slice-hours", type=float, default=1.0)
    p.add_argument("--arrays", type=int, default=32, help="sketch arrays K")
    p.add_argument("--bits", type=int, nargs="+", default=[6, 8, 10, 12], help="sketch bits L (grid)")
    p.add_argument("--knn-k", type=int, nargs="+", default=[16, 64], help="ANN neighbours (grid)")
    p.add_argument("--knn-tau", type=float, default=0.1)
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    p.add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--ft-lr", type=float, nargs="+", default=[1e-4, 1e-3], help="fine-tuning learning rates (grid)")
    p.add_argument("--ft-batch", type=int, default=256)
    p.add_argument("--out", type=Path, default=None, help="write every run as JSON here (after each run)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, help="train nothing: print the tables of these files")
    args = p.parse_args(argv)
    if args.merge:
        doc = [json.loads(f.read_text()) for f in args.merge]
        summarise([r for d in doc for r in d["runs"]], doc[0].get("overhead", {}))
        return 0

    import torch

    from _kuairand_warehouse import prepare_kuairand
    from trainers.din import DINConfig, load_din_data
    from trainers.loop import deterministic
    from trainers.reloop.memory import KNNMemory, SketchMemory, compensate, faiss_available
    from trainers.reloop.models import BASES, concat_impressions
    from trainers.reloop.stream import click_metrics, sigmoid, slice_ids, stream_fine_tune, stream_memory, train_base

    uri = prepare_kuairand(args.root, ("events", "items"), args.data)
    t_start = time.perf_counter()

    def config(seed: int) -> DINConfig:
        return DINConfig(warehouse=uri, runs_root=str(args.root / "runs"), seed=seed, epochs=args.epochs,
                         patience=args.patience, threads=args.threads, progress=False)

    data = load_din_data(config(args.seeds[0]))
    stream = concat_impressions([data.splits["valid"], data.splits["test"]])
    slices = slice_ids(stream.ts_us, args.slice_hours)
    test0 = data.windows["test"][0]
    test0_us = int(dt.datetime(test0.year, test0.month, test0.day, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
    is_test = stream.ts_us >= test0_us
    day = (stream.ts_us // DAY_US)
    test_days = sorted(set(day[is_test].tolist()))
    day_names = [str(dt.date(1970, 1, 1) + dt.timedelta(days=d)) for d in test_days]
    backend = "faiss" if faiss_available() else "numpy"
    print(f"loaded in {data.read_s:.1f} s: rows { {k: len(s) for k, s in data.splits.items()} }, stream "
          f"{len(stream):,} rows in {len(set(slices.tolist()))} slices of {args.slice_hours:g} h "
          f"(validation {int((~is_test).sum()):,}, test {int(is_test.sum()):,}: {day_names}); ANN backend {backend}",
          flush=True)

    def metrics_of(scores: np.ndarray) -> dict:
        out = {"valid": click_metrics(stream.users[~is_test], stream.label[~is_test], scores[~is_test]),
               "test": click_metrics(stream.users[is_test], stream.label[is_test], scores[is_test])}
        for d, name in zip(test_days, day_names):
            m = day == d
            out[name] = click_metrics(stream.users[m], stream.label[m], scores[m])
        return out

    def best_on_valid(prob: np.ndarray, readout, extra: dict) -> tuple[float, dict]:
        from trainers.metrics import gauc_impressions

        best = (-1.0, {})
        yv, uv = stream.label[~is_test].astype(bool), stream.users[~is_test]
        for lam in args.lambdas:
            for gamma in args.gammas:
                final = compensate(prob, readout, lam, gamma)
                g = gauc_impressions(uv, yv, final[~is_test])
                if g > best[0]:
                    best = (g, {**extra, "lam": lam, "gamma": gamma})
        return best

    runs: list[dict] = []
    overhead: dict = {}
    for base_name in args.bases:
        for seed in args.seeds:
            cfg = config(seed)
            t0 = time.perf_counter()
            with deterministic(seed, args.threads):
                base = BASES[base_name](data, cfg)
                model, res = train_base(base)
                t_train = time.perf_counter() - t0
                tr = data.splits["train"]
                sample = np.sort(np.random.default_rng(seed).choice(len(tr), min(20_000, len(tr)), replace=False))
                _, train_keys = base.score(model, tr, sample)
                center = train_keys.mean(0)  # fitted on training rows only
                t1 = time.perf_counter()
                logits, keys = base.score(model, stream)
                score_us = (time.perf_counter() - t1) / len(stream) * 1e6
                prob = sigmoid(logits)
                row = {"base": base_name, "seed": seed, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                       "train_s": t_train, "key_dim": int(keys.shape[1]), "base_score_us": score_us,
                       "strategies": {"base": metrics_of(prob)}, "chosen": {}, "grid": {}}
                # sketch
                t1 = time.perf_counter()
                best = (-1.0, {})
                for bits in args.bits:
                    mem = SketchMemory(keys.shape[1], args.arrays, bits, tau=1.0, seed=seed, center=center)
                    r = stream_memory(mem, keys, prob, stream.label, slices)
                    g, c = best_on_valid(prob, r, {"arrays": args.arrays, "bits": bits, "bytes": mem.nbytes})
                    row["grid"][f"sketch bits={bits}"] = {"valid_gauc": g, **c}
                    if g > best[0]:
                        best, best_r = (g, c), r
                c = best[1]
                row["strategies"]["sketch"] = metrics_of(compensate(prob, best_r, c["lam"], c["gamma"]))
                row["chosen"]["sketch"] = c
                row["sketch_s"] = time.perf_counter() - t1
                # ANN
                t1 = time.perf_counter()
                best = (-1.0, {})
                for k in args.knn_k:
                    mem = KNNMemory(keys.shape[1], k=k, tau=args.knn_tau, backend=backend)
                    r = stream_memory(mem, keys, prob, stream.label, slices)
                    g, c = best_on_valid(prob, r, {"k": k, "tau": args.knn_tau, "bytes": mem.nbytes})
                    row["grid"][f"ann k={k}"] = {"valid_gauc": g, **c}
                    if g > best[0]:
                        best, best_r = (g, c), r
                c = best[1]
                row["strategies"]["ann"] = metrics_of(compensate(prob, best_r, c["lam"], c["gamma"]))
                row["chosen"]["ann"] = c
                row["ann_s"] = time.perf_counter() - t1
                # incremental fine-tuning
                t1 = time.perf_counter()
                best = (-1.0, {})
                for lr in args.ft_lr:
                    ft = stream_fine_tune(base, copy.deepcopy(model), stream, slices, lr, args.ft_batch, seed=seed)
                    m = metrics_of(sigmoid(ft))
                    row["grid"][f"finetune lr={lr:g}"] = {"valid_gauc": m["valid"]["gauc"], "lr": lr}
                    if m["valid"]["gauc"] > best[0]:
                        best = (m["valid"]["gauc"], {"lr": lr, "batch": args.ft_batch})
                        row["strategies"]["finetune"] = m
                row["chosen"]["finetune"] = best[1]
                row["finetune_s"] = time.perf_counter() - t1
                if base_name not in overhead:
                    overhead[base_name] = measure_overhead(keys, prob, stream.label, center, row["chosen"], backend,
                                                           seed, score_us)
            row["wall_s"] = time.perf_counter() - t0
            runs.append(row)
            s = row["strategies"]
            print(f"{base_name:6s} seed {seed}: best epoch {res.best_epoch}/{res.epochs_run} run, test gAUC "
                  + ", ".join(f"{k} {s[k]['test']['gauc']:.4f}" for k in STRATEGIES)
                  + f" | sketch {row['chosen']['sketch']}, ann {row['chosen']['ann']} | train {t_train:.0f} s, "
                  f"sketch {row['sketch_s']:.0f} s, ann {row['ann_s']:.0f} s, finetune {row['finetune_s']:.0f} s",
                  flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                "torch": torch.__version__, "cpus": os.cpu_count(),
                                                "tables": data.tables, "overhead": overhead, "runs": runs},
                                               indent=1, default=str))
    summarise(runs, overhead)
    print(f"\n{len(runs)} runs in {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    return 0


def _timed(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (the least disturbed on a shared machine), seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_overhead(keys, prob, labels, center, chosen: dict, backend: str, seed: int, score_us: float) -> dict:
    """µs per sample of a write and a read, batched (1,024 rows) and one row at a time, with the
    chosen configurations, on a memory holding the whole stream; memory footprint in bytes."""
    from trainers.reloop.memory import KNNMemory, SketchMemory

    out = {"base_score_us_per_sample": score_us, "stream_rows": int(len(keys))}
    q = keys[:1024]
    s = chosen["sketch"]
    mem = SketchMemory(keys.shape[1], s["arrays"], s["bits"], seed=seed, center=center)
    mem.write(keys, labels, prob)
    out["sketch"] = {
        "config": s, "bytes": mem.nbytes, "planes_bytes": mem.planes_nbytes,
        "write_us_batched": _timed(lambda: mem.write(q, labels[:1024], prob[:1024]), 5) / len(q) * 1e6,
        "read_us_batched": _timed(lambda: mem.read(q), 5) / len(q) * 1e6,
        "write_us_single": _timed(lambda: [mem.write(q[i:i + 1], labels[i:i + 1], prob[i:i + 1]) for i in range(200)], 3)
        / 200 * 1e6,
        "read_us_single": _timed(lambda: [mem.read(q[i:i + 1]) for i in range(200)], 3) / 200 * 1e6,
    }
    a = chosen["ann"]
    variants = [("ann_" + backend, backend, 0)]
    if backend != "numpy":  # the fallback, and faiss's IVF (the official code's index: nlist 100)
        variants += [("ann_numpy", "numpy", 0), ("ann_faiss_ivf100", "faiss", 100)]
    for name, b, nlist in variants:
        knn = KNNMemory(keys.shape[1], k=a["k"], tau=a["tau"], backend=b, nlist=nlist)
        t0 = time.perf_counter()
        knn.write(keys, labels, prob)
        write_all = time.perf_counter() - t0
        out[name] = {
            "config": {**a, "nlist": nlist}, "bytes": knn.nbytes, "stored": len(knn),
            "write_us_batched": write_all / len(keys) * 1e6,
            "read_us_batched": _timed(lambda: knn.read(q), 3) / len(q) * 1e6,
            "read_us_single": _timed(lambda: [knn.read(q[i:i + 1]) for i in range(50)], 2) / 50 * 1e6,
        }
    return out


def _ms(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.fmean(vals):.4f} ± {sd:.4f}"


def summarise(runs: list[dict], overhead: dict) -> None:
    """Per base: strategies × (per test day and overall) AUC and gAUC, mean ± sample SD over seeds."""
    for base in dict.fromkeys(r["base"] for r in runs):
        rs = [r for r in runs if r["base"] == base]
        days = [k for k in rs[0]["strategies"]["base"] if k not in ("valid", "test")]
        print(f"\n{base} ({len(rs)} seeds: {', '.join(str(r['seed']) for r in rs)}; best epochs "
              f"{', '.join(str(r['best_epoch']) for r in rs)})")
        for metric in ("gauc", "auc"):
            print(f"\n| {base}: test {metric} | " + " | ".join(days) + " | all test days | validation days |")
            print("|---" * (len(days) + 3) + "|")
            for s in STRATEGIES:
                cells = [_ms([r["strategies"][s][d][metric] for r in rs]) for d in days + ["test", "valid"]]
                print(f"| {s} | " + " | ".join(cells) + " |")
        for s in STRATEGIES[1:]:
            diffs = [r["strategies"][s]["test"]["gauc"] - r["strategies"]["base"]["test"]["gauc"] for r in rs]
            diffa = [r["strategies"][s]["test"]["auc"] - r["strategies"]["base"]["test"]["auc"] for r in rs]
            print(f"{s} - base, test (paired per seed): gAUC {', '.join(f'{d:+.4f}' for d in diffs)}; "
                  f"AUC {', '.join(f'{d:+.4f}' for d in diffa)}")
        for s in ("sketch", "ann"):
            print(f"chosen {s}: " + "; ".join(str({k: v for k, v in r["chosen"][s].items() if k != "bytes"}) for r in rs))
    if overhead:
        print("\noverhead (µs per sample; best of repeats):")
        print(json.dumps(overhead, indent=1, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
