"""Ingestion throughput: the Beam pipeline against a Polars reference and the I/O floor.

For each size, generates a synthetic source (KuaiRand format, 14 daily files), then runs, each
in a fresh process on the same files (so each peak RSS is that run's own: ``ru_maxrss`` of
the largest single process, the run itself or one of its worker processes, not their sum):

* **beam**: ``pipelines.beam_ingest.run_stage`` (DirectRunner; ``--workers``/``--running-mode``/
  ``--buckets`` as the ``ingest.direct_num_workers``/``direct_running_mode``/``buckets`` settings);
* **polars**: a reference written here with Polars (multi-threaded): read the files as text,
  apply the same kinds of rules (required fields, types, enums, timestamp range and future,
  play time and duration bounds, each bad row a dead letter with its reason), ids from
  (line hash, occurrence within its file), first-wins de-duplication by (file, line), accepted
  rows written as date-partitioned Parquet and the dead letters as Parquet;
* **floor**: the I/O floor: read the files as text (UTF-8 decoded) and write the Beam run's
  accepted rows and dead letters with pyarrow as Parquet (the same bytes: Beam's
  ``WriteToParquetBatched`` writes uncompressed Parquet);
* **spark** (``--spark``): ``pipelines.spark_stage.run_stage_spark``, its session started and
  warmed on a small run before timing (its CPU and peak RSS leave out the JVM, which is still
  running when they are read).

Times are the staging call only (imports, generation and Spark start-up excluded); it prints
time, events/s, CPU seconds (user + system, the process and its workers: on a shared machine
the least load-dependent figure), peak RSS and the ratios beam/polars and beam/floor.

    .venv/bin/python benchmarks/ingest_throughput.py                          # 1M events
    .venv/bin/python benchmarks/ingest_throughput.py --sizes 1000000 10000000   # (or the sizes alone)
    .venv/bin/python benchmarks/ingest_throughput.py --workers 2 --running-mode multi_processing
    .venv/bin/python benchmarks/ingest_throughput.py --spark
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ENGINES = ("beam", "polars", "floor")


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children, seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mib() -> float:
    """Peak resident memory of the largest single process, this one or one of its finished
    children (Linux ``ru_maxrss`` is KiB), MiB: not the sum over a run's worker processes."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


# ---- the Polars reference -------------------------------------------------------------------


def polars_reference(files: list[str], out: str, repeated_lines: str, now: dt.datetime) -> dict:
    """Stage ``files`` (KuaiRand format) with Polars; returns the counts (see the module docstring)."""
    import polars as pl

    from pipelines.settings import IngestRules
    from pipelines.sources.kuairand import TAB_VALUES

    rules = IngestRules()
    frames = []
    for f in sorted(files):
        df = pl.read_csv(f, infer_schema=False)  # every column as text
        frames.append(df.with_row_index("source_line", offset=1).with_columns(source_file=pl.lit(os.path.basename(f))))
    raw = pl.concat(frames, how="diagonal")
    data_cols = [c for c in frames[0].columns if c not in ("source_line", "source_file")]
    flags = ["is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_hate", "is_profile_enter", "long_view", "is_rand"]
    flag_ok = pl.all_horizontal([pl.col(c).is_null() | pl.col(c).is_in(["0", "1", "true", "false"]) for c in flags])
    ts = pl.col("time_ms").cast(pl.Int64, strict=False)
    play = pl.col("play_time_ms").cast(pl.Int64, strict=False)
    dur = pl.col("duration_ms").cast(pl.Int64, strict=False)
    min_ms = int(dt.datetime.combine(rules.min_event_ts, dt.time(), dt.timezone.utc).timestamp() * 1000)
    future_ms = int(now.timestamp() * 1000) + rules.future_tolerance_s * 1000
    reason = (
        pl.when(pl.col("user_id").is_null() | pl.col("video_id").is_null() | pl.col("time_ms").is_null() | pl.col("duration_ms").is_null())
        .then(pl.lit("missing_required_field"))
        .when(ts.is_null() | (play.is_null() & pl.col("play_time_ms").is_not_null()) | dur.is_null())
        .then(pl.lit("wrong_type"))
        .when(~flag_ok | ~pl.col("tab").is_in(list(TAB_VALUES)))
        .then(pl.lit("unknown_enum_value"))
        .when(ts < min_ms)
        .then(pl.lit("timestamp_out_of_range"))
        .when(ts > future_ms)
        .then(pl.lit("timestamp_in_future"))
        .when(play < 0)
        .then(pl.lit("negative_play_time"))
        .when(play > rules.max_play_time_ms)
        .then(pl.lit("absurd_play_time"))
        .when(dur < 0)
        .then(pl.lit("nonpositive_duration"))
        .when((dur > 0) & (play > rules.replay_factor * dur))
        .then(pl.lit("play_beyond_duration"))
    )
    checked = raw.with_columns(
        reason_code=reason,
        line_hash=pl.concat_str([pl.col(c).fill_null("") for c in data_cols], separator="\x1f").hash(),
    )
    bad = checked.filter(pl.col("reason_code").is_not_null())
    good = checked.filter(pl.col("reason_code").is_null())
    if repeated_lines == "distinct":
        occurrence = pl.col("source_line").rank("ordinal").over("source_file", "line_hash").cast(pl.UInt64) - 1
    else:
        occurrence = pl.lit(0, pl.UInt64)
    good = (
        good.with_columns(event_id=pl.struct(pl.col("line_hash"), occurrence.alias("occ")).hash())
        .sort("event_id", "source_file", "source_line")
        .with_columns(first=pl.col("event_id") != pl.col("event_id").shift(1).fill_null(~pl.col("event_id")))
    )
    accepted = good.filter("first").select(
        pl.col("event_id"),
        pl.col("source_file"),
        pl.col("source_line"),
        pl.col("user_id"),
        pl.col("video_id").alias("item_id"),
        ts.cast(pl.Datetime("ms", "UTC")).alias("event_ts"),
        play.alias("play_time_ms"),
        dur.alias("duration_ms"),
        *[pl.col(c).is_in(["1", "true"]).alias(c) for c in flags],
    ).with_columns(event_date=pl.col("event_ts").dt.date())
    dups = good.filter(~pl.col("first")).with_columns(reason_code=pl.lit("duplicate"))
    letters = pl.concat([bad.select("source_file", "source_line", "reason_code"), dups.select("source_file", "source_line", "reason_code")])
    accepted.write_parquet(os.path.join(out, "accepted"), partition_by="event_date")
    os.makedirs(os.path.join(out, "rejected"), exist_ok=True)
    letters.write_parquet(os.path.join(out, "rejected", "part-0.parquet"))
    return {"records_in": raw.height, "accepted": accepted.height, "rejected": bad.height, "duplicates": dups.height}


