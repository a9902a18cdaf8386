"""RAR on the KuaiRand slice (click label): DeepFM and DIN, each without RAR and with RAR's u2u, i2i or both sources.

Builds (once) a warehouse under ``--root`` with ``events``, ``items`` and ``users`` of
``../shared/data/kuairand-pure-slice`` (the settings of ``configs/kuairand.yaml``, as the other
results scripts), then builds ``user_vectors`` -> ``lookalike_users`` and ``item_neighbors`` ->
``recall_items`` once per cutoff of ``--cutoffs`` through the pipeline jobs, with the
``lookalike:``/``recall:`` settings of ``configs/kuairand.yaml`` and ``cutoff_ts`` overridden, so
each table holds one committed version (one build) per cutoff. A training example at time ``t``
then uses the build with the latest cutoff ``<= t`` (``trainers.rar.selection``).

The grid: backbone {deepfm, din} x sources {none, u2u, i2i, both} x ``--seeds``; the data are
loaded once per backbone (``trainers.rar.load_rar_data``) and every configuration is trained on
them with ``trainers.rar.train_on_data``. Printed: test gAUC (per-user AUC weighted by
impressions), AUC and logloss, mean +- sample standard deviation over seeds, and each variant's
difference to its backbone without RAR.

    nice -n 10 .venv/bin/python benchmarks/rar_results.py --out var/rar-logs/kuairand.json   # the docs/results.md table
    nice -n 10 .venv/bin/python benchmarks/rar_results.py --prepare-only                     # only the warehouse and builds
    nice -n 10 .venv/bin/python benchmarks/rar_results.py --seeds 61 --epochs 1 --backbones deepfm   # a quick look
"""
from __future__ import annotations

import argparse
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
sys.path.insert(0, str(REPO / "benchmarks"))

