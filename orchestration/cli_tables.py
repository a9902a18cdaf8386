"""``recfeat`` commands that read the warehouse: tables, show, export, history, migrate, report.

None of them runs Dagster or Spark.
"""
from __future__ import annotations

import json

from orchestration.cli_common import CliError, settings_for, warehouse_for


def print_tables(wh, settings=None) -> None:
    """Every table of the catalog (committed or not, with its family), then any other table found.

    With ``settings``, a table they make a view (derived on read) is listed as such, with its
    source's version and rows (a stored table of that name, left from another setting, is not read).
    """
    from pipelines.catalog import families

    catalogued = [(t.name, f.name) for f in families() for t in f.tables]
    views = {v.table: v.source for f in families() if settings is not None and f.enabled(settings)
             for v in f.views(settings)}
    present = set(wh.tables())
    rows = catalogued + [(name, "(not in the catalog)") for name in sorted(present - {n for n, _ in catalogued})]
    print(f"{'table':<20} {'family':<12} {'version':>7} {'rows':>12} {'partitions':>10}  committed_at")
    for name, family in rows:
        if name in views:
            src = views[name]
            if src not in present:
                print(f"{name:<20} {family:<12} {'-':>7} {'-':>12} {'-':>10}  view of {src} (not built yet)")
                continue
            m = wh.manifest(src)
            print(f"{name:<20} {family:<12} {m.version:>7} {m.row_count:>12,} {len(m.partitions):>10}  "
                  f"view of {src}, derived on read")
            continue
        if name not in present:
            print(f"{name:<20} {family:<12} {'-':>7} {'-':>12} {'-':>10}  not built yet")
            continue
        m = wh.manifest(name)
        print(f"{name:<20} {family:<12} {m.version:>7} {m.row_count:>12,} {len(m.partitions):>10}  {m.committed_at}")
    print(f"warehouse: {wh.uri}")


def cmd_tables(args) -> int:
    settings = settings_for(args)
    print_tables(warehouse_for(settings), settings)
    return 0


def _as_of(text: str | None):
    """``--as-of``: an ISO 8601 time (a time without a zone is UTC)."""
    if text is None:
        return None
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--as-of {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:30:00Z)") from None
    from features.timeutil import as_utc

    return as_utc(when)


def _manifest(wh, table: str, version: int | None, as_of: str | None = None):
    """The committed manifest of ``table``, or of its kept ``version``, or as of a time; one-line errors."""
    current = wh.manifest(table)  # fails first if the table has no committed version at all
    if as_of is not None:
        if version is not None:
            raise CliError("give --version or --as-of, not both")
        m = wh.manifest(table, _as_of(as_of))
        if m.version != current.version and m.version not in wh.versions(table):
            raise CliError(f"table {table!r} at {as_of} was version {m.version}, which is past retention "
                           f"(versions available: {', '.join(map(str, wh.versions(table)))})")
        return m
    if version is None or version == current.version:
        return current
    kept = wh.versions(table)
    if version not in kept:
        raise CliError(f"table {table!r} has no version {version}; versions available: {', '.join(map(str, kept))}")
    return wh.manifest(table, version)


def _view(settings, wh, table: str):
    """``(view, context)`` when the settings make ``table`` a view (derived on read), else ``None``."""
    from pipelines.catalog import view

    found = view(table, settings)
    if found is None:
        return None
    family, v = found
    return v, family.context(wh, settings)


def _print_header(wh, m, source: str, table: str, kind: str = "", rows_note: str = "", path: str | None = None) -> None:
    """The header lines of ``recfeat show``: table, version (of ``source``), commit time, rows,
    partitions and path."""
    current = wh.current_version(source)
    note = "" if m.version == current else f", current: {current}"
    version = f"{m.version}" if source == table else f"{source} version {m.version}"
    print(f"table:        {table}{kind}")
    print(f"version:      {version} (kept: {', '.join(map(str, wh.versions(source)))}{note})")
    print(f"committed_at: {m.committed_at}")
    print(f"rows:         {m.row_count:,}{rows_note}")
    print(f"partitioned:  {m.partition_column or 'no'}" + (f" ({len(m.partitions)} partitions: {min(m.partitions)} .. {max(m.partitions)})" if m.partition_column and m.partitions else ""))
    print(f"path:         {path if path is not None else wh.table_path(table)}")


def _print_schema(columns, describe) -> None:
    """``columns``: (name, type text) pairs; ``describe(name)``: the column's description."""
    print("schema:")
    width = max([20, *(len(name) + 1 for name, _ in columns)])
    for name, typ in columns:
        print(f"  {name:<{width}} {typ:<24} {describe(name)}".rstrip())


def _print_sample(table, rows: int) -> None:
    """Up to ``rows`` rows of an Arrow table or record batch (``None`` or empty: nothing)."""
    if table is None or not table.num_rows:
        return
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print("sample:")
        print(table.to_pandas().head(rows).to_string(index=False))