# ---- the I/O floor --------------------------------------------------------------------------


def io_floor(files: list[str], beam_stage: str, out: str) -> dict:
    """Read the files as text, then write the Beam run's accepted rows and dead letters as Parquet."""
    import pyarrow.parquet as pq

    def load(part):
        folder = os.path.join(beam_stage, part)
        names = sorted(f for f in os.listdir(folder) if f.endswith(".parquet")) if os.path.isdir(folder) else []
        return [pq.read_table(os.path.join(folder, f)) for f in names]

    tables = {part: load(part) for part in ("accepted", "rejected")}  # before timing
    t0, c0 = time.perf_counter(), cpu_seconds()
    lines = 0
    for f in files:
        with open(f, encoding="utf-8") as fh:
            lines += fh.read().count("\n") - 1
    for part, parts in tables.items():
        os.makedirs(os.path.join(out, part), exist_ok=True)
        for i, table in enumerate(parts):
            pq.write_table(table, os.path.join(out, part, f"part-{i}.parquet"), compression="none")
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    accepted = sum(t.num_rows for t in tables["accepted"])
    return {"records_in": lines, "accepted": accepted, "rejected": None, "duplicates": None, "seconds": seconds, "cpu": cpu}


# ---- one engine in this process -------------------------------------------------------------


