"""Look-alike users and recall pools on the KuaiRand-Pure slice: the two acceptance figures.

1. **LSH quality**: recall@50 of ``lookalike_users`` (SimHash sorted-window candidates + exact
   re-ranking, with the ``lookalike:`` settings of ``configs/kuairand.yaml``) against an exact brute-force cosine top-50 over the real
   ``user_vectors``. Two readings: by id (the exact list breaks ties by id, as the job does) and
   tie-aware (an LSH neighbour counts when its cosine reaches the exact 50th cosine).
2. **Usefulness**: ``pipelines.recall.evaluate_recall``: the hit rate of ``recall_items`` on the
   clicked videos of the day after the cutoff (videos the user had not seen before it) against a
   popularity pool of the same size with the same exclusion (popularity over the 7-day i2i
   window, and over the whole history before the cutoff).

The slice (``../shared/data/kuairand-pure-slice``) is ingested into a fresh, git-ignored
warehouse under ``var/`` (events through the Beam pipeline with the configuration's source and
``ingest:`` settings, then ``users`` and ``items``); the four tables are built as of the cutoff with the ``lookalike:`` settings of
``configs/kuairand.yaml`` (``--config`` for another file; ``--bands``, ``--auto-bands/--no-auto-bands``,
``--window`` and ``--projection-dims`` override the LSH parameters). ``--lookalike-only`` reuses the committed
``user_vectors`` and rebuilds only ``lookalike_users`` (figure 1 for other LSH parameters).

Default cutoff 2022-05-07T16:00:00Z = 2022-05-08 00:00 Beijing time: the log's days are Beijing
days, so this leaves the 13 full Beijing days 04-25 .. 05-07 of history and the last full day of
the slice (05-08, 15,581 impressions, 7,093 clicks) as the next day; Beijing midnight is also the
activity trough. A UTC-midnight cutoff on 05-08 would leave only 16 hours after it (the slice ends
at 05-08 24:00 Beijing = 16:00Z).

    nice -n 10 .venv/bin/python benchmarks/lookalike_kuairand.py [--cutoff 2022-05-07T16:00:00Z]
    nice -n 10 .venv/bin/python benchmarks/lookalike_kuairand.py --reuse --lookalike-only --no-auto-bands --bands 16 --window 64
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _utc(text: str) -> dt.datetime:
    from features.timeutil import as_utc

    return as_utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


def exact_kth(mat, k: int, block: int = 1024):
    """Brute force: each row's k-th largest and largest cosine to the other rows (rounded as the
    job rounds)."""
    import numpy as np

    from features.lookalike.kernels import SIM_DECIMALS

    n = len(mat)
    kk = min(k, n - 1)
    out, top = np.empty(n), np.empty(n)
    for start in range(0, n, block):
        sim = np.round(mat[start : start + block] @ mat.T, SIM_DECIMALS)
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf
        out[start : start + block] = -np.partition(-sim, kk - 1, axis=1)[:, kk - 1]
        top[start : start + block] = sim.max(axis=1)
    return out, top


def lsh_quality(warehouse, k: int) -> dict:
    """recall@k of the committed ``lookalike_users`` against brute force over ``user_vectors``."""
    import numpy as np

    from benchmarks._vectors import exact_topk

    vec = warehouse.read_arrow("user_vectors", columns=["user_id", "vector", "n_positive"]).to_pandas()
    vec = vec.sort_values("user_id", kind="stable").reset_index(drop=True)
    ids = vec["user_id"].to_numpy().astype(object)
    mat = np.stack(vec["vector"].to_numpy()).astype(np.float64)
    n = len(ids)
    kk = min(k, n - 1)
    t = time.perf_counter()
    exact = exact_topk(ids, mat, k)
    kth, top1 = exact_kth(mat, k)
    brute_s = time.perf_counter() - t
    look = warehouse.read_arrow("lookalike_users", columns=["user_id", "neighbor_user_id", "similarity"]).to_pandas()
    lsh = look.groupby("user_id")["neighbor_user_id"].apply(list).to_dict()
    lsh_sim = look.groupby("user_id")["similarity"].apply(np.array).to_dict()
    by_id = np.empty(n)
    tie_aware = np.empty(n)
    for i, u in enumerate(ids):
        got = lsh.get(u, [])
        by_id[i] = len(set(got) & set(exact[u])) / kk
        sims = lsh_sim.get(u, np.array([]))
        tie_aware[i] = min(int((sims >= kth[i] - 1e-9).sum()), kk) / kk
    # Ties at the k-th cosine (identical or collinear vectors): the id reading then depends on
    # which of the tied users happen to be candidates.
    n_ge = np.zeros(n, dtype=np.int64)
    for start in range(0, n, 1024):
        sim = np.round(mat[start : start + 1024] @ mat.T, 12)
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf
        n_ge[start : start + 1024] = (sim >= kth[start : start + 1024, None] - 1e-9).sum(axis=1)
    behaviour = vec["n_positive"].to_numpy() > 0
    distinct_vectors = len(np.unique(np.round(mat, 6), axis=0))
    return {
        "users": n,
        "dim": mat.shape[1],
        "distinct_vectors": distinct_vectors,
        "recall_by_id": float(by_id.mean()),
        "recall_tie_aware": float(tie_aware.mean()),
        "recall_by_id_with_behaviour": float(by_id[behaviour].mean()) if behaviour.any() else float("nan"),
        "recall_by_id_profile_only": float(by_id[~behaviour].mean()) if (~behaviour).any() else float("nan"),
        "users_with_behaviour": int(behaviour.sum()),
        "users_with_kth_ties": int((n_ge > kk).sum()),
        "users_recall_below_0.5": int((by_id < 0.5).sum()),
        "median_kth_similarity": float(np.median(kth)),
        "median_top1_similarity": float(np.median(top1)),
        **{
            f"recall_by_id_kth_in_[{lo},{hi})": float(by_id[(kth >= lo) & (kth < hi)].mean())
            for lo, hi in [(0.4, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.01)]
            if ((kth >= lo) & (kth < hi)).any()
        },
        **{
            f"users_kth_in_[{lo},{hi})": int(((kth >= lo) & (kth < hi)).sum())
            for lo, hi in [(0.4, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.01)]
        },
        "brute_force_seconds": brute_s,
    }


def main() -> None:
    from pipelines.ingest import ingest_dimension, ingest_with_settings
    from pipelines.lookalike import build_lookalike_table, build_user_vectors_table
    from pipelines.recall import build_item_neighbors_table, build_recall_table, evaluate_recall
    from pipelines.lookalike import LookalikeSettings
    from pipelines.recall import RecallSettings
    from pipelines.settings import SourceConfig, SparkSettings, load_settings
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark, stop_spark
    from pipelines.warehouse import Warehouse

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "kuairand-pure-slice"))
    ap.add_argument("--warehouse", default=os.path.join(ROOT, "var", "lookalike_kuairand", "warehouse"))
    ap.add_argument("--cutoff", default="2022-05-07T16:00:00Z", help="UTC cutoff (default: 05-08 00:00 Beijing)")
    ap.add_argument("--reuse", action="store_true", help="keep an already ingested warehouse (skip ingestion)")
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "kuairand.yaml"), help="its lookalike: and recall: sections are used")
    ap.add_argument("--bands", type=int, help="override lookalike.lsh.bands (with lsh.auto_bands: the first try)")
    ap.add_argument("--auto-bands", action=argparse.BooleanOptionalAction, default=None, help="override lookalike.lsh.auto_bands")
    ap.add_argument("--window", type=int, help="override lookalike.lsh.window")
    ap.add_argument("--projection-dims", type=int, help="override lookalike.lsh.projection_dims (0 = hash raw vectors)")
    ap.add_argument("--item-similarity", choices=["cosine", "swing"], help="override recall.similarity")
    ap.add_argument("--recall-fill", choices=["none", "popular"], help="override recall.fill")
    ap.add_argument("--lookalike-only", action="store_true", help="reuse user_vectors; rebuild and measure lookalike_users only")
    ap.add_argument("--recall-only", action="store_true", help="rebuild and measure item_neighbors and recall_items only")
    args = ap.parse_args()
    if not os.path.isdir(args.data):
        sys.exit(f"KuaiRand slice not found at {args.data}")

    cutoff = _utc(args.cutoff)
    lsh = {k: v for k, v in (("bands", args.bands), ("auto_bands", args.auto_bands), ("window", args.window),
                             ("projection_dims", args.projection_dims)) if v is not None}
    rec = {k: v for k, v in (("similarity", args.item_similarity), ("fill", args.recall_fill)) if v is not None}
    project = load_settings(args.config)
    base = project.lookalike.model_dump()
    settings = LookalikeSettings.model_validate({**base, "cutoff_ts": cutoff, "lsh": {**base["lsh"], **lsh}})
    recall = RecallSettings.model_validate({**project.recall.model_dump(), "cutoff_ts": cutoff, **rec}).resolved(settings)
    print(f"cutoff_ts={settings.cutoff_ts.isoformat()} k={settings.k} bands={settings.lsh.bands} auto_bands={settings.lsh.auto_bands} "
          f"bits_per_band={settings.lsh.bits_per_band} window={settings.lsh.window} "
          f"projection_dims={settings.lsh.projection_dims} seed={settings.seed} "
          f"als_rank={settings.als_rank} window_days={recall.window_days} size={recall.size} "
          f"similarity={recall.similarity} fill={recall.fill}", flush=True)
    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4, driver_memory="4g"))
    wh_dir = os.path.abspath(args.warehouse)
    t0 = time.perf_counter()
    if not (args.reuse and Warehouse(wh_dir).exists("events")):
        shutil.rmtree(wh_dir, ignore_errors=True)
        os.makedirs(wh_dir)
        wh = Warehouse(wh_dir)
        # The configuration's KuaiRand source and ingestion settings (as `recfeat --config ... materialize`).
        source = next((c for c in project.sources.values() if c.kind == "kuairand"), SourceConfig(kind="kuairand", path=""))
        adapter = adapter_for("kuairand", source.model_copy(update={"path": os.path.abspath(args.data)}))
        r = ingest_with_settings(spark, wh, adapter, project)
        ingest_dimension(wh, adapter, "users")
        ingest_dimension(wh, adapter, "items")
        print(f"ingested events={r.manifest.row_count:,} rejected={r.rejected} seconds={time.perf_counter() - t0:.0f}", flush=True)
    wh = Warehouse(wh_dir)

    t = time.perf_counter()
    if not args.recall_only and not (args.lookalike_only and wh.exists("user_vectors")):
        build_user_vectors_table(spark, wh, settings)
        print(f"user_vectors: seconds={time.perf_counter() - t:.0f}", flush=True)
    t = time.perf_counter()
    stats = {}
    if not args.recall_only:
        stats = build_lookalike_table(spark, wh, settings).stats["lookalike_users"]
        stats = {k.removeprefix("lsh_"): v for k, v in stats.items()}
        print(f"lookalike_users: seconds={time.perf_counter() - t:.0f} {stats}", flush=True)
    if not args.lookalike_only:
        t = time.perf_counter()
        build_item_neighbors_table(spark, wh, recall)
        build_recall_table(spark, wh, recall)
        print(f"item_neighbors + recall_items: seconds={time.perf_counter() - t:.0f}", flush=True)

    if args.recall_only:
        recall_figures(spark, wh, recall, t0)
        return
    q = lsh_quality(wh, settings.k)
    print(f"FIGURE 1 LSH recall@{settings.k} (k={settings.k}, bands={stats.get('bands', settings.lsh.bands)}, bits_per_band="
          f"{settings.lsh.bits_per_band}, window={settings.lsh.window}, projection_dims={settings.lsh.projection_dims}) over {q['users']:,} users, dim {q['dim']}: "
          f"by id {q['recall_by_id']:.4f}, tie-aware {q['recall_tie_aware']:.4f}", flush=True)
    print("  " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v:,}" for k, v in q.items()), flush=True)
    print(f"  pairs_evaluated={stats.get('pairs_evaluated', 0):,} pairs_per_user={stats.get('pairs_evaluated', 0) / max(q['users'], 1):.0f} "
          f"held_out_recall_estimate={stats.get('recall_estimate')} (of {stats.get('recall_sample_users', 0):,} users) "
          f"bands_tried={stats.get('bands_tried', '-')} (selection sample)", flush=True)
    if args.lookalike_only:
        print(f"total seconds={time.perf_counter() - t0:.0f}", flush=True)
        stop_spark()
        return

    recall_figures(spark, wh, recall, t0)


def recall_figures(spark, wh, settings, t0: float) -> None:
    """Figure 2: the committed recall pools against popularity on the next day's clicks."""
    from pipelines.recall import evaluate_recall
    from pipelines.spark import stop_spark
    from pyspark.sql import functions as F

    pool = wh.read_spark(spark, "recall_items")
    sizes = pool.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"), F.sum((F.col("source") == "i2i").cast("int")).alias("i2i")).agg(
        F.count(F.lit(1)), F.avg("n"), F.avg("i2i")
    ).collect()[0]
    print(f"recall pools: users={sizes[0]:,} mean_size={sizes[1]:.1f} mean_i2i_items={sizes[2]:.1f}", flush=True)
    week = evaluate_recall(spark, wh, settings)
    print(f"FIGURE 2 next-day clicks [{settings.cutoff_ts.isoformat()}, +1 day), pool size {week['pool_size']}: "
          f"recall pool ({settings.similarity}, fill {settings.fill}) item_recall={week['recall_item_recall']:.4f} user_hit_rate={week['recall_user_hit_rate']:.4f}; "
          f"popularity (7-day window) item_recall={week['popular_item_recall']:.4f} user_hit_rate={week['popular_user_hit_rate']:.4f}", flush=True)
    print("  " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v:,}" for k, v in week.items()), flush=True)
    # The same committed pool against popularity over the whole history before the cutoff.
    span = (settings.cutoff_ts.date() - dt.date(2022, 4, 24)).days + 1
    full = evaluate_recall(spark, wh, settings.model_copy(update={"window_days": span}))
    print(f"  popularity (all {span} days before the cutoff) item_recall={full['popular_item_recall']:.4f} "
          f"user_hit_rate={full['popular_user_hit_rate']:.4f}", flush=True)
    events = wh.read_spark(spark, "events")
    cut = settings.cutoff_ts
    next_day = events.where((F.col("event_ts") >= F.lit(cut)) & (F.col("event_ts") < F.lit(cut + dt.timedelta(days=1))))
    clickers = next_day.where(F.col("is_click")).select("user_id").distinct().count()
    print(f"  next-day clicking users (any)={clickers:,}; with a pool and a new clicked video={week['target_users']:,}", flush=True)
    print(f"total seconds={time.perf_counter() - t0:.0f}", flush=True)
    stop_spark()


if __name__ == "__main__":
    main()
