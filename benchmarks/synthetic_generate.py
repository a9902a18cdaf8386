"""Benchmark: the synthetic generator's speed and peak memory, at N events and at a baseline size.

Usage::

    .venv/bin/python benchmarks/synthetic_generate.py [EVENTS] [--baseline EVENTS] [--keep DIR]

Each size runs in a fresh Python process (so ``ru_maxrss``, the peak resident set size, is that
run's own), writing into a temporary directory that is removed afterwards unless ``--keep``.
Printed per run: elapsed seconds, events/s, peak RSS, the RSS right after the imports, and the
bytes written. The last line gives the ratios large / baseline: events grow by the first ratio,
peak RSS by the second; a bounded generator keeps the second near 1.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _child(events: int, out_dir: str) -> None:
    sys.path.insert(0, str(REPO))
    from pipelines.settings import SyntheticSettings
    from pipelines.synthetic import generate

    rss_imports = _peak_rss_mib()
    t0 = time.perf_counter()
    res = generate(out_dir, SyntheticSettings(events=events))
    elapsed = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in Path(out_dir).rglob("*") if f.is_file())
    print(
        json.dumps(
            {
                "events": res.events,
                "seconds": elapsed,
                "peak_rss_mib": _peak_rss_mib(),
                "rss_after_imports_mib": rss_imports,
                "bytes": size,
            }
        )
    )


def _run(events: int, keep: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="recfeat-synth-") as tmp:
        out = keep if keep else tmp
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(events), out],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _line(label: str, r: dict) -> str:
    return (
        f"{label:9s} {r['events']:>12,} events  {r['seconds']:8.1f} s  {r['events'] / r['seconds']:>12,.0f} events/s  "
        f"peak RSS {r['peak_rss_mib']:7.1f} MiB (after imports {r['rss_after_imports_mib']:.1f} MiB)  "
        f"written {r['bytes'] / 2**20:,.0f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(int(argv[1]), argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("events", nargs="?", type=int, default=10_000_000)
    ap.add_argument("--baseline", type=int, default=1_000_000, help="baseline size (default 1,000,000)")
    ap.add_argument("--keep", metavar="DIR", help="write the large run here and keep it")
    args = ap.parse_args(argv)
    print(f"synthetic generator benchmark: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    base = _run(args.baseline, None)
    print(_line("baseline", base))
    large = _run(args.events, args.keep)
    print(_line("large", large))
    print(
        f"ratio large/baseline: events x{large['events'] / base['events']:.1f}, "
        f"time x{large['seconds'] / base['seconds']:.1f}, peak RSS x{large['peak_rss_mib'] / base['peak_rss_mib']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
