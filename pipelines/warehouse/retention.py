"""Retention and staging clean-up: delete only files that no kept version refers to."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import unquote

from features.layout import STAGING_DIR, log_entry_path, txn_record_path
from pipelines.warehouse.files import _relative_files
from pipelines.warehouse.storage import STALE_STAGING_SECONDS, _log, _log_actions, _mtime, _pid_alive


class RetentionMixin:
    """Retention of :class:`~pipelines.warehouse.Warehouse`."""

    # ---- retention and crash cleanup -------------------------------------------------
    def retain(self, table: str) -> list[str]:
        """Delete the data files no kept version refers to, and dead transactions' leftovers.

        Kept versions are those :meth:`versions` lists; a file is kept if one of them refers to
        it, or if it belongs to a transaction that may still be running. Writes no commit
        (unlike Delta's ``VACUUM``), so it never races a writer. Returns the removed paths
        (relative to the table directory).
        """
        current = self.current_version(table)
        if current is None:
            return []
        _, unreadable = self._pin_files(table)
        if unreadable:  # a pin we cannot read might hold any version: remove nothing this time
            _log.warning("table %s: unreadable pin files %s; retention removes nothing", table, unreadable)
            self.last_removed_files[table] = []
            return []
        self.release_stale_pins(table)
        # Order matters against concurrent writers: list the files on disk first, then the
        # live transactions, then read the log. A file listed here was moved in before its
        # writer's staging area was listed (so that writer is live) or before its commit was
        # read (so it is referenced): no concurrent writer's file can be taken for garbage.
        on_disk = self._data_files(table)
        live = self.cleanup_staging(table)
        current = self.current_version(table)
        window = self._retention_window(table, current)
        referenced = set(self._referenced_since(table, window, current))
        for v in self.pins(table):
            if 1 <= v < window:
                referenced |= set(_relative_files(self._manifest_any(table, v)))
        base = self.table_path(table)
        removed = []
        for path in on_disk:
            rel = path[len(base) + 1:]
            if rel in referenced or any(txn in rel for txn in live):
                continue
            self.fs.rm(path)
            removed.append(rel)
        self._remove_empty_dirs(table)
        self.last_removed_files[table] = removed
        if removed:
            _log.info("table %s: retention removed %d files (versions before %d are no longer readable)",
                      table, len(removed), window)
        return removed

    def _referenced_since(self, table: str, window: int, current: int) -> Iterator[str]:
        """Relative paths of every file referenced by a version in ``window..current``."""
        yield from _relative_files(self._manifest_any(table, window))
        for v in range(window + 1, current + 1):
            key = (table, v)
            if key not in self._adds_cache:  # a committed log entry never changes
                self._adds_cache[key] = [unquote(a["path"]) for a in
                                         _log_actions(self.fs, log_entry_path(self.root, table, v), "add")]
            yield from self._adds_cache[key]

    def _data_files(self, table: str) -> list[str]:
        """Parquet files under the table directory, outside ``_``/``.`` directories (not walked)."""
        out: list[str] = []
        stack = [self.table_path(table)]
        while stack:
            folder = stack.pop()
            for entry in self.fs.ls(folder, detail=True):
                name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
                if name.startswith(("_", ".")):
                    continue
                if entry["type"] == "directory":
                    stack.append(entry["name"].rstrip("/"))
                elif name.endswith(".parquet"):
                    out.append(entry["name"])
        return out

    def _remove_empty_dirs(self, table: str) -> None:
        """Remove empty data directories; a directory a writer has just filled stays (``rmdir``)."""
        stack, found = [self.table_path(table)], []
        while stack:
            folder = stack.pop()
            for entry in self.fs.ls(folder, detail=True):
                name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
                if entry["type"] == "directory" and not name.startswith(("_", ".")):
                    stack.append(entry["name"].rstrip("/"))
                    found.append(entry["name"].rstrip("/"))
        for folder in sorted(found, key=len, reverse=True):
            self._rmdir(folder)

    def _rmdir(self, folder: str) -> None:
        try:
            if self.is_local:
                os.rmdir(folder)
            elif not self.fs.ls(folder, detail=False):
                self.fs.rmdir(folder)
        except OSError:  # not empty (or gone): leave it
            pass

    def cleanup_staging(self, table: str) -> set[str]:
        """Remove the staging areas of transactions that are gone, and any files they moved
        into the table without committing; return the transactions that may still be running.

        A transaction is gone when its process is dead (same host) or its record is older than
        :data:`STALE_STAGING_SECONDS` (a record from another host, or none at all).
        """
        stage_root = f"{self.table_path(table)}/{STAGING_DIR}"
        live: set[str] = set()
        if not self.fs.exists(stage_root):
            return live
        for entry in self.fs.ls(stage_root, detail=True):
            txn = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if self._txn_alive(table, txn, entry):
                live.add(txn)
                continue
            if self._version_of_txn(table, txn) is None:
                own = re.compile(r"part-\d{5}-" + re.escape(txn) + r"\.parquet$")
                for path in self._data_files(table):
                    if own.search(path.rsplit("/", 1)[-1]):
                        self.fs.rm(path)
            self.fs.rm(entry["name"], recursive=True)
            _log.info("table %s: removed the leftovers of transaction %s", table, txn)
        return live

    def _txn_alive(self, table: str, txn: str, entry: dict) -> bool:
        record_path = txn_record_path(self.root, table, txn)
        try:
            with self.fs.open(record_path, "r") as fh:
                record = json.loads(fh.read())
        except (OSError, ValueError):
            record = None
        if record and record.get("host") == socket.gethostname() and self.is_local:
            return _pid_alive(int(record.get("pid", -1)))
        mtime = _mtime(entry)
        if mtime is None and record:  # object stores: directories have no time; the record has
            stamp = record.get("committing_at") or record.get("started_at")
            mtime = dt.datetime.fromisoformat(stamp).timestamp() if stamp else None
        return mtime is None or time.time() - mtime < STALE_STAGING_SECONDS
