"""HNSW settings of ``lookalike_users`` on a committed ``user_vectors``: recall@k and seconds per setting.

For each ``(m, ef_construction)`` the index is built the way the job builds it
(:func:`features.lookalike.hnsw.build_index` on the distinct vectors, ``--threads`` OpenMP
threads), and for each ``ef_search`` the held-out sample the job reports on
(:func:`features.lookalike.lsh.recall_samples`, ``lookalike.hnsw.recall_sample`` users, the
job's seed) is searched and re-ranked as the job ranks it (:func:`features.lookalike.hnsw.hnsw_recall`:
tie-aware recall@k against the exact k-th cosine, brute force). Prints per setting: build
seconds, the sample's search-and-rank seconds per 1,000 users (one thread, as a Spark task
queries), the projected query seconds for every user (that rate times the users, spread over
``--task-slots`` tasks), and the recall. No Spark, no rows written: this chooses settings; the
job itself is what ``benchmarks/lookalike_scale.py`` times.

    .venv/bin/python benchmarks/lookalike_hnsw_sweep.py --warehouse var/bench-e2e-10m/warehouse \\
        --ef-construction 40 80 --ef-search 128 256 512
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv: list[str] | None = None) -> int:
    import faiss
    import numpy as np

    from features.lookalike import USER_VECTORS
    from features.lookalike.hnsw import HnswParams, build_index, recall_against, vector_groups, vectors_matrix
    from features.lookalike.lsh import exact_kth, recall_samples
    from pipelines.lookalike import LookalikeSettings
    from pipelines.warehouse import Warehouse

    defaults = LookalikeSettings().hnsw
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", required=True, help="a warehouse that holds user_vectors")
    ap.add_argument("--m", type=int, nargs="+", default=[defaults.m])
    ap.add_argument("--ef-construction", type=int, nargs="+", default=[defaults.ef_construction])
    ap.add_argument("--ef-search", type=int, nargs="+", default=[defaults.ef_search])
    ap.add_argument("--threads", type=int, default=defaults.threads, help="build threads (the job's default: 1)")
    ap.add_argument("--sample", type=int, default=defaults.recall_sample, help="held-out users (the job's default)")
    ap.add_argument("--task-slots", type=int, default=os.cpu_count() or 1, help="Spark task slots for the projection")
    args = ap.parse_args(argv)

    wh = Warehouse(os.path.abspath(args.warehouse))
    t0 = time.perf_counter()
    ids, mat = vectors_matrix(wh.read_arrow(USER_VECTORS.name, columns=["user_id", "vector"]))
    entries, groups = vector_groups(mat)
    n = len(mat)
    base = HnswParams(k=LookalikeSettings().k, seed=LookalikeSettings().seed, recall_sample=args.sample, auto_ef_search=False)
    _, held_out = recall_samples(n, base.recall_sample, base.seed)
    kk = min(base.k, n - 1)
    t = time.perf_counter()
    kth = exact_kth(mat.astype(np.float64), held_out, kk)  # the sample's exact k-th cosine, once
    print(f"user_vectors: {n:,} users, dim {mat.shape[1]}, {groups.entries:,} distinct vectors "
          f"(largest identical group {groups.largest:,}); read in {t - t0:.1f} s, exact k-th cosines of the "
          f"sample in {time.perf_counter() - t:.1f} s; k {base.k}, held-out sample {len(held_out):,}, "
          f"build threads {args.threads}, load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'m':>4} {'ef_c':>5} {'ef_s':>5} {'build s':>8} {'rank s/1k':>10} {'all users s':>12} {'recall@k':>9}")
    for m in args.m:
        for efc in args.ef_construction:
            params = dataclasses.replace(base, m=m, ef_construction=efc, threads=args.threads)
            t = time.perf_counter()
            index = build_index(entries, params)
            build_s = time.perf_counter() - t
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)  # queries are single-threaded, as in the job's tasks
            try:
                for efs in args.ef_search:
                    p = dataclasses.replace(params, ef_search=max(efs, base.k))
                    index.hnsw.efSearch = p.ef_search
                    t = time.perf_counter()  # the job's recall estimate, the exact k-th cosines computed once
                    recall = recall_against(kth, index, entries, groups, p, held_out)
                    per_1k = (time.perf_counter() - t) / max(len(held_out), 1) * 1000
                    print(f"{m:>4} {efc:>5} {p.ef_search:>5} {build_s:>8.1f} {per_1k:>10.2f} "
                          f"{per_1k * n / 1000 / args.task_slots:>12.1f} {recall:>9.4f}", flush=True)
            finally:
                faiss.omp_set_num_threads(before)
            del index
    return 0


if __name__ == "__main__":
    sys.exit(main())
