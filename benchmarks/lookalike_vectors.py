"""The ``user_vectors`` step on a committed warehouse: seconds per build, by engine.

Rebuilds ``user_vectors`` (``pipelines.lookalike.build_user_vectors_table``: reads, profile
block, behaviour block, write and commit) ``--reps`` times with each engine pair
(``lookalike.vectors_engine:lookalike.als_engine``; default the local engine, the Spark kernels
with the local ALS, and the Spark kernels with Spark ML's ALS), on a warehouse
that already holds ``events`` and ``users`` (by default the one ``benchmarks/lookalike_synthetic.py``
ingests: the synthetic default of ``make demo``). Prints every build's seconds, the engine
``auto`` chose and the pairs, and the ratio of each pair's best build to the best all-Spark build
(``spark:spark``, the baseline, measured in the same run, the engines interleaved). The first build of a process
also pays the JVM's warm-up, so it is reported but not used for the ratio when there are several.

    nice -n 5 .venv/bin/python benchmarks/lookalike_synthetic.py          # once: builds the warehouse
    nice -n 5 .venv/bin/python benchmarks/lookalike_vectors.py --reps 3
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    from pipelines.lookalike import LookalikeSettings, build_user_vectors_table
    from pipelines.settings import load_settings
    from pipelines.spark import get_spark, stop_spark
    from pipelines.warehouse import Warehouse

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(ROOT, "recfeat.yaml"), help="its spark: and lookalike: sections are used")
    ap.add_argument("--warehouse", default=os.path.join(ROOT, "var", "lookalike_synthetic", "warehouse"))
    ap.add_argument("--reps", type=int, default=2, help="builds per engine")
    ap.add_argument("--engines", default="local:auto,spark:auto,spark:spark",
                    help="comma-separated vectors_engine:als_engine pairs to time (the last is the baseline)")
    args = ap.parse_args()

    project = load_settings(args.config)
    wh = Warehouse(os.path.abspath(args.warehouse))
    if not wh.exists("events"):
        raise SystemExit(f"no events table under {args.warehouse}: run benchmarks/lookalike_synthetic.py first")
    spark = get_spark(project.spark)
    engines = args.engines.split(",")
    times: dict[str, list[float]] = {e: [] for e in engines}
    for rep in range(args.reps):  # engines interleaved, so that a change in the machine's load hits both
        for engine in engines:
            vectors, als = engine.split(":")
            settings = LookalikeSettings.model_validate(
                {**project.lookalike.model_dump(), "vectors_engine": vectors, "als_engine": als})
            t = time.perf_counter()
            stats = build_user_vectors_table(spark, wh, settings).stats["user_vectors"]
            times[engine].append(time.perf_counter() - t)
            print(f"user_vectors engines={engine} build {rep}: seconds={times[engine][-1]:.2f} "
                  f"vectors_engine={stats.get('vectors_engine')} als_engine={stats.get('als_engine')} "
                  f"pairs={stats.get('als_entries')}", flush=True)
    first = engines[0]
    best = {e: min(ts[1:] if e == first and len(ts) > 1 else ts) for e, ts in times.items()}
    base = engines[-1]
    line = " ".join(f"best_seconds[{e}]={s:.2f}" for e, s in best.items())
    line += " " + " ".join(f"ratio[{e}/{base}]={s / best[base]:.2f}" for e, s in best.items() if e != base)
    print(f"RESULT {line}", flush=True)
    stop_spark()


if __name__ == "__main__":
    main()
