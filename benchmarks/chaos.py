"""Chaos run: kill the whole pipeline with SIGKILL at random moments and check nothing is lost.

    python benchmarks/chaos.py --kills 20 --events 20000        # the full run (by hand)
    python benchmarks/chaos.py --kills 3 --events 5000          # the reduced form CI runs
    python benchmarks/chaos.py --concurrent                     # two materialize runs at once

What it does, in one temporary folder:
1. generates a synthetic source (KuaiRand format) and runs the pipeline once without
   interruption into a *clean* warehouse: ``recfeat ingest`` then ``recfeat materialize`` of
   every table asset (no models);
2. runs the same commands into a *chaos* warehouse as one process group and kills the whole
   group with SIGKILL after a random delay drawn from the clean run's duration, ``--kills``
   times; after each kill it prints where the kill landed (the last step the run printed, the
   table versions) and checks that every table reads at its current version with every file
   present;
3. runs the pipeline to the end once more and checks that every table equals the clean run's
   row for row (commit times, run ids and other per-run columns ignored; ``ingest_runs``, which
   records every run, is only checked to be readable), that no event is lost or duplicated,
   and that no staging area or temporary file is left.

``--concurrent`` starts two ``recfeat materialize`` runs on one warehouse at the same moment:
each must either succeed or fail with the one-line commit conflict, and the tables must equal a
clean run's afterwards (after a retry of the loser).

Exit status 0 when every check holds; every check is printed. Nothing here is timed for a test:
the delays only spread the kills over the run.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: The stored tables' assets (rote_features is a view by default, sequences.rote_storage: no asset).
TABLE_ASSETS = [
    "events", "rejected_events", "users", "items", "synthetic_truth", "user_sequences",
    "duration_stats", "watch_time_labels", "user_vectors", "lookalike_users", "item_neighbors", "recall_items",
]
#: The assets a run materializes (``--assets`` narrows it).
ASSETS = list(TABLE_ASSETS)
#: Columns that differ between two runs of the same input by design (times of the run, run ids).
PER_RUN_COLUMNS = {"run_id", "ingest_run_id", "ingested_at", "rejected_at", "committed_at", "built_at",
                   "started_at", "finished_at", "created_at"}
#: Tables that record every run (so a run killed after its record adds a row): readable only.
RUN_LOGS = {"ingest_runs"}


def project(folder: Path, events: int, days: int) -> Path:
    """A project file for one warehouse in ``folder`` (the source is shared)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "recfeat.yaml"
    cfg.write_text(
        f"warehouse: {{root: {folder / 'warehouse'}}}\n"
        f"sources_root: {folder.parent / 'sources'}\n"
        f"sources: {{synthetic: {{kind: synthetic, path: {folder.parent / 'sources' / 'synthetic'}}}}}\n"
        "active_source: synthetic\n"
        f"synthetic: {{events: {events}, seed: 7, start_date: 2022-04-08, days: {days}}}\n"
        f"partitions: {{start_date: 2022-04-08, end_date: 2022-04-{8 + days:02d}}}\n"
        "spark: {shuffle_partitions: 2, driver_memory: 2g}\n"
    )
    (folder / "dagster").mkdir(parents=True, exist_ok=True)
    (folder / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return cfg


def pipeline_command(cfg: Path, assets: list[str] | None = None) -> list[str]:
    recfeat = [sys.executable, "-m", "orchestration.cli", "--config", str(cfg)]
    source = cfg.parent.parent / "sources" / "synthetic"
    # The same source name as the assets' (the generated files are in KuaiRand format).
    ingest = " ".join(recfeat + ["ingest", "--source", "kuairand", "--name", "synthetic", "--input", str(source)])
    materialize = " ".join(recfeat + ["materialize", "--select", ",".join(assets or ASSETS)])
    return ["bash", "-c", f"echo STEP ingest && {ingest} && echo STEP materialize && {materialize} && echo STEP done"]


def environment(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DAGSTER_HOME=str(folder / "dagster"), PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1", PYTHONPATH=str(REPO))
    return env


def run_to_end(folder: Path, cfg: Path, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "a") as out:
        proc = subprocess.run(pipeline_command(cfg), stdout=out, stderr=subprocess.STDOUT, env=environment(folder), cwd=folder)
    if proc.returncode != 0:
        raise SystemExit(f"the pipeline failed in {folder} (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def run_and_kill(folder: Path, cfg: Path, log: Path, delay: float) -> tuple[str, bool]:
    """Start the pipeline as a process group, SIGKILL the group after ``delay`` s; (last step, finished)."""
    with open(log, "a") as out:
        out.write(f"\n=== run, kill after {delay:.1f} s ===\n")
        out.flush()
        proc = subprocess.Popen(pipeline_command(cfg), stdout=out, stderr=subprocess.STDOUT, env=environment(folder),
                                cwd=folder, start_new_session=True)
        try:
            proc.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            finished = False
    steps = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("STEP ")]
    return (steps[-1] if steps else "start"), finished


def table_state(root: Path) -> dict[str, int]:
    from pipelines.warehouse import Warehouse

    wh = Warehouse(str(root))
    return {t: wh.current_version(t) for t in wh.tables()}


def check_readable(root: Path) -> list[str]:
    """Problems: a table whose current version cannot be read, or misses a file."""
    from pipelines.warehouse import Warehouse

    wh = Warehouse(str(root))
    problems = []
    for table in wh.tables():
        try:
            files = wh.files(table)
            missing = [f for f in files if not os.path.exists(f)]
            if missing:
                problems.append(f"{table}: {len(missing)} missing files, e.g. {missing[0]}")
                continue
            wh.read_arrow(table)
        except Exception as exc:  # noqa: BLE001 - report every table
            problems.append(f"{table}: {str(exc).splitlines()[0]}")
    return problems


def canonical(root: Path, table: str):
    """The table's rows without per-run columns, sorted, as a pandas frame."""
    from pipelines.warehouse import Warehouse

    frame = Warehouse(str(root)).read_arrow(table).to_pandas()
    frame = frame[[c for c in frame.columns if c not in PER_RUN_COLUMNS]]
    for col in frame.columns:  # lists and dicts are not sortable as they are
        if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, (list, dict)) or hasattr(v, "tolist")).any():
            frame[col] = frame[col].map(lambda v: json.dumps(v.tolist() if hasattr(v, "tolist") else v, default=str))
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def compare(clean: Path, chaos: Path) -> list[str]:
    from pipelines.warehouse import Warehouse

    problems = []
    clean_tables, chaos_tables = set(Warehouse(str(clean)).tables()), set(Warehouse(str(chaos)).tables())
    if clean_tables != chaos_tables:
        problems.append(f"tables differ: clean {sorted(clean_tables)} vs chaos {sorted(chaos_tables)}")
    for table in sorted((clean_tables & chaos_tables) - RUN_LOGS):
        a, b = canonical(clean, table), canonical(chaos, table)
        if len(a) != len(b):
            problems.append(f"{table}: {len(b):,} rows against the clean run's {len(a):,}")
        elif not a.equals(b):
            diff = (a != b).any(axis=1).sum()
            problems.append(f"{table}: {diff:,} of {len(a):,} rows differ from the clean run")
    events = Warehouse(str(chaos)).read_arrow("events", columns=["event_id"]).column("event_id").to_pylist()
    if len(events) != len(set(events)):
        problems.append(f"events: {len(events) - len(set(events)):,} duplicated event ids")
    clean_events = set(Warehouse(str(clean)).read_arrow("events", columns=["event_id"]).column("event_id").to_pylist())
    if set(events) != clean_events:
        problems.append(f"events: {len(clean_events - set(events)):,} lost, {len(set(events) - clean_events):,} invented")
    return problems


