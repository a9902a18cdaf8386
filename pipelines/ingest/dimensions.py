"""The ``users`` and ``items`` jobs: a source's attribute file merged into its committed table."""
from __future__ import annotations

import copy

import pyarrow as pa

from features.dimensions import ITEMS, USERS
from features.layout import Manifest
from pipelines.ingest.results import DimensionSchemaError, _base
from pipelines.sources import SourceAdapter
from pipelines.warehouse import Warehouse


def ingest_dimension(
    warehouse: Warehouse, adapter: SourceAdapter, table: str, follow_symlinks: bool = False
) -> Manifest | None:
    """Commit the adapter's ``users`` or ``items`` file, merged by key with the committed rows.

    Rows of the new file win over committed rows with the same key; committed rows of other
    keys are always kept (a later source file may describe only new users). The columns are the
    union of the committed table's and the file's (:func:`merge_dimension`): a column the file
    lacks is null in its rows, a column new in the file is null in the kept rows; a column whose
    types cannot be reconciled fails with :class:`DimensionSchemaError` naming it, and nothing is
    committed. The committed version is read once and the commit made on it. Returns ``None``
    when the source has no such file, and the committed manifest without a commit when the
    merged rows equal the committed ones. ``follow_symlinks``: read a users/items file that is a
    symbolic link (else :class:`~pipelines.sources.SourceError`; ``ingest.follow_symlinks``).
    """
    contract = {USERS.name: USERS, ITEMS.name: ITEMS}[table]
    reader = copy.copy(adapter)
    reader.follow_symlinks = follow_symlinks
    fresh = reader.read_users() if table == USERS.name else reader.read_items()
    if fresh is None:
        return None
    fresh = contract.conform(fresh)
    key = contract.key[0]
    fresh = _first_per_key(fresh, key)
    base = warehouse.current_version(table)
    committed = None
    if base is not None:
        committed = warehouse.read_arrow(table, version=base)
        fresh = merge_dimension(committed, fresh, key, table)
    fresh = contract.conform(fresh).sort_by(key)
    if committed is not None and _same_rows(contract.conform(committed).sort_by(key), fresh):
        return warehouse.manifest(table, base)  # nothing new: commit nothing
    return warehouse.write_arrow(
        contract, fresh, producer={"job": f"ingest_{table}", "source": adapter.name}, base_version=_base(base)
    )


def _same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Whether two tables sorted by key hold the same columns and values (types may differ)."""
    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False
    try:
        return a.cast(b.schema).equals(b)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        return False


def merge_dimension(old: pa.Table, fresh: pa.Table, key: str, table: str = "dimension") -> pa.Table:
    """``fresh`` plus the rows of ``old`` whose ``key`` it does not hold, on the union of columns.

    Column order: ``old``'s, then the columns new in ``fresh``. A column missing on one side is
    null there. A column on both sides with different types takes the type both widen to
    (int64 and float64: float64); an all-null side takes the other's type; any other clash
    raises :class:`DimensionSchemaError` naming every such column and both types.
    """
    import pyarrow.compute as pc

    names = list(old.column_names) + [n for n in fresh.column_names if n not in old.column_names]
    types, clashes = {}, []
    for name in names:
        a = old.schema.field(name).type if name in old.column_names else None
        b = fresh.schema.field(name).type if name in fresh.column_names else None
        if a is None or b is None or a.equals(b):
            types[name] = a if b is None else b
        elif old.column(name).null_count == old.num_rows:
            types[name] = b
        elif fresh.column(name).null_count == fresh.num_rows:
            types[name] = a
        else:
            try:
                types[name] = pa.unify_schemas(
                    [pa.schema([(name, a)]), pa.schema([(name, b)])], promote_options="permissive"
                ).field(name).type
            except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
                clashes.append(f"{name!r} ({a} committed, {b} in the new file)")
    if clashes:
        raise DimensionSchemaError(
            f"{table}: the new file's columns cannot be merged with the committed table: "
            f"{', '.join(clashes)} changed type; nothing was committed"
        )

    def aligned(t: pa.Table) -> pa.Table:
        cols = []
        for name in names:
            if name in t.column_names:
                try:
                    cols.append(t.column(name).cast(types[name]))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DimensionSchemaError(
                        f"{table}: column {name!r} cannot be read as {types[name]}: {str(exc).splitlines()[0]}"
                    ) from None
            else:
                cols.append(pa.nulls(t.num_rows, types[name]))
        return pa.Table.from_arrays(cols, names=names)

    keep_old = old.filter(pc.invert(pc.is_in(old.column(key), value_set=fresh.column(key))))
    return pa.concat_tables([aligned(keep_old), aligned(fresh)])


def _first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Keep the first row of each key (files list each id once; this guards against repeats)."""
    import pyarrow.compute as pc

    idx = pa.array(range(table.num_rows), pa.int64())
    firsts = table.append_column("_i", idx).group_by(key, use_threads=False).aggregate([("_i", "min")])
    keep = pc.is_in(idx, value_set=firsts.column("_i_min"))
    return table.filter(keep)
