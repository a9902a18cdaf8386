"""The conflict-checked commit: transactions, placing staged files, the Delta transaction."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import TableContract
from features.layout import (
    UNPARTITIONED,
    commit_metadata,
    data_file_name,
    Manifest,
    staging_dir,
    txn_record_path,
)
from features.snapshots import delta_uri
from pipelines.warehouse.errors import CommitConflict, WarehouseError
from pipelines.warehouse.files import _nullable, _schema_fingerprint
from pipelines.warehouse.storage import TABLE_CONFIGURATION, _log, _mtime, StagedWrite


class CommitMixin:
    """The commit of :class:`~pipelines.warehouse.Warehouse`."""

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
