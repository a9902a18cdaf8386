"""CLI overhead: each stage through ``recfeat`` against the same stage's job alone.

One run at ``--events N`` (default 1,000,000) generates a synthetic source once (KuaiRand
format, ``pipelines.synthetic.generate``), writes a ``recfeat.yaml`` for a fresh temporary
warehouse and ``$DAGSTER_HOME``, then runs the three stages in order on that warehouse, as a
user would:

1. **ingest**: ``recfeat ingest --source kuairand --input SRC``;
2. **sequences**: ``recfeat materialize --select user_sequences`` (its checks included);
3. **labels**: ``recfeat materialize --select duration_stats,watch_time_labels`` (checks included).

Before each CLI command the warehouse is copied as it stands (an identical input state), and
after it the stage's job alone runs on the copy, in a fresh process of this script: the function
the command or the Dagster asset calls (``ingest_with_settings`` + ``ingest_dimension``, the
``sequences`` family step's ``run(ctx)``, the ``labels`` steps' ``run(ctx)``), with the Spark
session started before the clock and its start reported apart. No checks run there.

Per stage it prints the CLI's wall time (launch to exit), the job alone's time, the ratio
CLI/job, the CLI's own breakdown (the ``run:``, ``done <step> in X s`` and ``materialized ...
in X s`` lines of ``recfeat materialize``), CPU seconds (user + system of the command and the
processes it waited for, ``os.wait4``, as ``/usr/bin/time`` counts: a Spark JVM left to exit on
its own after the command is not in it; and the sum over its process tree, sampled from /proc), peak RSS (``ru_maxrss``:
the largest single process; and the process tree's, sampled from /proc) and events/s.

    .venv/bin/python benchmarks/cli_overhead.py                    # 1M events
    .venv/bin/python benchmarks/cli_overhead.py --events 100000 --keep
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks._memory import TreeRss  # noqa: E402

#: stage -> the ``recfeat`` arguments after ``--config FILE`` (``{src}``: the source folder).
STAGES = {
    "ingest": ["ingest", "--source", "kuairand", "--input", "{src}"],
    "sequences": ["materialize", "--select", "user_sequences"],
    "labels": ["materialize", "--select", "duration_stats,watch_time_labels"],
}
DONE = re.compile(r"^done\s+(.+?) in ([\d.]+) s")
RUN = re.compile(r"^materialized .* in ([\d.]+) s$")


# ---- the job alone, in a fresh process of this script -------------------------------------------
def job_alone(stage: str, config: str, src: str) -> dict:
    """Run ``stage``'s job on the configured warehouse; the seconds of the Spark start and of the job."""
    from orchestration.cli_common import warehouse_for
    from pipelines.settings import load_settings
    from pipelines.spark import get_spark

    settings = load_settings(config)
    wh = warehouse_for(settings)
    t0 = time.perf_counter()
    spark = get_spark(settings.spark)
    t_spark = time.perf_counter() - t0
    t0 = time.perf_counter()
    if stage == "ingest":
        from pipelines.ingest import ingest_dimension, ingest_with_settings
        from pipelines.settings import SourceConfig
        from pipelines.sources import adapter_for

        adapter = adapter_for("kuairand", SourceConfig(kind="kuairand", path=os.path.abspath(src)))
        result = ingest_with_settings(spark, wh, adapter, settings)
        rows = result.manifest.row_count
        for table in ("users", "items"):
            ingest_dimension(wh, adapter, table, follow_symlinks=settings.ingest.follow_symlinks)
    else:
        from features.timeutil import DateWindow

        if stage == "sequences":
            from pipelines.sequences import FAMILY
        else:
            from pipelines.labels import FAMILY
        window = None
        if FAMILY.partitioned(settings):  # an incremental build: the run covers every configured day
            window = DateWindow(settings.partitions.start_date, settings.partitions.end_date)
        stored = {t.name for t in FAMILY.stored_tables(settings)}
        rows = 0
        for step in FAMILY.steps:
            tables = tuple(n for n in step.table_names if n in stored)
            ctx = FAMILY.context(wh, settings, spark_session=lambda: spark, window=window, tables=tables)
            result = step.run(ctx)
            rows = max([rows] + [m.row_count for m in result.manifests.values()])
    t_job = time.perf_counter() - t0
    from pipelines.spark import stop_spark

    from pyspark import SparkContext

    stop_spark()  # as a materialize run ends
    proc = getattr(SparkContext._gateway, "proc", None)
    if proc is not None:  # the JVM exits when its stdin closes: wait for it, so that its CPU and RSS count
        proc.stdin.close()
        proc.wait(timeout=120)
    return {"spark_start_s": t_spark, "job_s": t_job, "rows": rows}


