"""Look-alike users on the synthetic default (the data ``make demo`` builds): recall and build time.

Generates the synthetic source of ``recfeat.yaml`` (200,000 events by default: 4,000 users),
ingests it into a fresh, git-ignored warehouse under ``var/``, builds ``user_vectors`` with the
``lookalike:`` settings of the configuration, then ``lookalike_users``, and measures it: the
held-out recall estimate the build records (the figure the manifest, the asset metadata and the
``lookalike_users_recall`` check report), the recall@k over every user against an exact brute
force (by id and tie-aware, ``benchmarks/lookalike_kuairand.py``'s ``lsh_quality``), the
candidates per user and the build's seconds, with their ratio to the brute force's (the baseline). ``--bands``, ``--window``, ``--projection-dims``
and ``--auto-bands/--no-auto-bands`` override the LSH settings; ``--reuse`` keeps the ingested
warehouse and its ``user_vectors``.

    nice -n 5 .venv/bin/python benchmarks/lookalike_synthetic.py
    nice -n 5 .venv/bin/python benchmarks/lookalike_synthetic.py --reuse --no-auto-bands --bands 32
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def main() -> None:
    from lookalike_kuairand import lsh_quality

    from pipelines.ingest import ingest_dimension, ingest_with_settings
    from pipelines.lookalike import build_lookalike_table, build_user_vectors_table
    from pipelines.lookalike import LookalikeSettings
    from pipelines.settings import SourceConfig, SparkSettings, load_settings
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark, stop_spark
    from pipelines.synthetic import generate
    from pipelines.warehouse import Warehouse

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(ROOT, "recfeat.yaml"), help="its synthetic: and lookalike: sections are used")
    ap.add_argument("--out", default=os.path.join(ROOT, "var", "lookalike_synthetic"))
    ap.add_argument("--events", type=int, help="override synthetic.events")
    ap.add_argument("--reuse", action="store_true", help="keep the ingested warehouse and its user_vectors")
    ap.add_argument("--bands", type=int, help="override lookalike.lsh.bands")
    ap.add_argument("--window", type=int, help="override lookalike.lsh.window")
    ap.add_argument("--projection-dims", type=int, help="override lookalike.lsh.projection_dims")
    ap.add_argument("--auto-bands", action=argparse.BooleanOptionalAction, default=None, help="override lookalike.lsh.auto_bands")
    args = ap.parse_args()

    project = load_settings(args.config)
    lsh = {k: v for k, v in (("bands", args.bands), ("window", args.window), ("projection_dims", args.projection_dims),
                             ("auto_bands", args.auto_bands)) if v is not None}
    base = project.lookalike.model_dump()
    settings = LookalikeSettings.model_validate({**base, "lsh": {**base["lsh"], **lsh}})
    s = settings.lsh
    print(f"cutoff_ts={settings.cutoff_ts.isoformat()} k={settings.k} bands={s.bands} "
          f"auto_bands={s.auto_bands} max_bands={s.max_bands} bits_per_band={s.bits_per_band} "
          f"window={s.window} projection_dims={s.projection_dims} "
          f"recall_sample={s.recall_sample} target={s.target_recall}", flush=True)
    spark = get_spark(SparkSettings(master="local[2]", shuffle_partitions=4, driver_memory="4g"))
    out = os.path.abspath(args.out)
    wh_dir = os.path.join(out, "warehouse")
    t0 = time.perf_counter()
    if not (args.reuse and Warehouse(wh_dir).exists("user_vectors")):
        shutil.rmtree(out, ignore_errors=True)
        params = project.synthetic
        if args.events:
            params = type(params).model_validate({**params.model_dump(), "events": args.events})
        src = generate(os.path.join(out, "source"), params)
        wh = Warehouse(wh_dir)
        adapter = adapter_for("synthetic", SourceConfig(kind="synthetic", path=str(src.root)))
        r = ingest_with_settings(spark, wh, adapter, project)
        ingest_dimension(wh, adapter, "users")
        ingest_dimension(wh, adapter, "items")
        print(f"generated and ingested events={r.manifest.row_count:,} seconds={time.perf_counter() - t0:.0f}", flush=True)
        t = time.perf_counter()
        build_user_vectors_table(spark, wh, settings)
        print(f"user_vectors: seconds={time.perf_counter() - t:.0f}", flush=True)
    wh = Warehouse(wh_dir)
    t = time.perf_counter()
    stats = build_lookalike_table(spark, wh, settings).stats["lookalike_users"]
    stats = {k.removeprefix("lsh_"): v for k, v in stats.items()}
    build_s = time.perf_counter() - t
    print(f"lookalike_users: seconds={build_s:.1f} {stats}", flush=True)
    q = lsh_quality(wh, settings.k)
    print(f"RESULT synthetic users={q['users']:,} dim={q['dim']} bands_used={stats.get('bands')} "
          f"held_out_recall_estimate={stats.get('recall_estimate')} (of {stats.get('recall_sample_users', 0):,} users) "
          f"recall@{settings.k}_all_users by_id={q['recall_by_id']:.4f} tie_aware={q['recall_tie_aware']:.4f} "
          f"pairs_per_user={stats.get('pairs_evaluated', 0) / max(q['users'], 1):.0f} build_seconds={build_s:.1f} "
          f"brute_force_seconds={q['brute_force_seconds']:.1f} (exact top-k of every user, NumPy; the baseline) "
          f"ratio_build_to_brute_force={build_s / max(q['brute_force_seconds'], 1e-9):.1f}", flush=True)
    stop_spark()


if __name__ == "__main__":
    main()