def leftovers(root: Path) -> list[str]:
    """Staging areas and temporary files still in the warehouse."""
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        if "_staging" in parts and path.is_file():
            out.append(rel)
        elif parts[0] == "_tmp" and path.is_file():
            out.append(rel)
        elif ".tmp-" in path.name:
            out.append(rel)
    return out


def chaos(args) -> int:
    base = Path(tempfile.mkdtemp(prefix="recfeat-chaos-"))
    rng = random.Random(args.seed)
    clean_dir, chaos_dir = base / "clean", base / "chaos"
    clean_cfg = project(clean_dir, args.events, args.days)
    chaos_cfg = project(chaos_dir, args.events, args.days)
    gen = subprocess.run([sys.executable, "-m", "orchestration.cli", "--config", str(clean_cfg), "generate",
                          "--events", str(args.events), "--seed", "7", "--days", str(args.days),
                          "--out", str(base / "sources" / "synthetic")], capture_output=True, text=True,
                         env=environment(clean_dir))
    if gen.returncode != 0:
        raise SystemExit(gen.stderr)
    print(f"folder: {base}")
    clean_s = run_to_end(clean_dir, clean_cfg, clean_dir / "run.log")
    print(f"clean run: {clean_s:.1f} s; tables {table_state(clean_dir / 'warehouse')}", flush=True)
    failures = 0
    log = chaos_dir / "run.log"
    bound, kills, attempts = clean_s, 0, 0
    while kills < args.kills and attempts < 3 * args.kills:
        attempts += 1
        delay = rng.uniform(1.0, bound)
        before = table_state(chaos_dir / "warehouse")
        t0 = time.perf_counter()
        step, finished = run_and_kill(chaos_dir, chaos_cfg, log, delay)
        if finished:  # a run with less to do: draw the next kill from its duration
            bound = max(2.0, time.perf_counter() - t0)
            print(f"run {attempts:>2}: finished in {bound:5.1f} s before the kill at {delay:5.1f} s (not counted)", flush=True)
            continue
        kills += 1
        after = table_state(chaos_dir / "warehouse")
        committed = sorted(t for t, v in after.items() if before.get(t) != v)
        problems = check_readable(chaos_dir / "warehouse")
        failures += bool(problems)
        print(f"kill {kills:>2}/{args.kills}: after {delay:5.1f} s, during {step}; committed before it: "
              f"{', '.join(committed) or 'nothing'}; every table reads at its current version with all its files: "
              f"{'yes' if not problems else problems}", flush=True)
    if kills < args.kills:
        print(f"only {kills} of {args.kills} kills landed in {attempts} runs")
        failures += 1
    run_to_end(chaos_dir, chaos_cfg, log)
    problems = compare(clean_dir / "warehouse", chaos_dir / "warehouse")
    left = leftovers(chaos_dir / "warehouse")
    print(f"final run: tables equal the clean run's: {'yes' if not problems else problems}")
    print(f"leftover staging/temporary files: {len(left)}" + (f" ({left[:5]})" if left else ""))
    ok = failures == 0 and not problems and not left
    print("CHAOS PASSED" if ok else "CHAOS FAILED")
    if ok and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


