"""The warehouse: every table a Delta Lake table, with atomic, conflict-checked commits.

Layout and commit records are defined once in :mod:`features.layout`; a version is read into a
:class:`~features.layout.Manifest` by :mod:`features.snapshots`. Data files are written and
read through fsspec, so the root may be a local path (the default), ``file://``, ``s3://`` or
``gs://``; the transaction log goes through ``deltalake`` (delta-rs), which any Delta reader
(Polars, DuckDB, Spark with the Delta connector) can then read.

Commit protocol (:meth:`Warehouse.commit`): data is written under ``_staging/<txn>`` (with a
record of the owning host and process), the files are moved to their committed names
(``<col>=<value>/part-NNNNN-<txn>.parquet``), and one Delta transaction adds them and removes
the files they replace. The transaction is based on the version the job read
(``base_version``) and is attempted exactly once: if any other writer committed after that
version, it fails with :class:`CommitConflict` and its moved files are removed, so two writers
never both succeed on stale reads. Appends (``append=True``) are retried by delta-rs instead,
since they replace nothing. A writer killed at any step leaves the last version readable and
complete; :meth:`Warehouse.cleanup_staging` removes a dead transaction's leftovers on the
next commit. Retention (:meth:`Warehouse.retain`) runs after every commit and deletes only
files that no kept version refers to.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
import re
from urllib.parse import unquote

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import TableContract
from features.layout import (
    LEGACY_MANIFESTS_DIR,
    STAGING_DIR,
    UNPARTITIONED,
    Manifest,
    commit_metadata,
    data_file_name,
    delta_log_dir,
    legacy_pointer_path,
    log_entry_path,
    parse_version,
    pin_path,
    pin_record,
    pins_dir,
    read_pin,
    staging_dir,
    table_dir,
    txn_record_path,
)
from features.snapshots import SnapshotError, VersionRef, commit_info, delta_uri, manifest_of, open_table

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


class WarehouseError(RuntimeError):
    """A table is missing, corrupt, or a commit could not be made."""


class CommitConflict(WarehouseError):
    """Another writer committed to the table first, and this commit would overwrite what it did.

    Nothing of this commit is visible; the winner's commit is intact. ``table`` is the table,
    ``base_version`` the version this writer read, ``lost_to`` the version it lost to (when known).
    Retrying is safe for appends (``rejected_events``, ``ingest_runs``); a job that read the table
    (partition replacement) must re-run from its read, which is what a job retry does.
    """

    def __init__(self, table: str, base_version: int | None, lost_to: int | None, detail: str = ""):
        self.table, self.base_version, self.lost_to = table, base_version, lost_to
        won = f"version {lost_to}" if lost_to is not None else "a newer version"
        super().__init__(
            f"table {table!r}: commit conflict: another writer committed {won} after this run read "
            f"version {base_version}; nothing of this run was committed (retry the run){': ' + detail if detail else ''}"
        )


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


class Warehouse:
    """Delta Lake tables under ``root``: atomic, conflict-checked commits, time travel, retention.

    ``retention_days``: how long a version stays readable after a newer one replaced it (the
    files a commit replaced are deleted once they are older than that and no kept version
    refers to them). ``keep_versions``: the newest versions kept however old. ``pinned``:
    table -> versions kept besides (the project configuration's pinned table versions); runs
    pin theirs with pin files (:meth:`pin`). ``storage_options``: passed to ``deltalake`` for
    object stores (credentials come from the environment; see docs/warehouse.md).
    """

    def __init__(self, root: str, retention_days: float = 7.0, keep_versions: int = 5,
                 pinned: dict[str, Iterable[int]] | None = None, storage_options: dict[str, str] | None = None):
        if retention_days < 0 or keep_versions < 1:
            raise WarehouseError("retention_days must be >= 0 and keep_versions >= 1")
        self.pinned = {t: {int(v) for v in vs} for t, vs in (pinned or {}).items()}
        #: table -> versions the last commit's retention made unreadable (also logged), and the
        #: data files it deleted (relative to the table directory).
        self.last_removed: dict[str, list[int]] = {}
        self.last_removed_files: dict[str, list[str]] = {}
        self.uri = root
        self.fs, path = filesystem(root)
        self.root = path.rstrip("/") if path != "/" else path
        self.is_local = self.fs.protocol in ("file", "local") or "file" in tuple(self.fs.protocol)
        if self.is_local:
            self.root = os.path.abspath(self.root)
        #: What the Delta log is opened at: the local path, or the URI with its scheme.
        self.delta_root = self.root if self.is_local else self.fs.unstrip_protocol(self.root)
        self.retention_days = float(retention_days)
        self.keep_versions = int(keep_versions)
        self.storage_options = dict(storage_options or {})
        #: table -> the oldest latest-version this object read since its own last commit there:
        #: the default base of a write (a read-modify-write cannot lose a concurrent commit).
        self._read_versions: dict[str, int] = {}
        self._commit_cache: dict[tuple[str, int], dict] = {}
        self._adds_cache: dict[tuple[str, int], list[str]] = {}

    # ---- addresses -------------------------------------------------------------------
    def spark_uri(self, path: str) -> str:
        """The URI Spark uses for a path of this warehouse."""
        if self.is_local:
            return "file://" + path
        return self.fs.unstrip_protocol(path)

    def table_path(self, table: str) -> str:
        return table_dir(self.root, table)

    # ---- pins (versions retention keeps; features/layout.py) -------------------------
    def pin(self, table: str, version: int, name: str, run_dir: str | None = None,
            expires_in_s: float | None = None) -> None:
        """Keep ``version`` of ``table`` through retention (while ``run_dir`` exists, until it expires)."""
        if version not in self.versions(table) and not self._intact(table, version):
            raise WarehouseError(f"table {table!r} has no version {version} to pin (kept: {self.versions(table)})")
        self._put_text(pin_path(self.root, table, name), pin_record(version, run_dir, expires_in_s))

    def unpin(self, table: str, name: str) -> None:
        path = pin_path(self.root, table, name)
        if self.fs.exists(path):
            self.fs.rm(path)

    def pins(self, table: str) -> dict[int, list[str]]:
        """Version -> what pins it (pin names, ``config`` for the project configuration).

        Stale pins (:func:`pin_is_stale`) are left out; :meth:`release_stale_pins` removes them.
        """
        out: dict[int, list[str]] = {v: ["config"] for v in self.pinned.get(table, ())}
        records, _ = self._pin_files(table)
        for name, pin in sorted(records.items()):
            if not pin_is_stale(pin):
                out.setdefault(int(pin["version"]), []).append(name)
        return out

    def release_stale_pins(self, table: str) -> list[str]:
        """Remove the pins that have expired or whose run directory is gone; return their names."""
        records, _ = self._pin_files(table)
        gone = [n for n, pin in sorted(records.items()) if pin_is_stale(pin)]
        for name in gone:
            self.unpin(table, name)
        return gone

    def _pin_files(self, table: str) -> tuple[dict[str, dict], list[str]]:
        """(name -> pin record, names of pin files that cannot be read)."""
        folder = pins_dir(self.root, table)
        if not self.fs.exists(folder):
            return {}, []
        out, bad = {}, []
        for entry in self.fs.ls(folder, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if not name.endswith(".json"):
                continue
            try:
                with self.fs.open(entry, "r") as fh:
                    out[name[: -len(".json")]] = read_pin(fh.read())
            except (OSError, ValueError) as exc:
                bad.append(f"{name} ({exc})")
        return out, bad

    # ---- reading ---------------------------------------------------------------------
    def _open(self, table: str, version: VersionRef = None):
        try:
            return open_table(self.delta_root, table, version, self.storage_options)
        except SnapshotError as exc:
            if "has no committed version under" in str(exc):
                known = ", ".join(self.tables()) or "none"
                raise WarehouseError(f"table {table!r} has no committed version in {self.uri} (tables: {known})") from None
            raise WarehouseError(str(exc)) from None

    def tables(self) -> list[str]:
        """Names of the tables that have a committed version."""
        if not self.fs.exists(self.root):
            return []
        names = []
        for entry in self.fs.ls(self.root, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if self.fs.exists(delta_log_dir(self.root, name)) and self.current_version(name) is not None:
                names.append(name)
        return sorted(names)

    def exists(self, table: str) -> bool:
        return self.current_version(table) is not None

    def is_legacy(self, table: str) -> bool:
        """Whether ``table`` is still in the pre-Delta layout (``recfeat migrate`` converts it)."""
        return self.fs.exists(legacy_pointer_path(self.root, table))

    def current_version(self, table: str) -> int | None:
        """The latest committed version (``None``: no table, only its creation, or a table
        still in the pre-Delta layout, whose migration may be half done).

        Read from the log's entry names (an entry exists only once its commit is complete).
        """
        if self.is_legacy(table):
            return None
        return self._log_version(table)

    def _log_version(self, table: str) -> int | None:
        """The newest log entry's version: from the last checkpoint on, probing the entries
        after it (Delta's own rule), else from one listing of the (short) log."""
        log_dir = delta_log_dir(self.root, table)
        try:
            with self.fs.open(f"{log_dir}/_last_checkpoint", "r") as fh:
                latest = int(json.loads(fh.read())["version"])
        except (FileNotFoundError, ValueError, KeyError):
            try:
                names = self.fs.ls(log_dir, detail=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
            versions = [int(n) for n in (p.rstrip("/").rsplit("/", 1)[-1][:-5] for p in names if p.endswith(".json"))
                        if n.isdigit()]
            latest = max(versions, default=-1)
        while self.fs.exists(log_entry_path(self.root, table, latest + 1)):
            latest += 1
        return latest if latest >= 1 else None

    def history(self, table: str, limit: int | None = None) -> list[dict]:
        """Commits, newest first: version, timestamp (UTC), operation, and recfeat's record."""
        out = []
        for entry in self._open(table).history(limit):
            record = {
                "version": int(entry["version"]),
                "timestamp": dt.datetime.fromtimestamp(int(entry["timestamp"]) / 1000, dt.timezone.utc),
                "operation": entry.get("operation"),
            }
            record.update({k: v for k, v in entry.items() if k.startswith("recfeat.")})
            out.append(record)
        return out

    def versions(self, table: str) -> list[int]:
        """Versions a read can travel to: the newest ``keep_versions``, every version replaced
        less than ``retention_days`` ago, and every pinned one (placeholders of a migration,
        which never held data, are left out)."""
        current = self.current_version(table)
        if current is None:
            return []
        _, unreadable = self._pin_files(table)
        # A pin that cannot be read might hold any version: retention removes none of them.
        window = 1 if unreadable else self._retention_window(table, current)
        pinned = {v for v in self.pins(table) if 1 <= v <= current}
        out = []
        for v in sorted(set(range(window, current + 1)) | pinned):
            if not self._is_placeholder(table, v):
                out.append(v)
        return out

    def _intact(self, table: str, version: int) -> bool:
        """Whether a version outside retention still has every file (it may then be pinned)."""
        current = self.current_version(table)
        if current is None or not 1 <= version <= current or self._is_placeholder(table, version):
            return False
        return all(self.fs.exists(f) for f in self._manifest_any(table, version).file_paths(self.root))

    def _info(self, table: str, version: int) -> dict:
        """A version's ``commitInfo`` (cached: a committed log entry never changes)."""
        key = (table, version)
        if key not in self._commit_cache:
            info = commit_info(None, self.delta_root, table, version)
            if not info:
                return {}  # unreadable now: do not remember that
            self._commit_cache[key] = info
        return self._commit_cache[key]

    def _is_placeholder(self, table: str, version: int) -> bool:
        return version >= 1 and self._info(table, version).get("recfeat.placeholder") == "true"

    def _commit_time(self, table: str, version: int) -> float | None:
        ts = self._info(table, version).get("timestamp")
        return int(ts) / 1000 if ts is not None else None

    def _retention_window(self, table: str, current: int) -> int:
        """The oldest version inside retention: versions ``>=`` it stay readable."""
        cutoff = time.time() - self.retention_days * 86400
        v = current
        while v > 1:
            newest_n = current - (v - 1) < self.keep_versions
            replaced_at = self._commit_time(table, v)  # version v - 1 was replaced when v committed
            # An entry that cannot be read now keeps its version (retention fails closed).
            if not newest_n and replaced_at is not None and replaced_at <= cutoff:
                break
            v -= 1
        return v

    def manifest(self, table: str, version: VersionRef = None) -> Manifest:
        """The manifest of ``version`` (default: the latest; an int or an aware datetime).

        Every read is remembered: the oldest version this object read of a table since its own
        last commit there is the default base of its next write (:meth:`transaction`).
        """
        current = None
        if isinstance(version, dt.datetime):
            version = self._version_at(table, version)
        if isinstance(version, int):
            current = self.current_version(table)
            if current is not None and version != current and version not in self.versions(table):
                raise WarehouseError(f"table {table!r} has no version {version} (kept: {self.versions(table)})")
        manifest = manifest_of(self._open(table, version), self.delta_root, table)
        if version is None or manifest.version == current:
            # A read of what is current; a read of an older version is time travel, and a job
            # that modifies what it read there passes ``base_version`` itself.
            seen = self._read_versions.get(table)
            self._read_versions[table] = manifest.version if seen is None else min(seen, manifest.version)
        return manifest

    def _version_at(self, table: str, when: dt.datetime) -> int:
        """The version current at ``when``: the newest commit at or before it, by its recorded
        time (a migrated version keeps its original time); placeholders resolve to the version
        before them."""
        if when.tzinfo is None:
            raise WarehouseError(f"time travel needs a time with a zone (UTC), got {when.isoformat()}")
        current = self.current_version(table)
        if current is None:
            self._open(table)  # the usual one-line error
        best = None
        for v in range(1, current + 1):
            info = self._info(table, v)
            if info.get("recfeat.placeholder") == "true":
                continue  # never held data; its time is the migration's
            at = info.get("recfeat.committed_at")
            stamp = (dt.datetime.fromisoformat(at) if at else
                     dt.datetime.fromtimestamp(int(info.get("timestamp", 0)) / 1000, dt.timezone.utc))
            if stamp > when:
                break
            best = v
        if best is None:
            raise WarehouseError(f"table {table!r} had no committed version at {when.isoformat()}")
        return best

    def _manifest_any(self, table: str, version: int) -> Manifest:
        """The manifest of any version still in the log (no retention check, no read tracking)."""
        return manifest_of(self._open(table, version), self.delta_root, table)

    def files(self, table: str, version: VersionRef = None, partitions: list[str] | None = None) -> list[str]:
        return self.manifest(table, version).file_paths(self.root, partitions)

    def arrow_schema(self, manifest: Manifest) -> pa.Schema | None:
        files = manifest.file_paths(self.root)
        if not files:
            return None
        return pq.read_schema(files[0], filesystem=self.fs)

    def read_arrow(
        self,
        table: str,
        version: VersionRef = None,
        columns: list[str] | None = None,
        partitions: list[str] | None = None,
    ) -> pa.Table:
        """The whole committed table (or some partitions) as one Arrow table."""
        manifest = self.manifest(table, version)
        files = manifest.file_paths(self.root, partitions)
        if not files:
            return _empty_from_manifest(manifest, columns)
        with _missing_files_as_error(manifest):
            tables = [pq.read_table(f, columns=columns, filesystem=self.fs) for f in files]
        return pa.concat_tables(tables, promote_options="default")

    def iter_batches(self, table: str, version: VersionRef = None, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream the committed table in record batches (bounded memory)."""
        manifest = self.manifest(table, version)
        with _missing_files_as_error(manifest):
            for f in manifest.file_paths(self.root):
                pf = pq.ParquetFile(f, filesystem=self.fs)
                yield from pf.iter_batches(batch_size=batch_rows)

    def read_spark(self, spark, table: str, version: VersionRef = None, partitions: list[str] | None = None):
        """The committed table as a Spark DataFrame, with the schema it was written with."""
        from pyspark.sql.pandas.types import from_arrow_schema

        manifest = self.manifest(table, version)
        files = manifest.file_paths(self.root, partitions)
        with _missing_files_as_error(manifest):
            schema = self.arrow_schema(manifest)
        if not files or schema is None:
            empty = _empty_from_manifest(manifest, None)
            return spark.createDataFrame([], from_arrow_schema(empty.schema))
        return spark.read.schema(from_arrow_schema(schema)).parquet(*[self.spark_uri(f) for f in files])

    # ---- writing ---------------------------------------------------------------------
    @contextmanager
    def transaction(
        self,
        contract: TableContract,
        replace_partitions: list[str] | None = None,
        producer: dict[str, str] | None = None,
        base_version: int | None = None,
        append: bool = False,
    ) -> Iterator[StagedWrite]:
        """Open a staged write; commit when the block ends without error.

        Write Parquet files under ``staged.path`` (for partitioned tables, one sub-directory
        ``<partition_column>=<value>`` per partition). ``replace_partitions``: for a
        partitioned table, the partitions this write covers; the others are carried over, and
        a covered partition with no staged rows is removed. ``None`` replaces the whole table.
        ``append``: add the rows, replace nothing (concurrent appends both land).
        ``base_version``: the version the job's input of this table was read at (default: the
        oldest current version this object read of the table since its own last commit there,
        else the version now; a job that modifies an older version it read passes it); if another
        writer committed after it, the commit raises :class:`CommitConflict`. On error the
        staging area is removed and nothing changes.
        """
        name = contract.name
        if self.is_legacy(name):
            raise WarehouseError(f"table {name!r} in {self.uri} is in the pre-Delta layout: run `recfeat migrate` once")
        if base_version is None:
            base_version = self._read_versions.get(name, self.current_version(name) or 0)
        txn = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        path = staging_dir(self.root, name, txn)
        self.fs.makedirs(path, exist_ok=True)
        self._put_text(txn_record_path(self.root, name, txn), json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(),
             "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
        staged = StagedWrite(name, txn, path, contract, replace_partitions, int(base_version), append)
        try:
            yield staged
            self.commit(staged, producer)
        finally:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    def commit(self, staged: StagedWrite, producer: dict[str, str] | None = None) -> Manifest:
        """Make the staged files the table's next version in one Delta transaction."""
        contract = staged.contract
        col = contract.partition_column
        staged_parts = self._staged_partitions(staged)
        if staged.replace_partitions is not None and col is None:
            raise WarehouseError(f"table {contract.name!r} is not partitioned; replace_partitions must be None")
        if staged.replace_partitions is not None:
            unexpected = sorted(set(staged_parts) - set(staged.replace_partitions))
            if unexpected:
                raise WarehouseError(
                    f"table {contract.name!r}: the write holds partitions {unexpected[:5]} outside the ones it replaces"
                )
        # Validate every staged file's schema against the contract before anything moves.
        schema = None
        for files in staged_parts.values():
            for f in files:
                file_schema = pq.read_schema(f, filesystem=self.fs)
                try:
                    contract.validate_schema(file_schema)
                except ValueError as exc:
                    raise WarehouseError(str(exc)) from None
                schema = schema or file_schema
        previous = None
        if schema is None and staged.base_version >= 1:
            previous = self._manifest_any(contract.name, staged.base_version)
        schema_list = (
            previous.schema if schema is None and previous is not None
            else tuple((f.name, str(f.type)) for f in (schema or contract.schema))
        )
        base = self.table_path(contract.name)
        # What is readable now, counting pins that went stale but are not released yet.
        readable = set(self.versions(contract.name)) | {
            int(pin["version"]) for pin in self._pin_files(contract.name)[0].values()
        }
        moved: list[str] = []
        try:
            actions, row_counts = self._place_files(staged, staged_parts, base, moved)
            meta = commit_metadata(
                txn=staged.txn,
                contract=f"{contract.name}@{_schema_fingerprint(contract.schema)}",
                producer=dict(producer or {}),
                written_partitions=sorted(staged_parts),
                row_counts=row_counts,
                schema=schema_list,
                checks={"schema_vs_contract": "passed"},
            )
            version = self._commit_actions(staged, actions, meta, schema or contract.schema)
        except BaseException as exc:
            if isinstance(exc, CommitConflict):
                self._read_versions.pop(contract.name, None)  # a fresh read may base the retry
            self._discard_uncommitted(contract.name, staged.txn, moved)
            raise
        # The next write's base comes from the reads after this commit (or the version then).
        self._read_versions.pop(contract.name, None)
        try:
            self.last_removed[contract.name] = sorted(set(readable) - set(self.versions(contract.name)))
            self.retain(contract.name)
        except Exception as exc:  # noqa: BLE001 - the commit stands; retention retries next time
            _log.warning("table %s: retention after commit failed: %s", contract.name, exc)
        staged.manifest = self._manifest_any(contract.name, version)
        return staged.manifest

    def _place_files(self, staged: StagedWrite, staged_parts: dict[str, list[str]], base: str,
                     moved: list[str]) -> tuple[list, dict[str, int]]:
        """Move the staged files to their committed names; their Delta add actions and rows."""
        from deltalake.transaction import AddAction

        col = staged.contract.partition_column
        self._put_text(txn_record_path(self.root, staged.table, staged.txn), json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(),
             "committing_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
        actions, row_counts = [], {}
        for value, files in sorted(staged_parts.items()):
            rows, index = 0, 0
            for f in sorted(files):
                n = pq.ParquetFile(f, filesystem=self.fs).metadata.num_rows
                if n == 0 and col is not None:
                    continue
                rel = data_file_name(col, None if value == UNPARTITIONED else value, index, staged.txn)
                index += 1
                dest = f"{base}/{rel}"
                self.fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
                self.fs.mv(f, dest)
                moved.append(dest)
                info = self.fs.info(dest)
                mtime = _mtime(info) or time.time()
                actions.append(AddAction(  # delta-rs URL-encodes the path itself
                    rel, int(info["size"]), {col: value} if col else {},
                    int(mtime * 1000), True, json.dumps({"numRecords": n}),
                ))
                rows += n
            row_counts[value] = rows
        return actions, row_counts

    def _commit_actions(self, staged: StagedWrite, actions: list, meta: dict[str, str], schema: pa.Schema) -> int:
        """One Delta transaction from ``staged.base_version``; the version it made."""
        from deltalake import DeltaTable
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import CommitProperties

        contract = staged.contract
        col = contract.partition_column
        delta_schema = _nullable(schema)
        uri = delta_uri(self.delta_root, contract.name)
        if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
            try:
                DeltaTable.create(uri, delta_schema, mode="error", partition_by=[col] if col else None,
                                  configuration=TABLE_CONFIGURATION, storage_options=self.storage_options,
                                  commit_properties=CommitProperties(custom_metadata={"recfeat.contract": meta["recfeat.contract"]}))
            except Exception:  # noqa: BLE001 - another writer created it first: fine
                if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
                    raise
        table = DeltaTable(uri, storage_options=self.storage_options)
        latest = table.version()
        if latest > staged.base_version and not staged.append:
            raise CommitConflict(contract.name, staged.base_version, staged.base_version + 1)
        if staged.append or staged.replace_partitions == []:
            mode, filters = "append", None
        elif staged.replace_partitions is None:
            mode, filters = "overwrite", None
        else:
            mode, filters = "overwrite", [(col, "in", sorted(staged.replace_partitions))]
        props = CommitProperties(custom_metadata=meta, max_commit_retries=None if staged.append else 0)
        try:
            table.create_write_transaction(actions, mode, delta_schema, [col] if col else None, filters,
                                           commit_properties=props)
        except CommitFailedError as exc:
            now = self.current_version(contract.name) or 0
            if now > latest:
                raise CommitConflict(contract.name, staged.base_version, latest + 1) from None
            raise WarehouseError(f"table {contract.name!r}: the commit failed: {str(exc).splitlines()[0]}") from None
        if not staged.append:
            return latest + 1
        return self._version_of_txn(contract.name, staged.txn, newer_than=latest) or latest + 1

    def _version_of_txn(self, table: str, txn: str, newer_than: int = 0) -> int | None:
        """The version a transaction committed as (``None``: it never committed), looking at the
        versions after ``newer_than`` from the newest down and stopping at entries committed
        more than a day before the transaction's id says it started."""
        current = self._log_version(table)
        try:
            started = dt.datetime.strptime(txn.split("-", 1)[0], "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            started = None
        for v in range(current or 0, newer_than, -1):
            info = self._info(table, v)
            if info.get("recfeat.txn") == txn:
                return v
            ts = info.get("timestamp")
            if started is not None and ts is not None and int(ts) / 1000 < started - 86400:
                break
        return None

    def _discard_uncommitted(self, table: str, txn: str, moved: list[str]) -> None:
        """After a failed commit: remove the files it moved, unless the commit landed after all."""
        if not moved:
            return
        try:
            if self.current_version(table) is not None and self._version_of_txn(table, txn) is not None:
                return
        except Exception:  # noqa: BLE001 - cannot tell: leave them to the next cleanup
            return
        for path in moved:
            if self.fs.exists(path):
                self.fs.rm(path)
            parent = path.rsplit("/", 1)[0]
            if parent != self.table_path(table):
                self._rmdir(parent)

    def write_arrow(
        self,
        contract: TableContract,
        data: pa.Table | Iterable[pa.Table],
        replace_partitions: list[str] | None = None,
        producer: dict[str, str] | None = None,
        base_version: int | None = None,
        append: bool = False,
    ) -> Manifest:
        """Write Arrow data (one table or a stream of chunks) as the next version.

        Chunks are conformed to the contract and appended to one file per partition, so
        memory stays bounded by the chunk size.
        """
        chunks = [data] if isinstance(data, pa.Table) else data
        with self.transaction(contract, replace_partitions, producer, base_version, append) as staged:
            writers: dict[str, pq.ParquetWriter] = {}
            try:
                for chunk in chunks:
                    chunk = contract.conform(chunk)
                    for value, part in _split_partitions(chunk, contract.partition_column):
                        if value not in writers:
                            sub = f"{staged.path}/{_part_name(contract, value)}"
                            self.fs.makedirs(sub, exist_ok=True)
                            writers[value] = pq.ParquetWriter(
                                f"{sub}/part-00000.parquet", part.schema, filesystem=self.fs
                            )
                        writers[value].write_table(part)
                if not writers and contract.partition_column is None:
                    sub = f"{staged.path}/{UNPARTITIONED}"
                    self.fs.makedirs(sub, exist_ok=True)
                    empty = contract.schema.empty_table()
                    pq.write_table(empty, f"{sub}/part-00000.parquet", filesystem=self.fs)
            finally:
                for w in writers.values():
                    w.close()
        return staged.manifest

    def write_spark(
        self,
        df,
        contract: TableContract,
        replace_partitions: list[str] | None = None,
        producer: dict[str, str] | None = None,
        base_version: int | None = None,
        append: bool = False,
    ) -> Manifest:
        """Write a Spark DataFrame as the next version (partitioned by the contract's column)."""
        from pyspark.sql import functions as F

        missing = [c for c in contract.columns if c not in df.columns]
        if missing:
            raise WarehouseError(f"table {contract.name!r}: the DataFrame lacks columns {missing}")
        ordered = contract.columns + ([c for c in df.columns if c not in contract.columns] if contract.open_columns else [])
        df = df.select(*ordered)
        with self.transaction(contract, replace_partitions, producer, base_version, append) as staged:
            out = self.spark_uri(staged.path)
            if contract.partition_column is None:
                df.write.mode("overwrite").parquet(out + "/" + UNPARTITIONED)
            else:
                (
                    df.withColumn("_part", F.col(contract.partition_column).cast("string"))
                    .write.mode("overwrite")
                    .partitionBy("_part")
                    .parquet(out + "/_spark")
                )
                self._rename_spark_partitions(staged, contract)
        return staged.manifest

    def write_from_spark_arrow(
        self,
        df,
        kernel,
        contracts: list[TableContract],
        replace_partitions: list[str] | None = None,
        producer: dict[str, str] | None = None,
        base_version: dict[str, int] | None = None,
    ) -> dict[str, Manifest]:
        """Write one or more tables straight from Arrow in the Spark tasks, then commit each.

        ``kernel(batches)`` runs in every task of ``df.mapInArrow`` and yields ``(table_name,
        pa.Table)`` pairs; each is conformed to its contract and appended, per partition value,
        to a Parquet file in the table's staging area, named by the Spark partition id (a retried
        task overwrites its own files, never duplicates them). Nested columns never pass through
        Spark rows, which is what makes wide list columns cheap to write. When every task is done
        the tables commit one after the other; each commit is atomic on its own.
        ``base_version``: table -> the version its input was read at (see :meth:`transaction`).
        """
        from contextlib import ExitStack

        by_name = {c.name: c for c in contracts}
        bases = base_version or {}
        with ExitStack() as stack:
            staged = {c.name: stack.enter_context(self.transaction(c, replace_partitions, producer, bases.get(c.name)))
                      for c in contracts}
            targets = {name: (s.path, by_name[name]) for name, s in staged.items()}
            fs = self.fs

            def run(batches):
                from pyspark import TaskContext

                task = TaskContext.get().partitionId()
                writer = _TaskWriter(fs, targets, task)
                try:
                    for name, table in kernel(batches):
                        writer.write(name, table)
                finally:
                    counts = writer.close()
                yield pa.RecordBatch.from_pydict(
                    {"table": list(counts), "rows": list(counts.values())},
                    schema=pa.schema([("table", pa.string()), ("rows", pa.int64())]),
                )

            df.mapInArrow(run, "table string, rows long").collect()
        return {name: s.manifest for name, s in staged.items()}

    def export(self, table: str, out_path: str, version: VersionRef = None) -> int:
        """Write the committed version as one Parquet file at ``out_path``; return the row count."""
        manifest = self.manifest(table, version)
        schema = self.arrow_schema(manifest) or _empty_from_manifest(manifest, None).schema
        out_fs, out = filesystem(out_path)
        parent = os.path.dirname(out)
        if parent:
            out_fs.makedirs(parent, exist_ok=True)
        tmp = f"{out}.tmp-{uuid.uuid4().hex[:8]}"
        rows = 0
        with pq.ParquetWriter(tmp, schema, filesystem=out_fs) as writer:
            for batch in self.iter_batches(table, manifest.version):
                writer.write_batch(batch)
                rows += batch.num_rows
        out_fs.mv(tmp, out)
        return rows

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

    # ---- migration from the pre-Delta layout -----------------------------------------
    def migrate(self, dry_run: bool = False) -> dict[str, str]:
        """Convert every table still in the pre-Delta layout, in place; table -> what was done.

        Each kept version becomes the Delta version of the same number (versions retention had
        already removed become empty placeholder commits, never listed or readable), so
        recorded versions, pins and configured ``table_versions`` keep their meaning. Data
        files stay where they are. Re-running after a crash finishes or redoes the table.
        """
        out: dict[str, str] = {}
        if not self.fs.exists(self.root):
            return out
        for entry in sorted(self.fs.ls(self.root, detail=False)):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if not self.is_legacy(name):
                continue
            out[name] = "would migrate" if dry_run else self._migrate_table(name)
        return out

    def _migrate_table(self, table: str) -> str:
        from deltalake import DeltaTable
        from deltalake.transaction import AddAction, CommitProperties

        with self.fs.open(legacy_pointer_path(self.root, table), "r") as fh:
            current = parse_version(fh.read())
        log_dir = delta_log_dir(self.root, table)
        if self.fs.exists(log_dir):
            done = self._log_version(table)
            if done is not None and commit_info(None, self.delta_root, table, done).get("recfeat.migrated_from") == str(current):
                self._finish_migration(table)
                return f"finished an interrupted migration (v{current})"
            self.fs.rm(log_dir, recursive=True)  # an interrupted migration: redo it
        mdir = f"{self.table_path(table)}/{LEGACY_MANIFESTS_DIR}"
        kept = {}
        for path in self.fs.ls(mdir, detail=False):
            fname = path.rsplit("/", 1)[-1]
            if fname.endswith(".json") and fname[:-5].isdigit():
                with self.fs.open(path, "r") as fh:
                    kept[int(fname[:-5])] = Manifest.from_json(fh.read())
        if current not in kept:
            raise WarehouseError(f"table {table!r}: the pre-Delta pointer names version {current}, whose manifest is missing")
        last = kept[current]
        col = last.partition_column
        sample = next((f"{self.table_path(table)}/{e.path}/{f}" for e in last.partitions.values() for f in e.files), None)
        schema = (pq.read_schema(sample, filesystem=self.fs) if sample
                  else _empty_from_manifest(last, None).schema)
        uri = delta_uri(self.delta_root, table)
        DeltaTable.create(uri, _nullable(schema), mode="error", partition_by=[col] if col else None,
                          configuration=TABLE_CONFIGURATION, storage_options=self.storage_options)
        state: dict[str, set[str]] = {}
        for v in range(1, current + 1):
            t = DeltaTable(uri, storage_options=self.storage_options)
            m = kept.get(v)
            if m is None:
                t.create_write_transaction([], "append", _nullable(schema), [col] if col else None, commit_properties=CommitProperties(
                    custom_metadata={"recfeat.placeholder": "true", "recfeat.migrated_from": str(v)}, max_commit_retries=0))
                continue
            parts = {k: {f"{e.path}/{f}" for f in e.files} for k, e in m.partitions.items()}
            changed = sorted(k for k in set(parts) | set(state) if parts.get(k) != state.get(k))
            actions = []
            for k in changed:
                for rel in sorted(parts.get(k, ())):
                    info = self.fs.info(f"{self.table_path(table)}/{rel}")
                    rows = pq.ParquetFile(f"{self.table_path(table)}/{rel}", filesystem=self.fs).metadata.num_rows
                    actions.append(AddAction(rel, int(info["size"]), {col: k} if col else {},
                                             int((_mtime(info) or time.time()) * 1000), True, json.dumps({"numRecords": rows})))
            meta = commit_metadata(
                txn=f"migrate-{v}", contract=table, producer=m.producer, written_partitions=list(m.written_partitions),
                row_counts={k: e.row_count for k, e in m.partitions.items() if k in changed}, schema=m.schema,
                checks={}, migrated_from=v,
            )
            meta["recfeat.committed_at"] = m.committed_at
            if col is None:
                mode, filters = "overwrite", None
            elif not changed:
                mode, filters = "append", None
            else:
                mode, filters = "overwrite", [(col, "in", changed)]
            t.create_write_transaction(actions, mode, _nullable(schema), [col] if col else None, filters,
                                       commit_properties=CommitProperties(custom_metadata=meta, max_commit_retries=0))
            state = parts
        self._finish_migration(table)
        return f"migrated versions {sorted(kept)} (latest v{current})"

    def _finish_migration(self, table: str) -> None:
        # Staging areas of pre-Delta writers: their names would match legacy data directories.
        stage_root = f"{self.table_path(table)}/{STAGING_DIR}"
        if self.fs.exists(stage_root):
            self.fs.rm(stage_root, recursive=True)
        self.fs.rm(legacy_pointer_path(self.root, table))
        mdir = f"{self.table_path(table)}/{LEGACY_MANIFESTS_DIR}"
        if self.fs.exists(mdir):
            self.fs.rm(mdir, recursive=True)

    # ---- internals -------------------------------------------------------------------
    def _rename_spark_partitions(self, staged: StagedWrite, contract: TableContract) -> None:
        spark_dir = f"{staged.path}/_spark"
        if not self.fs.exists(spark_dir):
            return
        for entry in self.fs.ls(spark_dir, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("_part="):
                value = name[len("_part="):]
                self.fs.mv(entry, f"{staged.path}/{contract.partition_column}={value}", recursive=True)
        self.fs.rm(spark_dir, recursive=True)

    def _staged_partitions(self, staged: StagedWrite) -> dict[str, list[str]]:
        """Partition value -> staged Parquet files."""
        out: dict[str, list[str]] = {}
        col = staged.contract.partition_column
        if not self.fs.exists(staged.path):
            raise WarehouseError(
                f"table {staged.table!r}: the staging area {staged.path} disappeared before the commit; nothing committed"
            )
        for entry in self.fs.ls(staged.path, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if col is None:
                if name != UNPARTITIONED:
                    continue
                value = UNPARTITIONED
            else:
                if not name.startswith(f"{col}="):
                    continue
                value = name[len(col) + 1:]
            files = [f for f in self.fs.find(entry) if f.endswith(".parquet")]
            out[value] = files
        return out

    def _put_text(self, path: str, text: str) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if self.is_local:
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, text.encode())


@contextmanager
def _missing_files_as_error(manifest: Manifest):
    try:
        yield
    except FileNotFoundError as exc:
        raise WarehouseError(
            f"table {manifest.table!r} v{manifest.version}: a data file is gone ({exc}); "
            "the version is past retention or the table was damaged outside recfeat"
        ) from None


def _relative_files(manifest: Manifest) -> list[str]:
    """A version's data files as recorded in the log (relative to the table directory)."""
    return [f for entry in manifest.partitions.values() for f in entry.files]


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


def _nullable(schema: pa.Schema) -> pa.Schema:
    """The Delta schema of a table: the files' schema with every field nullable."""
    return pa.schema([f.with_nullable(True) for f in schema])


def _schema_fingerprint(schema: pa.Schema) -> str:
    import hashlib

    text = ";".join(f"{f.name}:{f.type}" for f in schema)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _TaskWriter:
    """Per Spark task: one Parquet writer per (table, partition value), files named by task id."""

    def __init__(self, fs, targets: dict[str, tuple[str, TableContract]], task: int):
        self.fs = fs
        self.targets = targets
        self.task = task
        self.writers: dict[tuple[str, str], pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {name: 0 for name in targets}

    def write(self, name: str, table: pa.Table) -> None:
        path, contract = self.targets[name]
        table = contract.conform(table)
        for value, part in _split_partitions(table, contract.partition_column):
            key = (name, value)
            if key not in self.writers:
                sub = f"{path}/{_part_name(contract, value)}"
                self.fs.makedirs(sub, exist_ok=True)
                self.writers[key] = pq.ParquetWriter(f"{sub}/part-{self.task:05d}.parquet", part.schema, filesystem=self.fs)
            self.writers[key].write_table(part)
            self.rows[name] += part.num_rows

    def close(self) -> dict[str, int]:
        for w in self.writers.values():
            w.close()
        self.writers.clear()
        return self.rows


def _mtime(entry: dict) -> float | None:
    value = entry.get("mtime") or entry.get("LastModified") or entry.get("created")
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return float(value) if value is not None else None


def _part_name(contract: TableContract, value: str) -> str:
    return UNPARTITIONED if contract.partition_column is None else f"{contract.partition_column}={value}"


def _split_partitions(chunk: pa.Table, column: str | None) -> Iterator[tuple[str, pa.Table]]:
    if column is None:
        yield UNPARTITIONED, chunk
        return
    if chunk.num_rows == 0:
        return
    import pyarrow.compute as pc

    keys = pc.cast(chunk.column(column), pa.string())
    for value in sorted(v for v in pc.unique(keys).to_pylist() if v is not None):
        yield value, chunk.filter(pc.equal(keys, value))
    if keys.null_count:
        raise WarehouseError(f"table column {column!r} (the partition column) has nulls")


def _empty_from_manifest(manifest: Manifest, columns: list[str] | None) -> pa.Table:
    from features.contracts import get_contract

    try:
        schema = get_contract(manifest.table).schema
    except KeyError:
        schema = pa.schema([])
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns if c in schema.names])
    return schema.empty_table()
