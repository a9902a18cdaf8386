"""Look-alike users at scale: the job with the HNSW engine, the SimHash engine, and a faiss HNSW reference.

Synthetic clustered vectors (``benchmarks/_vectors.py``, ``synthetic_user_vectors``, 32 dims,
seed 1) are committed as ``user_vectors`` in a scratch warehouse (not timed). Then, per size, in
one process:

* **job, hnsw**: read the committed ``user_vectors`` files as Arrow, build the index, query it per
  Spark partition and re-rank (``features.lookalike.hnsw.hnsw_topk``), rows materialized
  (persisted and counted) and the pairs summed: everything ``build_lookalike_table`` does but
  the cutoff check and the Delta commit of the result;
* **job, simhash** (sizes up to ``--simhash-max-users``): the same with the SimHash engine
  (``lookalike_topk`` on the committed table read by Spark);
* **reference**: faiss ``IndexHNSWFlat`` with the same parameters (m, ef_construction, inner
  product, and the ef_search the job searched with: its automatic choice, ``--auto-ef-search``)
  built and searched directly on the NumPy matrix with ``--reference-threads``
  OpenMP threads, top ``k + 1`` with the user dropped: no Spark, no exact re-ranking, no rows.

Printed for each: seconds, users per second, peak RSS (the high-water mark of the driver process
from ``resource.getrusage``, and the peak of driver + JVM + Spark Python workers sampled from
``/proc`` every 0.2 s during the phase), the sampled recall@k on the job's held-out sample
(1,000 users, exact top-k by brute force, tie-aware), and the ratio job / reference.

    nice -n 10 .venv/bin/python benchmarks/lookalike_scale.py [--users 100000 1000000] [--simhash-max-users 100000]
        [--m 32 --ef-construction 40 --ef-search 128 --threads 1 --reference-threads 2]
        [--bands 64] [--window 32] [--no-auto-bands]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._memory import TreeRss  # noqa: E402

CUTOFF = dt.datetime(2022, 4, 18, tzinfo=dt.timezone.utc)


def driver_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def reference_search(mat, k: int, m: int, ef_construction: int, ef_search: int, threads: int):
    """faiss HNSW used directly: ``(seconds, neighbours (n, k))``, the user dropped from its own list."""
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(mat.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(mat)
    index.hnsw.efSearch = ef_search
    _, found = index.search(mat, k + 1)
    own = found == np.arange(len(mat))[:, None]
    keep = ~own
    keep[own.sum(axis=1) == 0, k] = False  # the user was not returned: drop the last one instead
    nb = found[keep].reshape(len(mat), k)
    return time.perf_counter() - t, nb


def reference_recall(mat, nb, rows, k: int) -> float:
    """Tie-aware recall@k of the reference's neighbours of ``rows`` (exact cosines of what it
    returned against the exact k-th cosine), as the job's estimate is computed."""
    import numpy as np

    from features.lookalike.lsh import SIM_DECIMALS, exact_kth

    m64 = mat.astype(np.float64)
    kth = exact_kth(m64, rows, k)
    got = nb[rows]
    sims = np.round(np.einsum("bkd,bd->bk", m64[np.where(got >= 0, got, 0)], m64[rows]), SIM_DECIMALS)
    sims = np.where(got >= 0, sims, -np.inf)
    return round(float(np.count_nonzero(sims >= kth[:, None])) / (len(rows) * k), 4)


