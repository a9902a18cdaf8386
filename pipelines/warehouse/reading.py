"""Reading a warehouse: tables, versions, history, manifests, time travel, Arrow and Spark reads, export."""
from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from features.layout import Manifest, delta_log_dir, legacy_pointer_path, log_entry_path
from features.snapshots import SnapshotError, VersionRef, commit_info, manifest_of, open_table
from pipelines.warehouse.errors import WarehouseError
from pipelines.warehouse.files import _empty_from_manifest, _missing_files_as_error
from pipelines.warehouse.storage import filesystem


class ReadingMixin:
    """Reads of :class:`~pipelines.warehouse.Warehouse`."""

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
