"""Ingestion throughput: Beam (DirectRunner) against a plain Spark job with the same validation.

For each size, generates a synthetic source (KuaiRand format), then stages it with both
engines (``pipelines.beam_ingest.run_stage`` and ``pipelines.spark_stage.run_stage_spark``:
same adapter, same rules, same event ids and de-duplication), and prints events per second
and the ratio Spark/Beam. Both engines run in this process, one after the other, on the same
files; the Spark session is started (and warmed on a small run) before timing.

    .venv/bin/python benchmarks/ingest_throughput.py                 # 1M and 10M events
    .venv/bin/python benchmarks/ingest_throughput.py 100000 1000000  # other sizes
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def main(sizes: list[int]) -> None:
    from pipelines.beam_ingest import run_stage
    from pipelines.settings import IngestRules, SourceConfig, SparkSettings
    from pipelines.sources import adapter_for
    from pipelines.spark import get_spark
    from pipelines.spark_stage import run_stage_spark
    from pipelines.settings import SyntheticSettings
    from pipelines.synthetic import generate

    spark = get_spark(SparkSettings(master="local[*]", shuffle_partitions=8, driver_memory="8g"))
    rules = IngestRules()
    print(f"ingestion benchmark: {os.cpu_count()} CPUs; Beam DirectRunner vs Spark local[*]")
    work = tempfile.mkdtemp(prefix="recfeat-bench-")
    try:
        warm = os.path.join(work, "warm")
        generate(warm, SyntheticSettings(events=5_000, days=2, seed=1))
        warm_adapter = adapter_for("synthetic", SourceConfig(kind="synthetic", path=warm))
        run_stage_spark(spark, warm_adapter.event_files(), os.path.join(work, "warm-stage"), "synthetic", warm_adapter.config, rules)
        for n in sizes:
            src = os.path.join(work, f"src-{n}")
            generate(src, SyntheticSettings(events=n, seed=11))
            adapter = adapter_for("synthetic", SourceConfig(kind="synthetic", path=src))
            files = adapter.event_files()
            results = {}
            for engine in ("beam", "spark"):
                stage = os.path.join(work, f"stage-{engine}-{n}")
                t0 = time.perf_counter()
                if engine == "beam":
                    counts = run_stage(files, stage, "synthetic", adapter.config, rules)
                else:
                    counts = run_stage_spark(spark, files, stage, "synthetic", adapter.config, rules)
                seconds = time.perf_counter() - t0
                results[engine] = seconds
                print(
                    f"{engine:<6} {n:>12,} events  {seconds:8.1f} s  {counts.records_in / seconds:>10,.0f} events/s  "
                    f"(accepted {counts.accepted:,}, rejected {counts.rejected:,}, duplicates {counts.duplicates:,})",
                    flush=True,
                )
                shutil.rmtree(stage, ignore_errors=True)
            print(f"ratio spark/beam events per second at {n:,}: {results['beam'] / results['spark']:.2f}x", flush=True)
            shutil.rmtree(src, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000_000, 10_000_000])