def _show_view(wh, v, ctx, args) -> int:
    """``recfeat show`` of a view: its source's version, the derived schema and derived sample rows."""
    from pipelines.catalog import contract

    m = _manifest(wh, v.source, args.version, args.as_of)
    _print_header(wh, m, v.source, v.table, f" (a view: derived on read from {v.source}, not stored)",
                  f" (one per {v.source} row)", f"none (derived from {wh.table_path(v.source)})")
    _print_schema([(f.name, str(f.type)) for f in v.schema(ctx)], contract(v.table).column_description)
    if m.partitions and args.rows > 0:
        _print_sample(v.read_arrow(ctx, m.version, [min(m.partitions)]).slice(0, args.rows), args.rows)
    return 0


def _export_view(wh, v, ctx, args) -> int:
    """``recfeat export`` of a view: its rows derived from the source version, one partition at a time."""
    import os
    import uuid

    import pyarrow.parquet as pq

    from pipelines.warehouse.storage import filesystem

    m = _manifest(wh, v.source, args.version, args.as_of)
    out_fs, out = filesystem(args.out)
    parent = os.path.dirname(out)
    if parent:
        out_fs.makedirs(parent, exist_ok=True)
    tmp = f"{out}.tmp-{uuid.uuid4().hex[:8]}"
    rows = 0
    with pq.ParquetWriter(tmp, v.schema(ctx), filesystem=out_fs) as writer:
        for part in ([[p] for p in sorted(m.partitions)] if m.partitions else [None]):
            data = v.read_arrow(ctx, m.version, part)
            writer.write_table(data)
            rows += data.num_rows
    out_fs.mv(tmp, out)
    print(f"exported {v.table} (view of {v.source} v{m.version}): {rows:,} rows to {args.out}")
    return 0


def _table_or_view(args):
    """``(warehouse, view or None, manifest or None)`` of ``args.table`` at ``--version`` /
    ``--as-of``: a view (under the settings) is resolved by its own command's code."""
    settings = settings_for(args)
    wh = warehouse_for(settings)
    view = _view(settings, wh, args.table)
    return wh, view, (None if view is not None else _manifest(wh, args.table, args.version, args.as_of))


def cmd_show(args) -> int:
    wh, view, m = _table_or_view(args)
    if view is not None:
        return _show_view(wh, *view, args)
    _print_header(wh, m, args.table, m.table)
    from pipelines.catalog import contract

    try:
        describe = contract(m.table).column_description
    except KeyError:  # a table outside the catalog: types only
        describe = lambda name: ""  # noqa: E731
    _print_schema(list(m.schema), describe)
    files = m.file_paths(wh.root)
    if files and args.rows > 0:
        import pyarrow.parquet as pq

        _print_sample(next(pq.ParquetFile(files[0], filesystem=wh.fs).iter_batches(batch_size=args.rows), None), args.rows)
    return 0


def cmd_export(args) -> int:
    wh, view, m = _table_or_view(args)
    if view is not None:
        return _export_view(wh, *view, args)
    rows = wh.export(args.table, args.out, version=m.version)
    print(f"exported {args.table} v{m.version}: {rows:,} rows to {args.out}")
    return 0


def cmd_history(args) -> int:
    wh = warehouse_for(settings_for(args))
    kept = set(wh.versions(args.table))
    entries = wh.history(args.table, limit=args.limit)
    print(f"{'version':>7}  {'committed_at (UTC)':<25} {'operation':<12} {'rows written':>12}  {'readable':<8}  producer")
    for e in entries:
        if e["version"] == 0:
            continue
        rows = sum(json.loads(e.get("recfeat.row_counts", "{}")).values())
        producer = json.loads(e.get("recfeat.producer", "{}"))
        job = producer.get("job", "")
        print(f"{e['version']:>7}  {e['timestamp'].isoformat(timespec='seconds'):<25} {e['operation'] or '':<12} "
              f"{rows:>12,}  {'yes' if e['version'] in kept else 'no':<8}  {job}")
    print(f"table: {wh.table_path(args.table)} (Delta Lake; any Delta reader can open it)")
    return 0


def cmd_migrate(args) -> int:
    wh = warehouse_for(settings_for(args))
    done = wh.migrate(dry_run=args.dry_run)
    if not done:
        print(f"nothing to migrate: every table in {wh.uri} is a Delta table")
        return 0
    for table, what in done.items():
        print(f"{table:<20} {what}")
    return 0


def cmd_report(args) -> int:
    """The last quality check of every catalogued table (read from the reports folder; runs nothing)."""
    from pipelines.quality import report

    settings = settings_for(args)
    from pipelines.catalog import view_sources

    print(report(warehouse_for(settings), settings.quality, views=view_sources(settings)))
    return 0
