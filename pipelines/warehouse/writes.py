"""Writes through the commit: Arrow tables, Spark DataFrames, Spark partitions written as Arrow."""
from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from features.contracts import TableContract
from features.layout import UNPARTITIONED, Manifest
from pipelines.warehouse.errors import WarehouseError
from pipelines.warehouse.files import _part_name, _split_partitions, _TaskWriter


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
    ) -> dict[str, Manifest]:
        """Write one or more tables straight from Arrow in the Spark tasks, then commit each.

        ``kernel(batches)`` runs in every task of ``df.mapInArrow`` and yields ``(table_name,
        pa.Table)`` pairs; each is conformed to its contract and appended, per partition value,
        to a Parquet file in the table's staging area, named by the Spark partition id (a retried
        task overwrites its own files, never duplicates them). Nested columns never pass through
        Spark rows, which is what makes wide list columns cheap to write. When every task is done
        the tables commit one after the other; each commit is atomic on its own.
        ``base_version``: table -> the version its input was read at (see :meth:`transaction`).
        """
        from contextlib import ExitStack

        by_name = {c.name: c for c in contracts}
        bases = base_version or {}
        with ExitStack() as stack:
            staged = {c.name: stack.enter_context(self.transaction(c, replace_partitions, producer, bases.get(c.name)))
                      for c in contracts}
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
        return {name: s.manifest for name, s in staged.items()}
