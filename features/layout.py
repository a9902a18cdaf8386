"""The warehouse layout: where a table's versions, manifests and data files live.

Pure path and manifest rules, shared by the writer (``pipelines.warehouse``) and by read-only
consumers such as trainers, so there is one definition of the layout. No I/O here.

Layout under the warehouse root (a local path or an fsspec URI)::

    <root>/<table>/_current                       text: the committed version number, e.g. "000007"
    <root>/<table>/_manifests/000007.json         the manifest of version 7 (see Manifest)
    <root>/<table>/data/<part>/<commit>/*.parquet immutable data directories
    <root>/<table>/_staging/<txn>/                in-progress writes (never read)
    <root>/<table>/_pins/<name>.json              a version that retention must keep (see below)

``<part>`` is ``<partition_column>=<value>`` for partitioned tables and ``all`` otherwise;
``<commit>`` is ``v<version>-<txn>``. A version is committed when ``_current`` names it; the
pointer is replaced atomically and written last, so readers see either the old version or the
new one, never a partial write. Data directories are never modified after a commit.

Pins: retention keeps the newest ``keep_versions`` versions of a table plus every pinned one. A
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

CURRENT_POINTER = "_current"
MANIFESTS_DIR = "_manifests"
DATA_DIR = "data"
STAGING_DIR = "_staging"
PINS_DIR = "_pins"
UNPARTITIONED = "all"
VERSION_DIGITS = 6


def table_dir(root: str, table: str) -> str:
    return f"{root.rstrip('/')}/{table}"


def pointer_path(root: str, table: str) -> str:
    return f"{table_dir(root, table)}/{CURRENT_POINTER}"


def manifest_path(root: str, table: str, version: int) -> str:
    return f"{table_dir(root, table)}/{MANIFESTS_DIR}/{format_version(version)}.json"


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


def partition_dir_name(partition_column: str | None, value: str | None) -> str:
    return UNPARTITIONED if partition_column is None else f"{partition_column}={value}"


def data_dir(root: str, table: str, partition_column: str | None, value: str | None, version: int, txn: str) -> str:
    return (
        f"{table_dir(root, table)}/{DATA_DIR}/{partition_dir_name(partition_column, value)}/"
        f"v{format_version(version)}-{txn}"
    )


def format_version(version: int) -> str:
    return str(version).zfill(VERSION_DIGITS)


def parse_version(text: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise ValueError(f"not a table version: {text!r}")
    return int(text)


@dataclass(frozen=True)
class PartitionEntry:
    """One partition of a committed version: its data directory (relative to the table dir)."""

    path: str
    row_count: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    """What one committed version of a table holds.

    ``partitions`` maps a partition value (``"all"`` for unpartitioned tables; an ISO date for
    daily tables) to its entry. ``schema`` is a list of ``[name, arrow type string]``.
    ``written_partitions`` lists the partitions this commit wrote (the rest were carried over).
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
        return [f"{base}/{self.partitions[k].path}/{f}" for k in keys for f in self.partitions[k].files]
