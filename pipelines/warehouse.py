"""The warehouse: one Parquet table per name, versioned, with atomic commits.

Layout and manifest format are defined once in :mod:`features.layout`. This module does the
I/O through fsspec, so the root may be a local path (the default), ``file://``, ``s3://``,
``gs://``, ``hdfs://`` or any other fsspec filesystem that Spark can also reach.

Commit protocol (:meth:`Warehouse.commit`): data is written under ``_staging/<txn>``, moved into
fresh, never-referenced data directories, a new manifest is written, and finally the
``_current`` pointer is replaced (``os.replace`` locally; a single-object put on object
stores). A writer that dies at any step before the pointer leaves the last committed version
readable and complete; its leftovers are swept by a later commit. One writer per table at a
time is assumed (the orchestrator runs one job per asset at a time); a second writer that
races is detected when its manifest version already exists and fails without committing.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import TableContract
from features.layout import (
    DATA_DIR,
    MANIFESTS_DIR,
    STAGING_DIR,
    UNPARTITIONED,
    Manifest,
    PartitionEntry,
    data_dir,
    manifest_path,
    parse_version,
    pin_path,
    pin_record,
    pins_dir,
    read_pin,
    pointer_path,
    staging_dir,
    table_dir,
)

STALE_STAGING_SECONDS = 3600
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
    """An open transaction: where to write, and which partitions the write covers."""

    table: str
    txn: str
    path: str
    contract: TableContract
    replace_partitions: list[str] | None


class Warehouse:
    """Versioned Parquet tables under ``root`` with atomic commits."""

    def __init__(self, root: str, keep_versions: int = 5, pinned: dict[str, Iterable[int]] | None = None):
        """``pinned``: table -> versions that retention must keep besides the newest
        ``keep_versions`` (the project configuration's pinned table versions); runs pin theirs
        with pin files (:meth:`pin`)."""
        self.pinned = {t: {int(v) for v in vs} for t, vs in (pinned or {}).items()}
        #: table -> versions the last commit's retention removed (also logged).
        self.last_removed: dict[str, list[int]] = {}
        self.uri = root
        self.fs, path = filesystem(root)
        self.root = path.rstrip("/") if path != "/" else path
        self.is_local = self.fs.protocol in ("file", "local") or "file" in tuple(self.fs.protocol)
        if self.is_local:
            self.root = os.path.abspath(self.root)
        self.keep_versions = keep_versions

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
        if version not in self.versions(table):
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
    def tables(self) -> list[str]:
        """Names of the tables that have a committed version."""
        if not self.fs.exists(self.root):
            return []
        names = []
        for entry in self.fs.ls(self.root, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if self.fs.exists(pointer_path(self.root, name)):
                names.append(name)
        return sorted(names)

    def exists(self, table: str) -> bool:
        return self.fs.exists(pointer_path(self.root, table))

    def current_version(self, table: str) -> int | None:
        path = pointer_path(self.root, table)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r") as fh:
            return parse_version(fh.read())

    def versions(self, table: str) -> list[int]:
        """Versions whose manifests are still kept (time travel is possible to these)."""
        mdir = f"{self.table_path(table)}/{MANIFESTS_DIR}"
        if not self.fs.exists(mdir):
            return []
        out = []
        for entry in self.fs.ls(mdir, detail=False):
            name = entry.rsplit("/", 1)[-1]
            if name.endswith(".json"):
                out.append(parse_version(name[:-5]))
        return sorted(out)

    def manifest(self, table: str, version: int | None = None) -> Manifest:
        """The manifest of ``version`` (default: the committed one)."""
        if version is None:
            version = self.current_version(table)
            if version is None:
                known = ", ".join(self.tables()) or "none"
                raise WarehouseError(f"table {table!r} has no committed version in {self.uri} (tables: {known})")
        path = manifest_path(self.root, table, version)
        if not self.fs.exists(path):
            raise WarehouseError(f"table {table!r} has no version {version} (kept: {self.versions(table)})")
        with self.fs.open(path, "r") as fh:
            return Manifest.from_json(fh.read())

    def files(self, table: str, version: int | None = None, partitions: list[str] | None = None) -> list[str]:
        return self.manifest(table, version).file_paths(self.root, partitions)

    def arrow_schema(self, manifest: Manifest) -> pa.Schema | None:
        files = manifest.file_paths(self.root)
        if not files:
            return None
        return pq.read_schema(files[0], filesystem=self.fs)

    def read_arrow(
        self,
        table: str,
        version: int | None = None,
        columns: list[str] | None = None,
        partitions: list[str] | None = None,
    ) -> pa.Table:
        """The whole committed table (or some partitions) as one Arrow table."""
        manifest = self.manifest(table, version)
        files = manifest.file_paths(self.root, partitions)
        if not files:
            return _empty_from_manifest(manifest, columns)
        tables = [pq.read_table(f, columns=columns, filesystem=self.fs) for f in files]
        return pa.concat_tables(tables, promote_options="default")

    def iter_batches(self, table: str, version: int | None = None, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream the committed table in record batches (bounded memory)."""
        for f in self.files(table, version):
            pf = pq.ParquetFile(f, filesystem=self.fs)
            yield from pf.iter_batches(batch_size=batch_rows)

    def read_spark(self, spark, table: str, version: int | None = None, partitions: list[str] | None = None):
        """The committed table as a Spark DataFrame, with the schema it was written with."""
        from pyspark.sql.pandas.types import from_arrow_schema

        manifest = self.manifest(table, version)
        files = manifest.file_paths(self.root, partitions)
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
    ) -> Iterator[StagedWrite]:
        """Open a staged write; commit when the block ends without error.

        Write Parquet files under ``staged.path`` (for partitioned tables, one sub-directory
        ``<partition_column>=<value>`` per partition). ``replace_partitions``: for a
        partitioned table, the partitions this write covers; the others are carried over from
        the committed version, and a covered partition with no staged rows is removed. ``None``
        replaces the whole table. On error the staging area is removed and nothing changes.
        """
        txn = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        path = staging_dir(self.root, contract.name, txn)
        self.fs.makedirs(path, exist_ok=True)
        staged = StagedWrite(contract.name, txn, path, contract, replace_partitions)
        try:
            yield staged
            self.commit(staged, producer)
        finally:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    def commit(self, staged: StagedWrite, producer: dict[str, str] | None = None) -> Manifest:
        """Make the staged files the table's next version (see the module docstring)."""
        contract = staged.contract
        current = self.current_version(contract.name)
        previous = self.manifest(contract.name, current) if current is not None else None
        version = (current or 0) + 1
        if self.fs.exists(manifest_path(self.root, contract.name, version)):
            raise WarehouseError(
                f"table {contract.name!r}: version {version} exists but is not current; another writer is committing"
            )
        staged_parts = self._staged_partitions(staged)
        if staged.replace_partitions is not None and contract.partition_column is None:
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

        partitions: dict[str, PartitionEntry] = {}
        if previous is not None and staged.replace_partitions is not None:
            keep = set(previous.partitions) - set(staged.replace_partitions)
            partitions.update({k: previous.partitions[k] for k in keep})
        base = self.table_path(contract.name)
        for value, files in sorted(staged_parts.items()):
            target = data_dir(self.root, contract.name, contract.partition_column,
                              None if value == UNPARTITIONED else value, version, staged.txn)
            self.fs.makedirs(target, exist_ok=True)
            names, rows = [], 0
            for i, f in enumerate(sorted(files)):
                name = f"part-{i:05d}.parquet"
                self.fs.mv(f, f"{target}/{name}")
                rows += pq.ParquetFile(f"{target}/{name}", filesystem=self.fs).metadata.num_rows
                names.append(name)
            if rows == 0 and contract.partition_column is not None:
                continue
            partitions[value] = PartitionEntry(path=target[len(base) + 1:], row_count=rows, files=tuple(names))

        if schema is None and previous is not None:
            schema_list = previous.schema
        else:
            schema_list = tuple((f.name, str(f.type)) for f in (schema or contract.schema))
        manifest = Manifest(
            table=contract.name,
            version=version,
            committed_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            partition_column=contract.partition_column,
            schema=schema_list,
            partitions=partitions,
            written_partitions=tuple(sorted(staged_parts)),
            producer=dict(producer or {}),
        )
        self._put_text(manifest_path(self.root, contract.name, version), manifest.to_json())
        self._put_text(pointer_path(self.root, contract.name), f"{version:06d}\n")
        self._sweep(contract.name, keep_txn=staged.txn)
        return manifest

    def write_arrow(
        self,
        contract: TableContract,
        data: pa.Table | Iterable[pa.Table],
        replace_partitions: list[str] | None = None,
        producer: dict[str, str] | None = None,
        base_version: int | None = None,
    ) -> Manifest:
        """Write Arrow data (one table or a stream of chunks) as the next version.

        Chunks are conformed to the contract and appended to one file per partition, so
        memory stays bounded by the chunk size.
        """
        chunks = [data] if isinstance(data, pa.Table) else data
        with self.transaction(contract, replace_partitions, producer, base_version) as staged:
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
        return self.manifest(contract.name)

    def write_spark(
        self,
        df,
        contract: TableContract,
        replace_partitions: list[str] | None = None,
        producer: dict[str, str] | None = None,
        base_version: int | None = None,
    ) -> Manifest:
        """Write a Spark DataFrame as the next version (partitioned by the contract's column)."""
        from pyspark.sql import functions as F

        missing = [c for c in contract.columns if c not in df.columns]
        if missing:
            raise WarehouseError(f"table {contract.name!r}: the DataFrame lacks columns {missing}")
        ordered = contract.columns + ([c for c in df.columns if c not in contract.columns] if contract.open_columns else [])
        df = df.select(*ordered)
        with self.transaction(contract, replace_partitions, producer, base_version) as staged:
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
        return self.manifest(contract.name)

    def write_from_spark_arrow(
        self,
        df,
        kernel,
        contracts: list[TableContract],
        replace_partitions: list[str] | None = None,
        producer: dict[str, str] | None = None,
        base_version: int | None = None,
    ) -> dict[str, Manifest]:
        """Write one or more tables straight from Arrow in the Spark tasks, then commit each.

        ``kernel(batches)`` runs in every task of ``df.mapInArrow`` and yields ``(table_name,
        pa.Table)`` pairs; each is conformed to its contract and appended, per partition value,
        to a Parquet file in the table's staging area, named by the Spark partition id (a retried
        task overwrites its own files, never duplicates them). Nested columns never pass through
        Spark rows, which is what makes wide list columns cheap to write. When every task is done
        the tables commit one after the other; each commit is atomic on its own.
        """
        from contextlib import ExitStack

        by_name = {c.name: c for c in contracts}
        with ExitStack() as stack:
            staged = {c.name: stack.enter_context(self.transaction(c, replace_partitions, producer)) for c in contracts}
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
        return {c.name: self.manifest(c.name) for c in contracts}

    def export(self, table: str, out_path: str, version: int | None = None) -> int:
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
            return out
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

    def _sweep(self, table: str, keep_txn: str) -> None:
        """Drop manifests beyond ``keep_versions`` (except pinned ones), unreferenced data and
        stale staging areas; record and log the versions removed (``last_removed``)."""
        versions = self.versions(table)
        _, unreadable = self._pin_files(table)
        if unreadable:  # a pin we cannot read might hold any version: remove none this time
            _log.warning("table %s: unreadable pin files %s; retention removes nothing", table, unreadable)
            keep = versions
        else:
            self.release_stale_pins(table)
            keep = sorted(set(versions[-self.keep_versions:]) | (set(self.pins(table)) & set(versions)))
        removed = [v for v in versions if v not in keep]
        for v in removed:
            self.fs.rm(manifest_path(self.root, table, v))
        self.last_removed[table] = removed
        if removed:
            _log.info("table %s: retention removed versions %s (kept %s)", table, removed, keep)
        referenced = set()
        for v in keep:
            for entry in self.manifest(table, v).partitions.values():
                referenced.add(entry.path)
        base = self.table_path(table)
        data_root = f"{base}/{DATA_DIR}"
        if self.fs.exists(data_root):
            for part in self.fs.ls(data_root, detail=False):
                for commit_dir in self.fs.ls(part, detail=False):
                    rel = commit_dir.rstrip("/")[len(base) + 1:]
                    if rel not in referenced and keep_txn not in rel:
                        self.fs.rm(commit_dir, recursive=True)
                if not self.fs.ls(part, detail=False):
                    self.fs.rm(part, recursive=True)
        stage_root = f"{base}/{STAGING_DIR}"
        if self.fs.exists(stage_root):
            now = time.time()
            for entry in self.fs.ls(stage_root, detail=True):
                if keep_txn in entry["name"]:
                    continue
                mtime = _mtime(entry)
                if mtime is not None and now - mtime > STALE_STAGING_SECONDS:
                    self.fs.rm(entry["name"], recursive=True)


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