def child(args) -> None:
    from pipelines.settings import IngestRules, SourceConfig
    from pipelines.sources import adapter_for

    adapter = adapter_for("synthetic", SourceConfig(kind="synthetic", path=args.src))
    files = adapter.event_files()
    rules = IngestRules()
    now = dt.datetime.now(dt.timezone.utc)
    after_imports = peak_rss_mib()
    if args.child == "spark":
        from pipelines.settings import SparkSettings, SyntheticSettings
        from pipelines.spark import get_spark
        from pipelines.spark_stage import run_stage_spark
        from pipelines.synthetic import generate

        spark = get_spark(SparkSettings(master="local[*]", shuffle_partitions=8, driver_memory="8g"))
        warm = os.path.join(args.out, "warm")
        generate(warm, SyntheticSettings(events=5_000, days=2, seed=1))
        warm_adapter = adapter_for("synthetic", SourceConfig(kind="synthetic", path=warm))
        run_stage_spark(spark, warm_adapter.event_files(), os.path.join(args.out, "warm-stage"), "synthetic", warm_adapter.config, rules)
    t0, c0 = time.perf_counter(), cpu_seconds()
    if args.child == "beam":
        from pipelines.beam_ingest import run_stage

        counts = run_stage(
            files, args.out, "synthetic", adapter.config, rules, now=now, repeated_lines=args.repeated_lines,
            buckets=args.buckets, direct_num_workers=args.workers, direct_running_mode=args.running_mode,
        ).__dict__  # fmt: skip
    elif args.child == "spark":
        counts = run_stage_spark(spark, files, os.path.join(args.out, "stage"), "synthetic", adapter.config, rules, now=now,
                                 repeated_lines=args.repeated_lines).__dict__
    elif args.child == "polars":
        counts = polars_reference(files, args.out, args.repeated_lines, now)
    else:
        counts = io_floor(files, args.beam_stage, args.out)
    seconds = counts.pop("seconds", None) or time.perf_counter() - t0
    cpu = counts.pop("cpu", None) or cpu_seconds() - c0
    result = {k: counts.get(k) for k in ("records_in", "accepted", "rejected", "duplicates")}
    print(json.dumps({**result, "seconds": seconds, "cpu_s": cpu, "peak_rss_mib": peak_rss_mib(), "after_imports_mib": after_imports}))


def run_child(engine: str, src: str, out: str, args, beam_stage: str | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine, "--src", src, "--out", out,
           "--repeated-lines", args.repeated_lines, "--workers", str(args.workers), "--running-mode", args.running_mode]
    if args.buckets is not None:
        cmd += ["--buckets", str(args.buckets)]
    if beam_stage:
        cmd += ["--beam-stage", beam_stage]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{engine} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(args) -> None:
    from pipelines.settings import SyntheticSettings
    from pipelines.synthetic import generate

    engines = list(ENGINES) + (["spark"] if args.spark else [])
    print(
        f"ingestion benchmark: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; beam: DirectRunner "
        f"{args.running_mode} x{args.workers}, buckets {args.buckets or 'default'}; repeated_lines {args.repeated_lines}",
        flush=True,
    )
    # A terminated run still removes its generated files (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="recfeat-bench-")
    try:
        for n in args.sizes:
            src = os.path.join(work, f"src-{n}")
            generate(src, SyntheticSettings(events=n, seed=11))
            size = sum(os.path.getsize(os.path.join(src, f)) for f in os.listdir(src) if f.startswith("log_"))
            results = {}
            for engine in engines:
                out = os.path.join(work, f"{engine}-{n}")
                r = run_child(engine, src, out, args, beam_stage=os.path.join(work, f"beam-{n}"))
                results[engine] = r
                letters = "" if r["rejected"] is None else f"  (accepted {r['accepted']:,}, rejected {r['rejected']:,}, duplicates {r['duplicates']:,})"
                print(
                    f"{engine:<7} {n:>12,} events  {r['seconds']:8.2f} s  {n / r['seconds']:>10,.0f} events/s  cpu {r['cpu_s']:6.2f} s  "
                    f"peak RSS {r['peak_rss_mib']:7,.0f} MiB{letters}",
                    flush=True,
                )
                if engine != "beam":
                    shutil.rmtree(out, ignore_errors=True)
            beam = results["beam"]["seconds"]
            extra = f", beam/spark {beam / results['spark']['seconds']:.2f}x" if "spark" in results else ""
            print(
                f"ratios at {n:,} ({size / 2**20:,.0f} MiB of CSV): beam/polars {beam / results['polars']['seconds']:.2f}x, "
                f"beam/floor {beam / results['floor']['seconds']:.2f}x{extra}; CPU seconds beam/polars "
                f"{results['beam']['cpu_s'] / results['polars']['cpu_s']:.2f}x",
                flush=True,
            )
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(os.path.join(work, f"beam-{n}"), ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000], help="events per run (default 1M)")
    p.add_argument("positional_sizes", type=int, nargs="*", metavar="SIZE", help="the same as --sizes")
    p.add_argument("--spark", action="store_true", help="also time the Spark staging engine")
    p.add_argument("--workers", type=int, default=1, help="ingest.direct_num_workers (default 1)")
    p.add_argument("--running-mode", default="in_memory", help="ingest.direct_running_mode (default in_memory)")
    p.add_argument("--buckets", type=int, default=None, help="ingest.buckets (default: 4 per worker)")
    p.add_argument("--repeated-lines", default="duplicate", choices=["duplicate", "distinct"])
    p.add_argument("--child", choices=[*ENGINES, "spark"], help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--beam-stage", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.positional_sizes:
        args.sizes = args.positional_sizes
    return args


if __name__ == "__main__":
    a = parse(sys.argv[1:])
    child(a) if a.child else main(a)
