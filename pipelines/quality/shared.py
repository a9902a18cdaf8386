"""The one read of a checked table, shared by the contract check, GX and the invariant counter.

A check step reads its table once: :class:`SharedRead` holds that read (an Arrow table, or a
persisted Spark DataFrame) of the version and partitions the check validates, made on first
demand and in the kind first asked for (a Spark read is one DataFrame, not persisted). :class:`SharedReadWarehouse` is the warehouse the
invariant counter gets: it answers the counter's reads of the checked table at that version
(``read_arrow``, ``read_spark``, ``iter_batches``; a column subset is a projection of the same
read) from the shared read, and passes every other call to the real warehouse. A read of
another table, of another version or of some partitions only is not the checked read and goes
to the warehouse. ``reads`` counts the reads of the checked table (1 after a check).

Threads: the counter may run in a thread of its own beside GX (:func:`pipelines.quality.check.check_table`).
The read is made under a lock, so two threads asking at once get the one read, and
:meth:`SharedRead.wait_for_kind` lets the check wait until the counter has chosen the read's kind
(or ended without a read of the table).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from features.layout import Manifest
    from pipelines.warehouse import Warehouse


class SharedRead:
    """The checked table at ``manifest.version``, ``partitions`` (``None``: the whole table).

    ``arrow()`` / ``spark(session)`` return the one read; when the other kind was read first it
    is converted (Spark to Arrow with ``toArrow`` cast to the stored schema, Arrow to Spark with
    ``createDataFrame``), never read again. The Spark read is one DataFrame (one file listing
    and schema) that every consumer builds on; Spark scans its files per action.
    """

    def __init__(self, warehouse: "Warehouse", manifest: "Manifest", partitions: list[str] | None):
        self.warehouse = warehouse
        self.manifest = manifest
        self.table = manifest.table
        self.partitions = partitions
        self.reads = 0
        self._arrow: "pa.Table | None" = None
        self._spark = None
        self._lock = threading.RLock()
        self._asked = threading.Event()  # set when a kind was first asked for (or settled)
        self._kind: str | None = None  # the kind first asked for

    def wait_for_kind(self) -> str | None:
        """Wait until a read kind was asked for, or :meth:`settle` was called (the counter ended
        without reading the table); return the kind first asked for (``None``: none)."""
        self._asked.wait()
        return self._kind

    def settle(self) -> None:
        """No kind will be asked for by the one :meth:`wait_for_kind` waits on (it ended)."""
        self._asked.set()

    def _ask(self, kind: str) -> None:
        if self._kind is None:
            self._kind = kind
            self._asked.set()

    @property
    def kind(self) -> str | None:
        """``"spark"`` or ``"arrow"``: what was read (``None`` before the read)."""
        with self._lock:
            return "spark" if self._spark is not None else "arrow" if self._arrow is not None else None

    def arrow(self) -> "pa.Table":
        with self._lock:
            self._ask("arrow")
            if self._arrow is None:
                if self._spark is not None:
                    self._arrow = _spark_to_arrow(self._spark, self._schema())
                else:
                    self.reads += 1
                    self._arrow = self.warehouse.read_arrow(self.table, version=self.manifest.version, partitions=self.partitions)
            return self._arrow

    def spark(self, session):
        with self._lock:
            self._ask("spark")
            return self._spark_read(session)

    def _spark_read(self, session):
        if self._spark is None:
            if self._arrow is not None:
                from pyspark.sql.pandas.types import from_arrow_schema

                df = session.createDataFrame(self._arrow, schema=from_arrow_schema(self._arrow.schema))
            else:
                self.reads += 1
                df = self.warehouse.read_spark(session, self.table, version=self.manifest.version, partitions=self.partitions)
            # Not persisted: building Spark's cache of a table this size costs more than the
            # scans of the step's few actions (measured; the check's Spark validation frame is
            # persisted by the check itself).
            self._spark = df
        return self._spark

    def _schema(self):
        schema = self.warehouse.arrow_schema(self.manifest)
        if schema is None:
            from pipelines.warehouse.files import _empty_from_manifest

            schema = _empty_from_manifest(self.manifest, None).schema
        return schema


def _spark_to_arrow(df, schema) -> "pa.Table":
    """``df`` as Arrow with the stored column types (Spark gives session-zone timestamps)."""
    table = df.toArrow()
    return table.cast(schema) if table.schema.names == schema.names else table


class SharedReadWarehouse:
    """The warehouse an invariant counter gets: the checked table's reads come from ``shared``.

    Only the read the check made is served: table ``shared.table`` at its version (``version``
    ``None`` or that number) and the same partitions (``None`` stands for the whole table when
    the check read the whole table). Everything else is the real warehouse's.
    """

    def __init__(self, warehouse: "Warehouse", shared: SharedRead, whole: bool):
        self._warehouse = warehouse
        self._shared = shared
        self._whole = whole

    def __getattr__(self, name: str) -> Any:
        return getattr(self._warehouse, name)

    def _covers(self, table: str, version, partitions) -> bool:
        if table != self._shared.table or not (version is None or (isinstance(version, int) and version == self._shared.manifest.version)):
            return False
        if partitions is None:
            return self._whole
        return self._shared.partitions is not None and sorted(partitions) == sorted(self._shared.partitions)

    def read_arrow(self, table: str, version=None, columns: list[str] | None = None, partitions: list[str] | None = None):
        if not self._covers(table, version, partitions):
            return self._warehouse.read_arrow(table, version=version, columns=columns, partitions=partitions)
        out = self._shared.arrow()
        return out.select(columns) if columns is not None else out

    def read_spark(self, spark, table: str, version=None, partitions: list[str] | None = None):
        if not self._covers(table, version, partitions):
            return self._warehouse.read_spark(spark, table, version=version, partitions=partitions)
        return self._shared.spark(spark)

    def iter_batches(self, table: str, version=None, batch_rows: int = 65_536):
        if not self._covers(table, version, None):
            yield from self._warehouse.iter_batches(table, version=version, batch_rows=batch_rows)
            return
        yield from self._shared.arrow().to_batches(max_chunksize=batch_rows)
