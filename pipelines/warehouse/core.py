"""The :class:`Warehouse` class: its addresses and state; behaviour comes from the mixins of this package."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterable

from features.layout import table_dir
from pipelines.warehouse.commit import CommitMixin
from pipelines.warehouse.errors import WarehouseError
from pipelines.warehouse.migrate import MigrateMixin
from pipelines.warehouse.pins import PinsMixin
from pipelines.warehouse.reading import ReadingMixin
from pipelines.warehouse.retention import RetentionMixin
from pipelines.warehouse.storage import filesystem
from pipelines.warehouse.writes import WritesMixin


class Warehouse(PinsMixin, ReadingMixin, CommitMixin, WritesMixin, RetentionMixin, MigrateMixin):
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
