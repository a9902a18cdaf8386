"""The warehouse layout: where a table's Delta log, data files, staging areas and pins live.

Pure path and record rules, shared by the writer (``pipelines.warehouse``) and by read-only
consumers such as trainers (through :mod:`features.snapshots`), so there is one definition of
the layout. No I/O here.

Every table is a Delta Lake table (https://delta.io), one directory per table under the
warehouse root (a local path or an object-store URI)::

    <root>/<table>/_delta_log/00000000000000000007.json  the Delta transaction log (version 7)
    <root>/<table>/<col>=<value>/part-00000-<txn>.parquet data files of a partitioned table
    <root>/<table>/part-00000-<txn>.parquet               data files of an unpartitioned table
    <root>/<table>/_staging/<txn>/                        in-progress writes (never read)
    <root>/<table>/_pins/<name>.json                      a version that retention must keep

Version 0 of every table is its creation (schema only); recfeat's first commit is version 1.
A version is committed when its log entry exists: the Delta log's put-if-absent is the commit
point, so readers see the old version or the new one, never a partial write. Data files are
never modified after a commit; files a commit replaces stay on disk (time travel) until
retention removes them. Each commit's ``commitInfo`` carries recfeat's own record under the
keys in :data:`COMMIT_KEYS` (see :func:`commit_metadata`). Data files keep the partition
column inside the file as well (Delta readers take it from the log; plain Parquet readers from
the file).

Tables written before the Delta layout (``_current`` pointer, ``_manifests/``, ``data/``) are
converted in place by ``recfeat migrate`` (the data files stay where they are and are
referenced from the new log); :data:`LEGACY_POINTER` marks such a table.

Pins: retention keeps every version younger than the retention period plus every pinned one. A
pin file holds :func:`pin_record`: the version, and optionally the run directory it serves (with
the host that wrote it) and an expiry time. A training run pins what it read as soon as it has
read it (``<model>--training-<id>``, expiring after :data:`TRAINING_PIN_S`), and once its
directory is complete pins it for as long as that directory exists (``<model>--<run id>``). A
pin is released (``pipelines.warehouse.pin_is_stale``) when it has expired, or when its run directory is gone:
checked through fsspec for a URI, and only on the host that wrote it for a local path (another
machine may not see that path). Versions named in the project configuration
(``training.models.<model>.table_versions``) are pinned without a file.
"""
from __future__ import annotations

import datetime as dt
import json
import socket
from dataclasses import asdict, dataclass, field

DELTA_LOG_DIR = "_delta_log"
STAGING_DIR = "_staging"
PINS_DIR = "_pins"
UNPARTITIONED = "all"
VERSION_DIGITS = 6
#: The staging-area record of an open transaction (host, pid, start time), for crash cleanup.
TXN_RECORD = "_txn.json"
#: The pre-Delta layout, read only by the migration.
LEGACY_POINTER = "_current"
LEGACY_MANIFESTS_DIR = "_manifests"
LEGACY_DATA_DIR = "data"
#: Keys of recfeat's record in a Delta commit's ``commitInfo`` (:func:`commit_metadata`).
COMMIT_KEYS = (
    "recfeat.txn", "recfeat.contract", "recfeat.producer", "recfeat.written_partitions",
    "recfeat.row_counts", "recfeat.schema", "recfeat.checks", "recfeat.migrated_from",
)


def table_dir(root: str, table: str) -> str:
    return f"{root.rstrip('/')}/{table}"


def delta_log_dir(root: str, table: str) -> str:
    """The table's Delta transaction log; the table exists once this holds a version >= 1."""
    return f"{table_dir(root, table)}/{DELTA_LOG_DIR}"


def log_entry_path(root: str, table: str, version: int) -> str:
    """The Delta log entry (JSON lines) of ``version``."""
    return f"{delta_log_dir(root, table)}/{version:020d}.json"


def legacy_pointer_path(root: str, table: str) -> str:
    return f"{table_dir(root, table)}/{LEGACY_POINTER}"


def legacy_manifest_path(root: str, table: str, version: int) -> str:
    return f"{table_dir(root, table)}/{LEGACY_MANIFESTS_DIR}/{format_version(version)}.json"


def pins_dir(root: str, table: str) -> str:
    return f"{table_dir(root, table)}/{PINS_DIR}"


def pin_path(root: str, table: str, name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"not a pin name: {name!r}")
    return f"{pins_dir(root, table)}/{name}.json"


#: How long a pin taken while a model trains holds at most (a killed run cannot remove it).
TRAINING_PIN_S = 7 * 24 * 3600


def pin_record(version: int, run_dir: str | None = None, expires_in_s: float | None = None) -> str:
    """The JSON text of a pin file (see the module docstring); ``run_dir`` records this host."""
    record: dict = {"version": int(version)}
    if run_dir is not None:
        record.update(run_dir=str(run_dir), host=socket.gethostname())
    if expires_in_s is not None:
        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=expires_in_s)
        record["expires_at"] = expires.isoformat(timespec="seconds")
    return json.dumps(record, sort_keys=True)