class TreeCpu(TreeRss):
    """:class:`TreeRss` that also sums the CPU seconds (user + system) of every descendant seen,
    each at its last sample (/proc ``stat``; a process's last fraction of a sample period is missed)."""

    def __init__(self, every: float = 0.2):
        super().__init__(every)
        self._cpu: dict[tuple[int, str], float] = {}
        self._tick = os.sysconf("SC_CLK_TCK")

    def _sample_cpu(self) -> None:
        parent, ticks = {}, {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                parent[int(name)] = int(fields[1])
                ticks[int(name)] = (int(fields[11]) + int(fields[12]), fields[19])  # utime + stime, start time
        me = os.getpid()
        for pid, (t, started) in ticks.items():
            p = parent.get(pid)
            while p and p != me and p in parent:
                p = parent[p]
            if p == me and pid != me:
                self._cpu[(pid, started)] = t / self._tick

    def _run(self):
        while not self._stop.is_set():
            self._sample_cpu()
            self.peak_mb = max(self.peak_mb, self._tree_rss_kb() / 1024)
            self._stop.wait(self.every)

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values())


# ---- one command, measured ---------------------------------------------------------------------
def measured(cmd: list[str], env: dict, cwd: str, what: str) -> dict:
    """Run ``cmd`` to its end: wall seconds, CPU seconds and ``ru_maxrss`` (its own and its waited-for
    children's, ``os.wait4``), the process tree's sampled peak RSS, and its stdout; exits with the
    stderr tail when it fails."""
    out_f, err_f = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    with TreeCpu() as tree:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0), err_f.seek(0)
    stdout, stderr = out_f.read(), err_f.read()
    if proc.returncode:
        tail = "\n".join((stderr.strip() or stdout.strip()).splitlines()[-30:])
        raise SystemExit(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n--- its output, last lines ---\n{tail}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_mib": usage.ru_maxrss / 1024,
            "tree_mib": tree.peak_mb, "tree_cpu_s": tree.cpu_s, "stdout": stdout}


def breakdown(stdout: str) -> list[str]:
    """The CLI's own timing lines: ``run: ...``, ``done <step> in X s`` and ``materialized ... in X s``."""
    keep = []
    for line in stdout.splitlines():
        s = line.strip()
        if s.startswith("run: ") or DONE.match(s) or RUN.match(s):
            keep.append(s)
    return keep


def write_config(path: str, warehouse: str, src: str, sources_root: str, *, events: int, seed: int,
                 days: int = 14, **sections) -> None:
    """A ``recfeat.yaml`` (written as JSON, which is YAML) for a fresh warehouse on one synthetic source.

    ``days`` UTC days from the generator's start date set both the source and the daily
    partitions; ``sections`` are further top-level sections (``spark``, ``ingest``) as dicts.
    """
    from pipelines.settings import SyntheticSettings

    start = SyntheticSettings().start_date
    config = {
        "warehouse": {"root": warehouse},
        "sources_root": sources_root,
        "sources": {"synthetic": {"kind": "synthetic", "path": src}},
        "active_source": "synthetic",
        "partitions": {"start_date": start.isoformat(), "end_date": (start + dt.timedelta(days=days)).isoformat()},
        "synthetic": {"events": events, "seed": seed, "days": days},
        **sections,
    }
    with open(path, "w") as fh:
        json.dump(config, fh, indent=2)