SHARED_DATA = REPO.parent / "shared" / "data" / "kuairand-pure-slice"
DEFAULT_ROOT = REPO / "var" / "rar"
CONFIG = REPO / "configs" / "kuairand.yaml"
METRICS = ("gauc", "auc", "logloss")
#: Beijing midnights (16:00Z) three days apart: the training days 04-25 .. 05-03 see both builds
#: (the first 2.7 days none), validation and test (05-04 .. 05-08) the second. Weekly cutoffs would
#: leave the 9 training days of the 14-day slice one build.
DEFAULT_CUTOFFS = ("2022-04-27T16:00:00Z", "2022-04-30T16:00:00Z")
SOURCES = {"none": (), "u2u": ("u2u",), "i2i": ("i2i",), "both": ("u2u", "i2i"), "self": ("u2u",), "self+i2i": ("u2u", "i2i")}
#: Ablations beyond the sources: ``self`` is u2u without look-alikes (the user set is the user's own
#: RAR embedding alone), so u2u's gain can be told apart from adding a user embedding.
OVERRIDES = {"self": {"k_users": 0}, "self+i2i": {"k_users": 0}}


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def prepare(root: Path, cutoffs: list[dt.datetime], data: Path = SHARED_DATA, config: Path = CONFIG,
            lookalike: dict | None = None) -> str:
    """The warehouse URI with the slice's tables and one look-alike and recall build per cutoff
    (each cutoff whose build is already committed is skipped; an input table already built as of
    the cutoff is reused). ``lookalike`` overrides ``lookalike:`` settings (``lsh`` merged)."""
    from _kuairand_warehouse import prepare_kuairand

    uri = prepare_kuairand(root, ("events", "items", "users"), data, config)
    from features.lookalike import LOOKALIKE_USERS, USER_VECTORS
    from features.recall import ITEM_NEIGHBORS, RECALL_ITEMS
    from pipelines.lookalike import LookalikeSettings, build_lookalike_table, build_user_vectors_table
    from pipelines.recall import RecallSettings, build_item_neighbors_table, build_recall_table
    from pipelines.settings import SparkSettings, load_settings
    from pipelines.spark import get_spark
    from pipelines.warehouse import Warehouse
    from trainers.rar.selection import build_cutoff, list_builds

    wh = Warehouse(uri, keep_versions=max(5, 2 * len(cutoffs)))
    project = load_settings(config)

    def done(contract) -> set[dt.datetime]:
        if not wh.exists(contract.name):
            return set()
        return {b.cutoff for b in list_builds(uri, contract)}

    def latest_cutoff(contract) -> dt.datetime | None:
        if not wh.exists(contract.name):
            return None
        return build_cutoff(uri, contract, wh.current_version(contract.name))

    for cutoff in sorted(cutoffs):
        if cutoff in done(LOOKALIKE_USERS) and cutoff in done(RECALL_ITEMS):
            continue
        spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4, driver_memory="4g"))
        base = project.lookalike.model_dump()
        over = dict(lookalike or {})
        lsh = {**base["lsh"], **over.pop("lsh", {})}
        look = LookalikeSettings.model_validate({**base, **over, "lsh": lsh, "cutoff_ts": cutoff})
        rec = RecallSettings.model_validate({**project.recall.model_dump(), "cutoff_ts": cutoff}).resolved(look)
        t0 = time.perf_counter()
        if cutoff not in done(LOOKALIKE_USERS):
            if latest_cutoff(USER_VECTORS) != cutoff:
                build_user_vectors_table(spark, wh, look)
            stats = build_lookalike_table(spark, wh, look).stats["lookalike_users"]
            print(f"lookalike_users as of {cutoff.isoformat()}: {time.perf_counter() - t0:.0f} s, recall estimate "
                  f"{stats.get('recall_estimate', stats.get('lsh_recall_estimate'))}, bands {stats.get('lsh_bands')}", flush=True)
        if cutoff not in done(RECALL_ITEMS):
            if latest_cutoff(ITEM_NEIGHBORS) != cutoff:
                build_item_neighbors_table(spark, wh, rec)
            build_recall_table(spark, wh, rec)
        print(f"builds as of {cutoff.isoformat()}: {time.perf_counter() - t0:.0f} s", flush=True)
    return uri


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the warehouse and run directories live")
    p.add_argument("--data", type=Path, default=SHARED_DATA, help="the KuaiRand-Pure slice folder")
    p.add_argument("--cutoffs", nargs="+", default=list(DEFAULT_CUTOFFS), help="UTC cutoffs of the look-alike/recall builds")
    p.add_argument("--lookalike-k", type=int, default=20, help="lookalike.k of the builds (RAR reads k_users <= it)")
    p.add_argument("--bands", type=int, default=32, help="lookalike.lsh.bands of the builds (fixed: auto_bands off)")
    p.add_argument("--window", type=int, default=16, help="lookalike.lsh.window of the builds")
    p.add_argument("--prepare-only", action="store_true", help="build the warehouse and the builds, train nothing")
    p.add_argument("--backbones", nargs="+", default=["deepfm", "din"], choices=["deepfm", "din"])
    p.add_argument("--sources", nargs="+", default=["none", "u2u", "i2i", "both"], choices=list(SOURCES),
                   help="variants: the sources used (self, self+i2i: u2u with k_users 0, an ablation)")
    p.add_argument("--seeds", type=int, nargs="+", default=[61, 62, 63])
    p.add_argument("--epochs", type=int, default=3, help="epoch cap per run")
    p.add_argument("--patience", type=int, default=1, help="epochs without a validation gAUC gain before stopping")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other RARConfig field")
    p.add_argument("--out", type=Path, default=None, help="also write every run's metrics as JSON here (after each run)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, help="train nothing: print the table of these --out files")
    args = p.parse_args(argv)
    if args.merge:
        runs = [r for f in args.merge for r in json.loads(f.read_text())["runs"]]
        summarise(runs)
        return 0

    cutoffs = [_utc(c) for c in args.cutoffs]
    lookalike = {"k": args.lookalike_k, "lsh": {"auto_bands": False, "bands": args.bands, "window": args.window}}
    needed = sorted({s for name in args.sources for s in SOURCES[name]})  # the sources some variant uses
    uri = prepare(args.root, cutoffs if needed or args.prepare_only else [], args.data, lookalike=lookalike)
    if args.prepare_only:
        return 0
    from pipelines.spark import stop_spark

    stop_spark()

    from trainers.config import build_config, parse_overrides
    from trainers.rar import RARConfig, load_rar_data, train_on_data

    extra = parse_overrides(args.set)

    def config(backbone: str, sources: str, seed: int) -> RARConfig:
        base = {"warehouse": uri, "runs_root": str(args.root / "runs"), "seed": seed, "epochs": args.epochs,
                "patience": args.patience, "threads": args.threads, "progress": False, "backbone": backbone,
                "sources": list(SOURCES[sources])}
        return build_config(RARConfig, base, OVERRIDES.get(sources, {}), extra, origin="rar_results")

    t_start = time.perf_counter()
    runs: list[dict] = []
    meta: dict = {}
    for backbone in args.backbones:
        # one load per backbone, with every source a variant needs: a variant only uses what it names
        data = load_rar_data(config(backbone, next(k for k, v in SOURCES.items() if set(v) == set(needed)), args.seeds[0]))
        meta[backbone] = {"rows": {k: len(s) for k, s in data.splits.items()}, "selection": data.selection_stats,
                          "tables": data.tables, "read_s": data.read_s}
        print(f"{backbone}: loaded in {data.read_s:.1f} s: rows {meta[backbone]['rows']}, selection {data.selection_stats}",
              flush=True)
        for sources in args.sources:
            for seed in args.seeds:
                cfg = config(backbone, sources, seed)
                t0 = time.perf_counter()
                m = train_on_data(cfg, data, write_run=False).metrics
                wall = time.perf_counter() - t0
                row = {"backbone": backbone, "sources": sources, "seed": seed, "wall_s": wall,
                       "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
                       **{f"test_{k}": m["test"][k] for k in METRICS}, **{f"valid_{k}": m["valid"][k] for k in METRICS}}
                runs.append(row)
                if args.out:
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps({"config": cfg.model_dump(mode="json"), "cutoffs": args.cutoffs,
                                                    "data": meta, "runs": runs}, indent=1, default=str))
                print(f"{backbone:6s} {sources:8s} seed {seed}: " + " ".join(f"{k} {m['test'][k]:.4f}" for k in METRICS)
                      + f" | best epoch {m['best_epoch']}, {m['epochs_run']} run, {wall:.0f} s", flush=True)
    summarise(runs)
    print(f"\n{len(runs)} runs in {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    return 0


def summarise(runs: list[dict]) -> None:
    """The results table (mean ± sample standard deviation over seeds) and each variant's change."""
    print("\n| backbone | RAR sources | test gAUC | test AUC | test logloss | Δ gAUC | Δ AUC | Δ logloss | best epochs |")
    print("|---|---|---|---|---|---|---|---|---|")
    means: dict[tuple[str, str], dict[str, float]] = {}
    for backbone in dict.fromkeys(r["backbone"] for r in runs):
        for sources in [s for s in SOURCES if any(r["backbone"] == backbone and r["sources"] == s for r in runs)]:
            rs = [r for r in runs if r["backbone"] == backbone and r["sources"] == sources]
            cells, m = [], {}
            for k in METRICS:
                vals = [r[f"test_{k}"] for r in rs]
                m[k] = statistics.fmean(vals)
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{m[k]:.4f} ± {sd:.4f}")
            means[(backbone, sources)] = m
            base = means.get((backbone, "none"))
            delta = [f"{m[k] - base[k]:+.4f}" if base and sources != "none" else "—" for k in METRICS]
            print(f"| {backbone} | {sources} | " + " | ".join(cells) + " | " + " | ".join(delta) + " | "
                  + ", ".join(str(r["best_epoch"]) for r in rs) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
