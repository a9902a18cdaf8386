"""Peak resident memory of a benchmark's process tree (this process, the Spark JVM, its Python workers)."""
from __future__ import annotations

import os
import threading


class TreeRss:
    """Peak resident memory of this process and its descendants (JVM, Spark Python workers),
    sampled from /proc every ``every`` seconds while in the ``with`` block (MB)."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak_mb = every, 0.0
        self._stop = threading.Event()

    @staticmethod
    def _tree_rss_kb() -> int:
        parent: dict[int, int] = {}
        rss: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parent[int(name)] = int(fields[1])
                rss[int(name)] = int(fields[21]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
            except (OSError, IndexError, ValueError):
                continue
        me, total = os.getpid(), 0
        for pid in rss:
            p = pid
            while p and p != me and p in parent:
                p = parent[p]
            if p == me:
                total += rss[pid]
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._tree_rss_kb() / 1024)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._tree_rss_kb() / 1024)
