"""The whole pipeline at scale, through the ``recfeat`` CLI, one command per stage, as a user runs it.

One run at ``--events N`` writes a ``recfeat.yaml`` for a fresh warehouse and ``$DAGSTER_HOME``
under ``--dir``, then runs, in order, each stage in its own process (each a new Spark session):

1. **generate**: ``recfeat generate --events N`` (KuaiRand-format CSVs, 14 UTC days);
2. **ingest**: ``recfeat ingest --source kuairand --input SRC`` (``--ingest-engine``: ``beam``, the
   default of ``recfeat.yaml``, or ``spark``; the Beam DirectRunner holds its shuffle in memory,
   6.5 GiB at 10M events, so past a few tens of millions use ``spark``);
3. **sequences**: ``recfeat materialize --select user_sequences`` (checks included);
4. **labels**: ``recfeat materialize --select duration_stats,watch_time_labels``;
5. **lookalikes**: ``recfeat materialize --select user_vectors,lookalike_users``;
6. **training set**: a spine of ``--spine-rows`` events at or after ``lookalike.cutoff_ts`` (every
   k-th one, streamed from ``events``; not timed), then ``recfeat training-set`` for
   ``user_sequences``, ``lookalike_users`` and ``watch_time_labels.d2co``.

Per stage it prints the wall time (launch to exit), events/s, CPU seconds (the process tree's,
sampled from /proc), the peak RSS of the largest single process (``ru_maxrss``) and of the whole
tree (sampled, the Spark JVM and its Python workers included), and the disk the warehouse (and the
source, the training set) holds afterwards. A stage that fails is reported with the last lines of
its output and the run stops there: the stages before it are the largest size that fitted.

    .venv/bin/python benchmarks/end_to_end_scale.py --events 1000000
    .venv/bin/python benchmarks/end_to_end_scale.py --events 100000000 --ingest-engine spark \\
        --driver-memory 8g --dir var/bench-e2e-100m
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.cli_overhead import TreeCpu, recfeat_command, write_config  # noqa: E402

STAGES = ("generate", "ingest", "sequences", "labels", "lookalikes", "training_set")
SELECT = {
    "sequences": "user_sequences",
    "labels": "duration_stats,watch_time_labels",
    "lookalikes": "user_vectors,lookalike_users",
}
TRAINING_FEATURES = "user_sequences,lookalike_users,watch_time_labels.d2co"


def du_mib(path: str) -> float:
    """Bytes under ``path`` (files only, links not followed), MiB; 0 when absent."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total / 2**20


def run_stage(cmd: list[str], env: dict, cwd: str, log: str) -> dict:
    """Run ``cmd`` to its end with its output in ``log``: wall, tree CPU, peak RSS (largest process, tree)."""
    with open(log, "w") as out, TreeCpu(every=1.0) as tree:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    return {"rc": os.waitstatus_to_exitcode(status), "wall_s": wall, "tree_cpu_s": tree.cpu_s,
            "maxrss_mib": usage.ru_maxrss / 1024, "tree_mib": tree.peak_mb}