def main() -> None:
    import numpy as np
    import pyarrow as pa

    from benchmarks._vectors import synthetic_user_vectors
    from features.lookalike import USER_VECTORS
    from features.lookalike.kernels import HnswParams, LshParams, hnsw_topk, lookalike_topk, pairs_evaluated, recall_samples, vectors_matrix
    from pipelines.settings import SparkSettings
    from pipelines.spark import get_spark
    from pipelines.warehouse import Warehouse

    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--simhash-max-users", type=int, default=100_000, help="run the SimHash job at sizes up to this")
    hd = HnswParams()
    ap.add_argument("--m", type=int, default=hd.m)
    ap.add_argument("--ef-construction", type=int, default=hd.ef_construction)
    ap.add_argument("--ef-search", type=int, default=hd.ef_search)
    ap.add_argument("--threads", type=int, default=hd.threads, help="the job's build threads (1: deterministic)")
    ap.add_argument("--auto-ef-search", action=argparse.BooleanOptionalAction, default=hd.auto_ef_search,
                    help="the job's automatic ef_search (default on, as lookalike.hnsw); the reference searches with the "
                    "ef_search the job chose")
    ap.add_argument("--max-ef-search", type=int, default=hd.max_ef_search)
    ap.add_argument("--reference-threads", type=int, default=2, help="OpenMP threads of the faiss reference")
    ap.add_argument("--bands", type=int, help="SimHash: override the default number of bands")
    ap.add_argument("--window", type=int, help="SimHash: override the default window")
    ap.add_argument("--auto-bands", action=argparse.BooleanOptionalAction, default=True, help="SimHash automatic bands (default on)")
    ap.add_argument("--scratch", help="scratch warehouse folder (default: a temporary one)")
    args = ap.parse_args()
    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=8, driver_memory="8g"))
    hp = HnswParams(k=args.k, m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search, threads=args.threads,
                    auto_ef_search=args.auto_ef_search, max_ef_search=args.max_ef_search)
    lp = LshParams(k=args.k)
    lp = LshParams(k=args.k, bands=args.bands or lp.bands, window=args.window or lp.window, auto_bands=args.auto_bands)
    scratch = args.scratch or tempfile.mkdtemp(prefix="lookalike-scale-")
    # Warm-up (not timed): the JVM's first job and the Python workers' start, paid by neither engine.
    spark.range(10_000, numPartitions=2).mapInArrow(lambda batches: batches, "id long").count()
    print(f"hnsw: m {hp.m}, ef_construction {hp.ef_construction}, ef_search {hp.ef_search}, job build threads {hp.threads}, "
          f"reference threads {args.reference_threads}; k {args.k}; warehouse {scratch}", flush=True)
    for n in args.users:
        ids, mat = synthetic_user_vectors(n, args.dim, seed=1)
        wh = Warehouse(os.path.join(scratch, f"n{n}"))
        table = pa.table({
            "user_id": pa.array(ids, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), args.dim).cast(pa.list_(pa.float32())),
            "profile_dim": pa.array(np.zeros(n, np.int32)),
            "behaviour_dim": pa.array(np.full(n, args.dim, np.int32)),
            "n_events": pa.array(np.ones(n, np.int64)),
            "n_positive": pa.array(np.ones(n, np.int64)),
            "cutoff_ts": pa.array([CUTOFF] * n, USER_VECTORS.schema.field("cutoff_ts").type),
        })
        wh.write_arrow(USER_VECTORS, table, producer={"cutoff_ts": CUTOFF.isoformat()})
        del table
        _, held_out = recall_samples(n, 1000, hp.seed)
        results = {}

        with TreeRss() as rss:
            t = time.perf_counter()
            uids, umat = vectors_matrix(wh.read_arrow(USER_VECTORS.name, columns=["user_id", "vector"]))
            out, stats = hnsw_topk(spark, uids, umat, hp)
            out = out.persist()
            rows = out.count()
            pairs = pairs_evaluated(out)
            secs = time.perf_counter() - t
            out.unpersist()
            del uids, umat
        results["job hnsw"] = (secs, stats.get("recall_estimate"), rss.peak_mb, driver_peak_mb(),
                               f"rows {rows:,}, pairs {pairs:,} ({pairs / n:.0f} per user), index {stats['index_bytes'] / 1e6:.0f} MB, "
                               f"ef_search {stats['ef_search']} (tried {stats.get('ef_search_tried', '-')})")
        ef_search = int(stats["ef_search"])  # the reference searches as far as the job did

        if n <= args.simhash_max_users:
            with TreeRss() as rss:
                t = time.perf_counter()
                out, st = lookalike_topk(wh.read_spark(spark, USER_VECTORS.name), lp)
                out = out.persist()
                rows = out.count()
                pairs = pairs_evaluated(out)
                secs = time.perf_counter() - t
                out.unpersist()
            results["job simhash"] = (secs, st.get("recall_estimate"), rss.peak_mb, driver_peak_mb(),
                                      f"rows {rows:,}, pairs {pairs:,} ({pairs / n:.0f} per user), bands {st['bands']} "
                                      f"(tried {st.get('bands_tried', '-')}), window {lp.window}")

        with TreeRss() as rss:
            secs, nb = reference_search(mat, args.k, hp.m, hp.ef_construction, ef_search, args.reference_threads)
        results["reference"] = (secs, reference_recall(mat, nb, held_out, args.k), rss.peak_mb, driver_peak_mb(),
                                f"faiss IndexHNSWFlat, {args.reference_threads} threads, efSearch {ef_search}, no Spark")
        del nb

        ref_secs = results["reference"][0]
        print(f"users={n:,} (dim {args.dim}); load average {os.getloadavg()[0]:.1f}", flush=True)
        for name, (secs, recall, tree, driver, note) in results.items():
            print(f"  {name:<12} seconds={secs:.1f} users_per_s={n / secs:,.0f} peak_rss_tree_mb={tree:,.0f} "
                  f"driver_maxrss_mb={driver:,.0f} sampled_recall@{args.k}={recall} ratio_to_reference={secs / ref_secs:.2f}  ({note})",
                  flush=True)


if __name__ == "__main__":
    main()