def recfeat_command() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "recfeat")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "orchestration.cli"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="synthetic events (default 1,000,000)")
    p.add_argument("--days", type=int, default=14, help="UTC days the events cover (default 14)")
    p.add_argument("--seed", type=int, default=11, help="generator seed (default 11)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES),
                   help="stages to time (default all; each needs the ones before it)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    p.add_argument("--child", choices=list(STAGES), help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(job_alone(args.child, args.config, args.src)))
        return 0

    from pipelines.settings import SyntheticSettings
    from pipelines.synthetic import generate

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still cleans up
    work = tempfile.mkdtemp(prefix="recfeat-cli-bench-")
    load = os.getloadavg()
    print(f"CLI overhead: {args.events:,} events over {args.days} days (seed {args.seed}), {os.cpu_count()} CPUs, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; work dir {work}", flush=True)
    try:
        src = os.path.join(work, "source")
        t0 = time.perf_counter()
        generate(src, SyntheticSettings(events=args.events, days=args.days, seed=args.seed))
        print(f"generated in {time.perf_counter() - t0:.1f} s (not timed below)", flush=True)
        cli_wh, job_wh = os.path.join(work, "cli", "warehouse"), os.path.join(work, "job", "warehouse")
        cli_cfg, job_cfg = os.path.join(work, "cli", "recfeat.yaml"), os.path.join(work, "job", "recfeat.yaml")
        for side, wh, cfg in (("cli", cli_wh, cli_cfg), ("job", job_wh, job_cfg)):
            os.makedirs(os.path.join(work, side, "dagster"))
            write_config(cfg, wh, src, os.path.join(work, side, "sources"),
                         events=args.events, seed=args.seed, days=args.days)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECFEAT_")}
        env.update(DAGSTER_HOME=os.path.join(work, "cli", "dagster"),
                   PYTHONPATH=os.pathsep.join(x for x in (REPO, env.get("PYTHONPATH")) if x))
        rows = []
        for stage in args.stages:
            # The job alone starts from the state the command starts from: a copy of the warehouse.
            shutil.rmtree(job_wh, ignore_errors=True)
            if os.path.isdir(cli_wh):
                shutil.copytree(cli_wh, job_wh, symlinks=True)
            argv_ = [a.format(src=src) for a in STAGES[stage]]
            cli = measured([*recfeat_command(), "--config", cli_cfg, *argv_], env, work, f"recfeat {' '.join(argv_)}")
            child = measured([sys.executable, os.path.abspath(__file__), "--child", stage, "--config", job_cfg, "--src", src],
                             env, work, f"the {stage} job alone")
            job = json.loads(child["stdout"].strip().splitlines()[-1])
            ratio = cli["wall_s"] / job["job_s"]
            rows.append((stage, cli["wall_s"], job["job_s"], ratio))
            print(f"\n== {stage}: recfeat {' '.join(STAGES[stage]).replace('{src}', 'SRC')}", flush=True)
            print(f"  CLI       {cli['wall_s']:7.1f} s wall  {args.events / cli['wall_s']:>10,.0f} events/s  "
                  f"cpu {cli['cpu_s']:6.1f} s waited-for, {cli['tree_cpu_s']:.1f} s tree  "
                  f"peak RSS {cli['maxrss_mib']:,.0f} MiB (largest process), "
                  f"{cli['tree_mib']:,.0f} MiB (tree)")
            print(f"  job alone {job['job_s']:7.1f} s       {args.events / job['job_s']:>10,.0f} events/s  "
                  f"(+ Spark start {job['spark_start_s']:.1f} s; process {child['wall_s']:.1f} s wall, "
                  f"cpu {child['cpu_s']:.1f} s waited-for, {child['tree_cpu_s']:.1f} s tree, "
                  f"peak RSS {child['maxrss_mib']:,.0f} MiB largest, {child['tree_mib']:,.0f} MiB tree; {job['rows']:,} rows)")
            lines = breakdown(cli["stdout"])
            in_run = next((float(RUN.match(x).group(1)) for x in lines if RUN.match(x)), None)
            outside = f"; outside the Dagster run {cli['wall_s'] - in_run:.1f} s" if in_run is not None else ""
            print(f"  ratio CLI/job {ratio:.2f}x  (CLI - job = {cli['wall_s'] - job['job_s']:.1f} s{outside}); "
                  f"CLI/(job + Spark start) {cli['wall_s'] / (job['job_s'] + job['spark_start_s']):.2f}x")
            if lines:
                print("  CLI breakdown:\n" + "\n".join(f"    {x}" for x in lines))
            elif stage == "ingest":
                print("  CLI output:\n" + "\n".join(f"    {x}" for x in cli["stdout"].strip().splitlines()))
            sys.stdout.flush()
        print(f"\nsummary at {args.events:,} events (target: CLI/job <= 1.5x per stage)")
        print(f"  {'stage':<10} {'CLI s':>8} {'job s':>8} {'CLI/job':>8}")
        for stage, c, j, r in rows:
            print(f"  {stage:<10} {c:8.1f} {j:8.1f} {r:7.2f}x")
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