def write_spine(warehouse: str, config: str, out: str, rows: int) -> int:
    """Every k-th event at or after the look-alike cutoff (``event_id``, ``user_id``, ``item_id``,
    ``event_ts``), streamed from the committed ``events``, at most ``rows`` of them; the rows written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from pipelines.settings import load_settings
    from pipelines.warehouse import Warehouse

    settings = load_settings(config)
    wh = Warehouse(warehouse)
    cutoff = pa.scalar(settings.lookalike.cutoff_ts, pa.timestamp("us", tz="UTC"))
    total = wh.manifest("events").row_count
    days = settings.partitions.end_date - settings.partitions.start_date
    after = settings.partitions.end_date - settings.lookalike.cutoff_ts.date()
    stride = max(1, int(total * after.days / max(days.days, 1) / rows))
    dataset = ds.dataset(wh.files("events"), format="parquet")
    cols = ["event_id", "user_id", "item_id", "event_ts"]
    written, seen = 0, 0
    writer = None
    for batch in dataset.to_batches(columns=cols, filter=ds.field("event_ts") >= cutoff, batch_size=262_144):
        idx = [i for i in range((-seen) % stride, batch.num_rows, stride)]
        seen += batch.num_rows
        if not idx:
            continue
        part = pa.Table.from_batches([batch]).take(pa.array(idx[: rows - written]))
        part = part.set_column(3, "event_ts", pc.cast(part["event_ts"], pa.timestamp("us", tz="UTC")))
        if writer is None:
            writer = pq.ParquetWriter(out, part.schema)
        writer.write_table(part)
        written += part.num_rows
        if written >= rows:
            break
    if writer is not None:
        writer.close()
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="synthetic events (default 1,000,000)")
    p.add_argument("--seed", type=int, default=11, help="generator seed (default 11)")
    p.add_argument("--ingest-engine", choices=("beam", "spark"), default="beam", help="ingest.engine (default beam)")
    p.add_argument("--driver-memory", default="4g", help="spark.driver_memory (default 4g, as recfeat.yaml)")
    p.add_argument("--shuffle-partitions", type=int, default=8, help="spark.shuffle_partitions (default 8)")
    p.add_argument("--spine-rows", type=int, default=1_000_000, help="training-set spine rows (default 1,000,000)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                   help="stages to run (default all; each needs the ones before it, kept in --dir)")
    p.add_argument("--dir", default="var/bench-e2e", help="work folder (default var/bench-e2e, git-ignored)")
    p.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    args = p.parse_args(argv)

    work = os.path.abspath(args.dir)
    if args.stages[0] == STAGES[0]:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "dagster"), exist_ok=True)
    src, warehouse = os.path.join(work, "source"), os.path.join(work, "warehouse")
    config, spine, ts_out = (os.path.join(work, x) for x in ("recfeat.yaml", "spine.parquet", "training_set"))
    write_config(config, warehouse, src, os.path.join(work, "sources"), events=args.events, seed=args.seed,
                 spark={"driver_memory": args.driver_memory, "shuffle_partitions": args.shuffle_partitions},
                 ingest={"engine": args.ingest_engine})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECFEAT_")}
    env.update(DAGSTER_HOME=os.path.join(work, "dagster"),
               PYTHONPATH=os.pathsep.join(x for x in (REPO, env.get("PYTHONPATH")) if x))
    rc = [*recfeat_command(), "--config", config]
    commands = {
        "generate": [*rc, "generate", "--events", str(args.events), "--seed", str(args.seed), "--out", src],
        "ingest": [*rc, "ingest", "--source", "kuairand", "--input", src],
        **{s: [*rc, "materialize", "--select", sel] for s, sel in SELECT.items()},
        "training_set": [*rc, "training-set", "--features", TRAINING_FEATURES, "--out", ts_out, "--overwrite", spine],
    }
    load = os.getloadavg()
    print(f"end to end: {args.events:,} events, {os.cpu_count()} CPUs, ingest.engine {args.ingest_engine}, "
          f"driver_memory {args.driver_memory}, shuffle_partitions {args.shuffle_partitions}; "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"disk free {shutil.disk_usage(work).free / 2**30:,.1f} GiB; work dir {work}", flush=True)
    results = []
    for stage in args.stages:
        extra = ""
        if stage == "training_set":
            t0 = time.perf_counter()
            n = write_spine(warehouse, config, spine, args.spine_rows)
            extra = f"spine {n:,} rows (written in {time.perf_counter() - t0:.1f} s, not timed); "
        log = os.path.join(work, f"{stage}.log")
        started = time.strftime("%H:%M:%S", time.gmtime())
        r = run_stage(commands[stage], env, work, log)
        disk = {"warehouse": du_mib(warehouse), "source": du_mib(src), "training set": du_mib(ts_out)}
        disk_s = ", ".join(f"{k} {v:,.0f} MiB" for k, v in disk.items() if v)
        print(f"{stage:<13} {r['wall_s']:8.1f} s  {args.events / r['wall_s']:>10,.0f} events/s  "
              f"cpu {r['tree_cpu_s']:7.1f} s (tree)  peak RSS {r['maxrss_mib']:,.0f} MiB largest process, "
              f"{r['tree_mib']:,.0f} MiB tree  ({extra}started {started} UTC; {disk_s}; "
              f"free {shutil.disk_usage(work).free / 2**30:,.1f} GiB)", flush=True)
        if r["rc"]:
            with open(log) as fh:
                tail = fh.read().strip().splitlines()[-25:]
            print(f"{stage} FAILED (exit {r['rc']}): {' '.join(commands[stage])}\n--- its output, last lines ---\n"
                  + "\n".join(tail), flush=True)
            break
        results.append((stage, r["wall_s"], r["tree_mib"]))
    if results:
        total = sum(w for _, w, _ in results)
        print(f"total {total:,.1f} s over {len(results)} stages ({', '.join(s for s, _, _ in results)}); "
              f"largest tree peak RSS {max(m for _, _, m in results):,.0f} MiB", flush=True)
    if not args.keep and len(results) == len(args.stages):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if len(results) == len(args.stages) else 1


if __name__ == "__main__":
    sys.exit(main())
