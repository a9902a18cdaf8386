"""Look-alike users at scale: time and candidate pairs of the SimHash job at 100K and 1M users.

Synthetic clustered vectors (``benchmarks/_vectors.py``, ``synthetic_user_vectors``, 32 dims). Prints,
per size, the seconds, the (user, candidate) pairs whose exact cosine was computed, pairs per
user, the ratio to the brute-force count n·(n-1) of (user, other user) pairs (the baseline,
counted, not run), the bands used and the recall@50 the job measures on its 1,000 held-out
users. Default LSH parameters (``LshParams()``, the same as ``recfeat.yaml``: automatic bands
from 32); ``--no-auto-bands`` keeps ``--bands`` fixed.

    .venv/bin/python benchmarks/lookalike_scale.py [--users 100000 1000000] [--bands 64] [--window 32] [--no-auto-bands]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    import pandas as pd

    from benchmarks._vectors import synthetic_user_vectors
    from features.lookalike.kernels import LshParams, lookalike_topk, pairs_evaluated
    from pipelines.settings import SparkSettings
    from pipelines.spark import get_spark

    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--bands", type=int, help="override the default number of bands")
    ap.add_argument("--window", type=int, help="override the default window")
    ap.add_argument("--auto-bands", action=argparse.BooleanOptionalAction, default=True, help="automatic bands (default on)")
    args = ap.parse_args()
    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=8, driver_memory="8g"))
    params = LshParams()
    params = LshParams(bands=args.bands or params.bands, window=args.window or params.window, auto_bands=args.auto_bands)
    prev = None
    for n in args.users:
        ids, mat = synthetic_user_vectors(n, args.dim, seed=1)
        df = spark.createDataFrame(pd.DataFrame({"user_id": ids, "vector": list(mat)})).persist()
        df.count()
        t = time.perf_counter()
        out, stats = lookalike_topk(df, params)
        out = out.persist()
        rows = out.count()
        pairs = pairs_evaluated(out)
        secs = time.perf_counter() - t
        brute = n * (n - 1)
        print(f"users={n:,} seconds={secs:.1f} rows={rows:,} pairs_evaluated={pairs:,} pairs_per_user={pairs / n:.0f} "
              f"brute_force_pairs={brute:,} ratio_to_brute_force={pairs / brute:.2e} "
              f"held_out_recall_estimate={stats.get('recall_estimate')} (bands {stats['bands']}, tried {stats.get('bands_tried', '-')}, bits {params.bits_per_band}, "
              f"window {params.window}, projection {params.projection_dims})", flush=True)
        if prev:
            print(f"  growth vs {prev[0]:,} users: users x{n / prev[0]:.1f}, pairs x{pairs / prev[1]:.1f}, time x{secs / prev[2]:.1f} (quadratic: x{(n / prev[0]) ** 2:.0f})")
        prev = (n, pairs, secs)
        out.unpersist()
        df.unpersist()


if __name__ == "__main__":
    main()
