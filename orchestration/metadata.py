"""Materialization and check metadata for warehouse tables: row count, schema, version, preview, invariants."""
from __future__ import annotations

import dagster as dg

from features.layout import Manifest
from pipelines.warehouse import Warehouse

PREVIEW_ROWS = 5


def table_metadata(warehouse: Warehouse, manifest: Manifest, partitions: list[str] | None = None) -> dict:
    """Metadata every table asset records on materialization."""
    files = manifest.file_paths(warehouse.root, partitions)
    preview = "(empty)"
    if files:
        import pyarrow.parquet as pq

        head = pq.ParquetFile(files[0], filesystem=warehouse.fs).iter_batches(batch_size=PREVIEW_ROWS)
        batch = next(head, None)
        if batch is not None:
            preview = batch.to_pandas().head(PREVIEW_ROWS).to_markdown(index=False)
    columns = [dg.TableColumn(name=n, type=t) for n, t in manifest.schema]
    meta = {
        "dagster/row_count": manifest.row_count,
        "dagster/column_schema": dg.TableSchema(columns=columns),
        "table_version": manifest.version,
        "committed_at": manifest.committed_at,
        "path": dg.MetadataValue.path(warehouse.table_path(manifest.table)),
        "partitions_committed": len(manifest.partitions),
        "preview": dg.MetadataValue.md(preview),
    }
    if manifest.written_partitions and manifest.partition_column:
        meta["partitions_written"] = ", ".join(manifest.written_partitions[:10]) + (
            " ..." if len(manifest.written_partitions) > 10 else ""
        )
    return meta


def invariant_check_result(counts: dict[str, int]) -> dg.AssetCheckResult:
    """A blocking invariant check's result from violation counts (``rows`` is the table size).

    It passes when every count other than ``rows`` is zero; the description names the nonzero ones.
    """
    bad = {k: v for k, v in counts.items() if k != "rows" and v}
    return dg.AssetCheckResult(
        passed=not bad,
        description=", ".join(f"{k}: {v}" for k, v in bad.items()) or f"{counts['rows']:,} rows satisfy every invariant",
        metadata=counts,
    )