def read_pin(text: str) -> dict:
    """A pin file's record; ``ValueError`` if it is not one."""
    record = json.loads(text)
    if not isinstance(record, dict) or not isinstance(record.get("version"), int):
        raise ValueError(f"not a pin record: {text[:80]!r}")
    return record


def staging_dir(root: str, table: str, txn: str) -> str:
    return f"{table_dir(root, table)}/{STAGING_DIR}/{txn}"


def txn_record_path(root: str, table: str, txn: str) -> str:
    return f"{staging_dir(root, table, txn)}/{TXN_RECORD}"


def partition_dir_name(partition_column: str | None, value: str | None) -> str:
    return UNPARTITIONED if partition_column is None else f"{partition_column}={value}"


def data_file_name(partition_column: str | None, value: str | None, index: int, txn: str) -> str:
    """A committed data file's path relative to the table directory (Delta's Hive-style layout)."""
    name = f"part-{index:05d}-{txn}.parquet"
    return name if partition_column is None else f"{partition_column}={value}/{name}"


def commit_metadata(
    txn: str,
    contract: str,
    producer: dict[str, str],
    written_partitions: list[str],
    row_counts: dict[str, int],
    schema: tuple[tuple[str, str], ...],
    checks: dict[str, str],
    migrated_from: int | None = None,
) -> dict[str, str]:
    """recfeat's record in a commit's ``commitInfo`` (every value a string; JSON where nested).

    ``contract``: the table contract's name and schema fingerprint; ``row_counts``: rows per
    written partition; ``schema``: the Arrow schema of the files as ``[[name, type], ...]``;
    ``checks``: the checks the commit itself ran (the schema against the contract).
    """
    record = {
        "recfeat.txn": txn,
        "recfeat.contract": contract,
        "recfeat.producer": json.dumps(producer, sort_keys=True),
        "recfeat.written_partitions": json.dumps(sorted(written_partitions)),
        "recfeat.row_counts": json.dumps(row_counts, sort_keys=True),
        "recfeat.schema": json.dumps([list(f) for f in schema]),
        "recfeat.checks": json.dumps(checks, sort_keys=True),
    }
    if migrated_from is not None:
        record["recfeat.migrated_from"] = str(migrated_from)
    return record


def format_version(version: int) -> str:
    return str(version).zfill(VERSION_DIGITS)


def parse_version(text: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise ValueError(f"not a table version: {text!r}")
    return int(text)


@dataclass(frozen=True)
class PartitionEntry:
    """One partition of a committed version: its directory name and its data files, both
    relative to the table directory (``files`` may also hold absolute URIs a foreign writer added)."""

    path: str
    row_count: int
    files: tuple[str, ...]

    @property
    def content_id(self) -> str:
        """Names this partition's exact data: committed files are never modified, so the same
        file list means the same rows (a rewrite always brings new file names)."""
        import hashlib

        return hashlib.sha256("\n".join(sorted(self.files)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """What one committed version of a table holds.

    ``partitions`` maps a partition value (``"all"`` for unpartitioned tables; an ISO date for
    daily tables) to its entry. ``schema`` is a list of ``[name, arrow type string]``.
    ``written_partitions`` lists the partitions this commit wrote (the rest were carried over).
    ``committed_at`` is the commit's time, ISO 8601 in UTC, to the second.
    """

    table: str
    version: int
    committed_at: str
    partition_column: str | None
    schema: tuple[tuple[str, str], ...]
    partitions: dict[str, PartitionEntry]
    written_partitions: tuple[str, ...] = ()
    producer: dict[str, str] = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        return sum(p.row_count for p in self.partitions.values())

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data = json.loads(text)
        parts = {
            k: PartitionEntry(path=v["path"], row_count=int(v["row_count"]), files=tuple(v["files"]))
            for k, v in data["partitions"].items()
        }
        return cls(
            table=data["table"],
            version=int(data["version"]),
            committed_at=data["committed_at"],
            partition_column=data["partition_column"],
            schema=tuple((n, t) for n, t in data["schema"]),
            partitions=parts,
            written_partitions=tuple(data.get("written_partitions", ())),
            producer=dict(data.get("producer", {})),
        )

    def file_paths(self, root: str, partitions: list[str] | None = None) -> list[str]:
        """Absolute paths (or URIs) of the data files, optionally of some partitions only."""
        base = table_dir(root, self.table)
        keys = sorted(self.partitions) if partitions is None else [p for p in sorted(partitions) if p in self.partitions]
        return [f if ("://" in f or f.startswith("/")) else f"{base}/{f}" for k in keys for f in self.partitions[k].files]
