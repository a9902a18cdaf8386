"""File systems of a warehouse root, process and file-age probes, the staged-write record."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import fsspec

from features.contracts import TableContract
from features.layout import Manifest
from pipelines.warehouse.errors import WarehouseError


#: A staging area whose owner cannot be checked (another host) is abandoned after this long.
STALE_STAGING_SECONDS = 24 * 3600
_log = logging.getLogger("recfeat.warehouse")


def _path_exists(path: str) -> bool:
    """Whether a local path or an fsspec URI exists (a run directory a pin refers to)."""
    fs, p = fsspec.core.url_to_fs(path)
    return fs.exists(p)


def pin_is_stale(record: dict, exists=None, now: dt.datetime | None = None) -> bool:
    """Whether a pin no longer holds: expired, or its run directory is gone.

    ``exists(uri) -> bool`` checks a URI (default: fsspec). A local run directory written on
    another host is never judged from here; an error while checking keeps the pin.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    if record.get("expires_at") and dt.datetime.fromisoformat(record["expires_at"]) <= now:
        return True
    run_dir = record.get("run_dir")
    if not run_dir:
        return False
    try:
        if "://" in run_dir:
            return not (exists or _path_exists)(run_dir)
        if record.get("host") not in (None, socket.gethostname()):
            return False
        return not os.path.exists(run_dir)
    except Exception:  # noqa: BLE001 - cannot tell: keep the version
        return False


#: Object stores: fsspec protocol -> (the package implementing it, the recfeat install extra).
STORE_PACKAGES = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
}
HDFS_PROTOCOLS = ("hdfs", "viewfs")


def filesystem(uri: str):
    """``fsspec.core.url_to_fs(uri)``, with a one-line :class:`WarehouseError` naming what to
    install when the URI's filesystem is not available here (instead of fsspec's traceback)."""
    protocol = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    try:
        if protocol in HDFS_PROTOCOLS:
            # pyarrow's HDFS client prints every failed attempt to load libjvm / libhdfs from C.
            with _quiet_native_stderr():
                return fsspec.core.url_to_fs(uri)
        return fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        if protocol in STORE_PACKAGES:
            package, extra = STORE_PACKAGES[protocol]
            raise WarehouseError(
                f"{uri}: the {protocol}:// filesystem needs the package {package}, which is not installed: "
                f"install the extra recfeat[{extra}] (in the project: pip install -e '.[{extra}]')"
            ) from None
        raise WarehouseError(f"{uri}: the {protocol}:// filesystem is not installed: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        if protocol not in HDFS_PROTOCOLS:
            raise
        raise WarehouseError(
            f"{uri}: pyarrow's HDFS client cannot start ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
            "hdfs:// needs a Java runtime (JAVA_HOME) and Hadoop's libhdfs (HADOOP_HOME or ARROW_LIBHDFS_DIR, "
            "and CLASSPATH=$(hadoop classpath --glob)); see docs/configuration.md"
        ) from None
    except ValueError as exc:
        if "Protocol not known" not in str(exc):
            raise
        raise WarehouseError(f"{uri}: unknown filesystem {protocol}:// (not an fsspec protocol)") from None


@contextmanager
def _quiet_native_stderr():
    """Send file descriptor 2 (what C libraries write to) to /dev/null for the block."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass
class StagedWrite:
    """An open transaction: where to write, which partitions the write covers, what it read."""

    table: str
    txn: str
    path: str
    contract: TableContract
    replace_partitions: list[str] | None
    #: The table version this write is based on (0: the table did not exist). The commit fails
    #: with :class:`CommitConflict` if anyone else committed after it.
    base_version: int = 0
    #: Add the staged files without replacing anything (concurrent appends both land).
    append: bool = False
    #: What the commit made (set by :meth:`Warehouse.commit`).
    manifest: Manifest | None = None


#: Table properties of every table recfeat creates: the log is never cleaned up behind
#: recfeat's back (time travel to a pinned version needs its log entries).
TABLE_CONFIGURATION = {"delta.enableExpiredLogCleanup": "false"}


def _log_actions(fs, path: str, kind: str) -> Iterator[dict]:
    """The ``kind`` actions (``add``, ``remove``) of one Delta log entry."""
    with fs.open(path, "r") as fh:
        for line in fh:
            if line.startswith('{"' + kind + '"'):
                yield json.loads(line)[kind]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mtime(entry: dict) -> float | None:
    value = entry.get("mtime") or entry.get("LastModified") or entry.get("created")
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value) if value is not None else None