def concurrent(args) -> int:
    base = Path(tempfile.mkdtemp(prefix="recfeat-race-"))
    clean_dir, race_dir = base / "clean", base / "race"
    clean_cfg = project(clean_dir, args.events, args.days)
    race_cfg = project(race_dir, args.events, args.days)
    subprocess.run([sys.executable, "-m", "orchestration.cli", "--config", str(clean_cfg), "generate", "--events",
                    str(args.events), "--seed", "7", "--days", str(args.days), "--out", str(base / "sources" / "synthetic")],
                   check=True, capture_output=True, env=environment(clean_dir))
    print(f"folder: {base}")
    run_to_end(clean_dir, clean_cfg, clean_dir / "run.log")
    recfeat = [sys.executable, "-m", "orchestration.cli", "--config", str(race_cfg)]
    procs = []
    for name in ("a", "b"):
        home = race_dir / f"dagster-{name}"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = environment(race_dir) | {"DAGSTER_HOME": str(home)}
        procs.append(subprocess.Popen(recfeat + ["materialize", "--select", ",".join(ASSETS)], env=env, cwd=race_dir,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(), p.stdout.read(), p.stderr.read()) for p in procs]
    ok = True
    for name, (rc, _, err) in zip("ab", results):
        conflict = [line for line in err.splitlines() if "commit conflict" in line]
        verdict = "succeeded" if rc == 0 else ("failed with the conflict line" if conflict else "FAILED otherwise")
        print(f"run {name}: exit {rc}, {verdict}" + (f": {conflict[0][:200]}" if conflict else ""))
        if rc != 0 and not conflict:
            ok = False
            print(err[-2000:])
    if not any(rc == 0 for rc, _, _ in results):
        print("neither run succeeded")
    problems = check_readable(race_dir / "warehouse")
    print(f"after the race every table reads: {'yes' if not problems else problems}")
    run_to_end(race_dir, race_cfg, race_dir / "run.log")  # the loser's retry
    problems += compare(clean_dir / "warehouse", race_dir / "warehouse")
    print(f"after a retry the tables equal the clean run's: {'yes' if not problems else problems}")
    ok = ok and not problems
    print("RACE PASSED" if ok else "RACE FAILED")
    if ok and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    p.add_argument("--events", type=int, default=20_000, help="synthetic events (default 20,000)")
    p.add_argument("--days", type=int, default=4, help="days of events (default 4)")
    p.add_argument("--seed", type=int, default=1, help="seed of the kill delays")
    p.add_argument("--concurrent", action="store_true", help="the two-runs-at-once scenario instead")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--assets", help=f"comma-separated table assets (default: all, {','.join(TABLE_ASSETS)})")
    args = p.parse_args(argv)
    if args.assets:
        unknown = sorted(set(args.assets.split(",")) - set(TABLE_ASSETS))
        if unknown:
            p.error(f"unknown assets {unknown}")
        ASSETS[:] = args.assets.split(",")
    return concurrent(args) if args.concurrent else chaos(args)


if __name__ == "__main__":
    sys.exit(main())
