"""Materialization metadata for warehouse tables (row count, schema, version, preview) and figures."""
from __future__ import annotations

import dagster as dg

from features.layout import Manifest
from pipelines.warehouse import Warehouse

PREVIEW_ROWS = 5


def image_markdown(path: str) -> str:
    """Markdown with the PNG at ``path`` inlined as a base64 data URI (Dagster renders it in the UI)."""
    import base64
    import os

    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return f"![{os.path.basename(path)}](data:image/png;base64,{data})"


def figure_metadata(figures: dict[str, str]) -> dict:
    """``figure_<name>`` (the image) and ``figure_<name>_path`` for each ``{name: PNG path}``."""
    meta = {}
    for name, path in figures.items():
        meta[f"figure_{name}"] = dg.MetadataValue.md(image_markdown(path))
        meta[f"figure_{name}_path"] = dg.MetadataValue.path(path)
    return meta


def committed_column_schema(manifest: Manifest) -> dg.TableSchema:
    """The committed version's columns, described by the table's contract (open columns too)."""
    from orchestration.columns import column_schema
    from pipelines.catalog import contract

    try:
        table = contract(manifest.table)
    except KeyError:  # a table outside the catalog: types only
        return dg.TableSchema(columns=[dg.TableColumn(name=n, type=t) for n, t in manifest.schema])
    declared = column_schema(table)
    known = {c.name for c in declared.columns}
    extra = [dg.TableColumn(name=n, type=t, description=table.column_description(n)) for n, t in manifest.schema if n not in known]
    return dg.TableSchema(columns=list(declared.columns) + extra, constraints=declared.constraints)


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
    meta = {
        "dagster/row_count": manifest.row_count,
        "dagster/column_schema": committed_column_schema(manifest),
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
