"""One committed version of a warehouse table, read from its Delta log into a :class:`Manifest`.

Read-only and Spark-free, so both the writer (``pipelines.warehouse``) and trainers use it; the
layout rules are in :mod:`features.layout`. The Delta log is read through the ``deltalake``
package (delta-rs), which reaches local paths and object stores (``s3://``, ``gs://``,
``az://``) on its own; ``storage_options`` are passed through to it.

A version is one of: ``None`` (the latest), an ``int`` (time travel by version) or an aware
``datetime`` (the last version committed at or before it; time travel by time).
"""
from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from urllib.parse import unquote

import pyarrow as pa

from features.layout import UNPARTITIONED, Manifest, PartitionEntry, delta_log_dir, legacy_pointer_path, table_dir

VersionRef = int | dt.datetime | None


class SnapshotError(LookupError):
    """A table, or the version asked for, is not there; the message is one line."""


def delta_uri(root: str, table: str) -> str:
    """What ``deltalake`` opens for ``table`` under ``root`` (an absolute local path or a URI)."""
    path = table_dir(root, table)
    if "://" in path and not path.startswith("file://"):
        return path
    return os.path.abspath(path[len("file://"):] if path.startswith("file://") else path)


def open_table(root: str, table: str, version: VersionRef = None, storage_options: dict | None = None):
    """The ``deltalake.DeltaTable`` of ``table`` at ``version``; :class:`SnapshotError` if absent."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = delta_uri(root, table)
    if isinstance(version, int) and version >= 1:
        try:  # straight to the version (loading the latest first would replay the log twice)
            table_obj = DeltaTable(uri, version=version, storage_options=storage_options)
        except TableNotFoundError:
            table_obj = None
        except Exception:  # noqa: BLE001 - no such version: the general path words the error
            table_obj = None
        if table_obj is not None:
            if _is_legacy(root, table):
                raise SnapshotError(
                    f"table {table!r} under {root} is in the pre-Delta layout: run `recfeat migrate` once"
                )
            return table_obj
    try:
        table_obj = DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        if _is_legacy(root, table):
            raise SnapshotError(
                f"table {table!r} under {root} is in the pre-Delta layout: run `recfeat migrate` once"
            ) from None
        raise SnapshotError(f"table {table!r} has no committed version under {root}") from None
    if _is_legacy(root, table):  # a migration has not finished: the log is not the whole history
        raise SnapshotError(
            f"table {table!r} under {root} is in the pre-Delta layout: run `recfeat migrate` once"
        )
    if table_obj.version() < 1 and version is None:
        raise SnapshotError(f"table {table!r} has no committed version under {root}")
    if version is not None:
        latest = table_obj.version()
        try:
            table_obj.load_as_version(version)
        except Exception as exc:  # noqa: BLE001 - delta-rs raises several kinds; one line out
            what = f"version {version}" if isinstance(version, int) else f"a version at {version.isoformat()}"
            raise SnapshotError(
                f"table {table!r} has no {what} (latest: {latest}; {str(exc).splitlines()[0][:160]})"
            ) from None
        if table_obj.version() < 1:
            raise SnapshotError(f"table {table!r} had no committed version at {version}")
    return table_obj


def _is_legacy(root: str, table: str) -> bool:
    pointer = legacy_pointer_path(root, table)
    if "://" not in pointer or pointer.startswith("file://"):
        return os.path.exists(pointer[len("file://"):] if pointer.startswith("file://") else pointer)
    try:
        import fsspec

        fs, p = fsspec.core.url_to_fs(pointer)
        return fs.exists(p)
    except Exception:  # noqa: BLE001 - only for a better message
        return False


def commit_info(table_obj, root: str, table: str, version: int) -> dict:
    """The ``commitInfo`` of ``version`` (read from its log entry; ``{}`` if that is gone)."""
    path = f"{delta_log_dir(root, table)}/{version:020d}.json"
    try:
        if "://" in path and not path.startswith("file://"):
            import fsspec

            fs, p = fsspec.core.url_to_fs(path)
            with fs.open(p, "r") as fh:
                lines = fh.read().splitlines()
        else:
            with open(path[len("file://"):] if path.startswith("file://") else path) as fh:
                lines = fh.read().splitlines()
    except (OSError, ImportError, ValueError):
        if table_obj is None:
            return {}
        for entry in table_obj.history():
            if int(entry.get("version", -1)) == version:
                return dict(entry)
        return {}
    for line in lines:
        if line.startswith('{"commitInfo"'):
            return json.loads(line)["commitInfo"]
    return {}


def manifest_of(table_obj, root: str, table: str) -> Manifest:
    """The :class:`Manifest` of the version ``table_obj`` is loaded at."""
    version = table_obj.version()
    info = commit_info(table_obj, root, table, version)
    partition_columns = list(table_obj.metadata().partition_columns)
    partition_column = partition_columns[0] if partition_columns else None
    actions = pa.table(table_obj.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist() if actions.num_rows else []
    counts = actions.column("num_records").to_pylist() if "num_records" in actions.column_names else [None] * len(paths)
    if partition_column is not None and actions.num_rows:
        values = [_partition_text(v) for v in actions.column(f"partition.{partition_column}").to_pylist()]
    else:
        values = [UNPARTITIONED] * len(paths)
    files: dict[str, list[str]] = defaultdict(list)
    rows: dict[str, int] = defaultdict(int)
    for path, value, count in zip(paths, values, counts):
        files[value].append(unquote(path))
        rows[value] += int(count) if count is not None else _count_rows(root, table, unquote(path))
    partitions = {
        value: PartitionEntry(
            path=UNPARTITIONED if partition_column is None else f"{partition_column}={value}",
            row_count=rows[value],
            files=tuple(sorted(files[value])),
        )
        for value in sorted(files)
    }
    if partition_column is None and not partitions:
        partitions = {}
    recorded = info.get("recfeat.schema")
    if recorded:
        schema = tuple((n, t) for n, t in json.loads(recorded))
    else:
        arrow = pa.schema(table_obj.schema().to_arrow())
        schema = tuple((f.name, str(f.type)) for f in arrow)
    timestamp = info.get("timestamp")
    committed_at = info.get("recfeat.committed_at") or (  # a migrated version keeps its original time
        dt.datetime.fromtimestamp(int(timestamp) / 1000, dt.timezone.utc).isoformat(timespec="seconds")
        if timestamp is not None else ""
    )
    return Manifest(
        table=table,
        version=version,
        committed_at=committed_at,
        partition_column=partition_column,
        schema=schema,
        partitions=partitions,
        written_partitions=tuple(json.loads(info.get("recfeat.written_partitions", "[]"))),
        producer=dict(json.loads(info.get("recfeat.producer", "{}"))),
    )


def read_manifest(root: str, table: str, version: VersionRef = None, storage_options: dict | None = None) -> Manifest:
    """The manifest of ``table`` at ``version`` (see the module docstring)."""
    return manifest_of(open_table(root, table, version, storage_options), root, table)


def _partition_text(value) -> str:
    """A partition value as the writer named it (``str`` of the value cast to a string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _count_rows(root: str, table: str, path: str) -> int:
    """Rows of a data file whose add action has no statistics (a foreign writer's)."""
    import fsspec
    import pyarrow.parquet as pq

    full = path if ("://" in path or path.startswith("/")) else f"{table_dir(root, table)}/{path}"
    fs, p = fsspec.core.url_to_fs(full)
    return pq.ParquetFile(p, filesystem=fs).metadata.num_rows
