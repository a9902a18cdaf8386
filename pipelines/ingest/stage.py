"""Stage directories: ingestion's own temporary folders, owned (``flock``) by their run and cleaned when stale."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass

from pipelines.sections import local_stage_root
from pipelines.warehouse import Warehouse

try:  # POSIX; elsewhere only stage folders without an owner file are ever removed
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

_log = logging.getLogger("recfeat.ingest")

#: Prefix of a run's stage directory.
STAGE_PREFIX = "ingest-"
#: The owner file of a stage directory: locked by its run, and a record of who that is.
STAGE_OWNER_FILE = ".owner"
#: A stage directory without an owner file (written by an older version, or a run that died
#: while creating it) is removed once it is older than this (seconds since its last change).
STALE_STAGE_SECONDS = 3600


# ---- stage directories ---------------------------------------------------------------------


def stage_base(warehouse: Warehouse, stage_root: str | None) -> tuple[str, bool]:
    """Where stage directories go, and whether that folder is ingestion's own (so that
    leftovers without an owner file may be removed there; never in the system temp dir)."""
    root = local_stage_root(stage_root, field="stage_root")
    if root:
        return os.path.abspath(root), True
    if warehouse.is_local:
        return os.path.join(warehouse.root, "_tmp"), True
    return tempfile.gettempdir(), False


@dataclass
class StageDir:
    """A run's stage directory and the open, locked owner file that marks it as in use."""

    path: str
    _owner: int | None = None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._owner is not None:
            os.close(self._owner)  # releases the lock
            self._owner = None


def new_stage_dir(base: str, run_id: str) -> StageDir:
    """A fresh stage directory under ``base`` with its owner file locked.

    The owner file is written and locked under a temporary name and then renamed into place, so
    a cleaner never finds an owner file that is not locked yet.
    """
    os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=base)
    record = {
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = os.path.join(path, STAGE_OWNER_FILE + ".tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    os.replace(tmp, os.path.join(path, STAGE_OWNER_FILE))
    return StageDir(path, fd)


def clean_stale_stage_dirs(base: str, own_folder: bool = True, now: float | None = None) -> list[str]:
    """Remove the stage directories under ``base`` that no running run owns; return them.

    A directory with an owner file is removed when that file's lock is free (its run ended
    without cleaning up: killed, or its machine lost); one without an owner file only in
    ingestion's own folder (``own_folder``) and once it is older than
    :data:`STALE_STAGE_SECONDS`. Errors while removing are logged, never raised.
    """
    if not os.path.isdir(base):
        return []
    now = time.time() if now is None else now
    removed = []
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        if not name.startswith(STAGE_PREFIX) or os.path.islink(path) or not os.path.isdir(path):
            continue
        owner = os.path.join(path, STAGE_OWNER_FILE)
        try:
            if os.path.exists(owner):
                # Without flock (not POSIX) a live owner cannot be told from a dead one: keep.
                stale = fcntl is not None and _remove_if_unlocked(path, owner)
            else:
                stale = own_folder and now - os.path.getmtime(path) > STALE_STAGE_SECONDS
                if stale:
                    shutil.rmtree(path)
        except OSError as exc:
            _log.warning("could not remove stale stage directory %s: %s", path, exc)
            continue
        if stale:
            removed.append(path)
    if removed:
        _log.info("removed %d stale stage directories under %s: %s", len(removed), base, removed)
    return removed


def _remove_if_unlocked(path: str, owner: str) -> bool:
    try:
        fd = os.open(owner, os.O_RDWR)
    except FileNotFoundError:  # its run just removed it
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a running run holds it
        shutil.rmtree(path)
        return True
    finally:
        os.close(fd)
