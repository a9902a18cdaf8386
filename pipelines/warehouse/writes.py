"""Writes through the commit: Arrow tables, Spark DataFrames, Spark partitions written as Arrow."""
from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import TableContract
from features.layout import UNPARTITIONED, Manifest
from pipelines.warehouse.errors import WarehouseError
from pipelines.warehouse.files import _part_name, _split_partitions, _TaskWriter


#: The name under which a :meth:`WritesMixin.write_from_spark_arrow` kernel yields a side output.
SIDE_OUTPUT = "__side_output__"
_TASK_RESULT = pa.schema([("table", pa.string()), ("rows", pa.int64()), ("side", pa.binary())])


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


class WritesMixin:
    """Writes of :class:`~pipelines.warehouse.Warehouse`."""

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
        side_output=None,
    ) -> dict[str, Manifest]:
        """Write one or more tables straight from Arrow in the Spark tasks, then commit each.

        ``kernel(batches)`` runs in every task of ``df.mapInArrow`` and yields ``(table_name,
        pa.Table)`` pairs; each is conformed to its contract and appended, per partition value,
        to a Parquet file in the table's staging area, named by the Spark partition id (a retried
        task overwrites its own files, never duplicates them). Nested columns never pass through
        Spark rows, which is what makes wide list columns cheap to write. When every task is done
        the tables commit one after the other; each commit is atomic on its own.
        ``base_version``: table -> the version its input was read at (see :meth:`transaction`).
        ``side_output``: a function ``tables -> dict[str, str]``; the kernel may then also yield
        ``(SIDE_OUTPUT, pa.Table)`` pairs (small per-task results, e.g. counts gathered in the
        same pass), which are not written: the driver receives them from the finished tasks
        (each task once, whatever its retries), calls ``side_output`` with the list before the
        commits, and adds the entries it returns to ``producer`` (the commit metadata).
        """
        from contextlib import ExitStack

        by_name = {c.name: c for c in contracts}
        bases = base_version or {}
        producer = dict(producer or {})  # the commits read it when they happen, after side_output
        with ExitStack() as stack:
            staged = {c.name: stack.enter_context(self.transaction(c, replace_partitions, producer, bases.get(c.name)))
                      for c in contracts}
            targets = {name: (s.path, by_name[name]) for name, s in staged.items()}
            fs = self.fs

            def run(batches):
                from pyspark import TaskContext

                task = TaskContext.get().partitionId()
                writer = _TaskWriter(fs, targets, task)
                side: list[bytes] = []
                try:
                    for name, table in kernel(batches):
                        if name == SIDE_OUTPUT:
                            side.append(_ipc_bytes(table))
                        else:
                            writer.write(name, table)
                finally:
                    counts = writer.close()
                yield pa.RecordBatch.from_pydict(
                    {"table": list(counts), "rows": list(counts.values()), "side": [None] * len(counts)},
                    schema=_TASK_RESULT,
                )
                if side:
                    yield pa.RecordBatch.from_pydict(
                        {"table": [SIDE_OUTPUT] * len(side), "rows": [0] * len(side), "side": side}, schema=_TASK_RESULT
                    )

            results = df.mapInArrow(run, "table string, rows long, side binary").collect()
            tables = [pa.ipc.open_stream(pa.py_buffer(bytes(r["side"]))).read_all() for r in results if r["table"] == SIDE_OUTPUT]
            if side_output is None:
                if tables:
                    raise ValueError(f"the kernel yielded {len(tables)} side output(s) ({SIDE_OUTPUT!r}) but no side_output "
                                     "was given to merge them: nothing committed")
            else:
                extra = side_output(tables)
                clash = sorted(k for k in extra if k in producer)
                if clash:
                    raise ValueError(f"side_output returned producer key(s) {clash} that the job already set: nothing committed")
                producer.update(extra)
        return {name: s.manifest for name, s in staged.items()}
