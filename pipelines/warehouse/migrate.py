"""Migration of tables in the legacy manifest format to Delta Lake tables."""
from __future__ import annotations

import json
import time

import pyarrow.parquet as pq

from features.layout import (
    LEGACY_MANIFESTS_DIR,
    STAGING_DIR,
    commit_metadata,
    delta_log_dir,
    legacy_pointer_path,
    Manifest,
    parse_version,
)
from features.snapshots import commit_info, delta_uri
from pipelines.warehouse.errors import WarehouseError
from pipelines.warehouse.files import _empty_from_manifest, _nullable
from pipelines.warehouse.storage import TABLE_CONFIGURATION, _mtime


class MigrateMixin:
    """Migration of :class:`~pipelines.warehouse.Warehouse`."""

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
