"""The Python API: the warehouse's tables and point-in-time training sets, in one place.

```python
from pipelines import api

api.tables()                                   # committed tables
api.describe("user_sequences")                 # columns, types, descriptions
events = api.read("events", columns=["user_id", "item_id", "event_ts"])        # pandas
old = api.read("lookalike_users", version=3, engine="arrow")
ts = api.training_set(spine, ["user_sequences", "users.*", "lookalike_users"]) # see docs/python-api.md
```

Every function loads the project settings as the ``recfeat`` command does
(:func:`pipelines.settings.load_settings`: ``config`` or ``$RECFEAT_CONFIG`` or ``./recfeat.yaml``,
then the ``RECFEAT_*`` variables); the warehouse is ``settings.warehouse.root`` unless
``warehouse=`` names another root (or passes a :class:`~pipelines.warehouse.Warehouse`).
Walk-through: docs/python-api.md.
"""
from __future__ import annotations

import datetime as dt
import os

from pipelines.training_set import TrainingSet
from pipelines.warehouse import Warehouse

ENGINES = ("pandas", "arrow", "spark")

__all__ = ["ENGINES", "describe", "read", "tables", "training_set"]


def _settings(warehouse=None, config=None):
    from pipelines.settings import load_settings

    overrides = {}
    if isinstance(warehouse, (str, os.PathLike)):
        text = str(warehouse)
        overrides["warehouse.root"] = text if "://" in text else os.path.abspath(text)
    return load_settings(config, overrides=overrides)


def _warehouse(warehouse=None, config=None, settings=None) -> Warehouse:
    if isinstance(warehouse, Warehouse):
        return warehouse
    s = settings or _settings(warehouse, config)
    return Warehouse(s.warehouse.root, retention_days=s.warehouse.retention_days,
                     keep_versions=s.warehouse.keep_versions, pinned=s.training.pinned_versions())


def _spark(settings):
    from pipelines.spark import get_spark

    return get_spark(settings.spark)


def tables(warehouse=None, config: str | None = None) -> list[str]:
    """Names of the tables with a committed version."""
    return _warehouse(warehouse, config).tables()


def _view(table: str, wh: Warehouse, settings, spark=None):
    """``(view, context)`` when the settings make ``table`` a view (derived on read), else ``None``."""
    from pipelines import catalog

    found = catalog.view(table, settings)
    if found is None:
        return None
    family, view = found
    return view, family.context(wh, settings, spark_session=(lambda: _spark(settings)) if spark is None else spark)


def read(table: str, version: int | None = None, as_of: dt.datetime | str | None = None,
         partitions: list[str] | None = None, columns: list[str] | None = None, engine: str = "pandas",
         warehouse=None, config: str | None = None):
    """A committed table: the current version, ``version=N``, or the version current ``as_of`` a
    time (an aware datetime, or ISO 8601 text, UTC unless it names a zone). ``partitions``: values
    of the partition column (``["2022-04-10"]``); ``columns``: a subset. ``engine``: ``pandas``
    (default), ``arrow`` (a pyarrow Table) or ``spark`` (a Spark DataFrame).

    A table the settings make a view (``rote_features`` with ``sequences.rote_storage: view``,
    the default) is derived on read from its source table (``user_sequences``): ``version`` and
    ``as_of`` then name a version of the source, ``partitions`` its days (docs/sequences.md)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if version is not None and as_of is not None:
        raise ValueError("pass version or as_of, not both")
    settings = _settings(warehouse if not isinstance(warehouse, Warehouse) else None, config)
    wh = _warehouse(warehouse, config, settings)
    ref = version
    if as_of is not None:
        when = dt.datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
        ref = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    view = _view(table, wh, settings)
    if view is not None:
        v, ctx = view
        if engine == "spark":
            df = v.read_spark(ctx, ref, partitions)
            return df.select(*columns) if columns else df
        data = v.read_arrow(ctx, ref, partitions, columns)
        return data if engine == "arrow" else data.to_pandas()
    if engine == "spark":
        df = wh.read_spark(_spark(settings), table, version=ref, partitions=partitions)
        return df.select(*columns) if columns else df
    data = wh.read_arrow(table, version=ref, columns=columns, partitions=partitions)
    return data if engine == "arrow" else data.to_pandas()


def describe(table: str, warehouse=None, config: str | None = None):
    """A table's columns as pandas: ``column``, ``type``, ``description`` (from the table's
    contract; for a committed table the types are those of its current version, so the open
    attributes of ``users`` and ``items`` are listed too). ``attrs``: the table's description,
    key, partition column and current version; for a view (derived on read, see :func:`read`)
    the types are those it derives, ``version`` is its source's current version, and
    ``view_of`` names the source (``None`` for a stored table)."""
    import pandas as pd

    from pipelines import catalog

    try:
        contract = catalog.contract(table)
    except KeyError:
        contract = None
    settings = _settings(warehouse if not isinstance(warehouse, Warehouse) else None, config)
    wh = _warehouse(warehouse, config, settings)
    schema, version, view_of = None, None, None
    view = _view(table, wh, settings)
    if view is not None:
        v, ctx = view
        schema, view_of = v.schema(ctx), v.source
        version = wh.current_version(v.source)
    elif wh.exists(table):
        manifest = wh.manifest(table)
        version = manifest.version
        schema = wh.arrow_schema(manifest)
    if schema is None and contract is None:
        raise ValueError(f"unknown table {table!r} (committed: {', '.join(wh.tables()) or 'none'})")
    fields = list(schema if schema is not None else contract.schema)
    rows = [{"column": f.name, "type": str(f.type),
             "description": contract.column_description(f.name) if contract else ""} for f in fields]
    out = pd.DataFrame(rows, columns=["column", "type", "description"])
    out.attrs.update({
        "table": table,
        "description": contract.description if contract else "",
        "key": list(contract.key) if contract else [],
        "partition_column": contract.partition_column if contract else None,
        "version": version,
        "view_of": view_of,
    })
    return out


def training_set(spine, features, *, ts_column: str = "event_ts", max_len: int | None = None, ttl: dict | None = None,
                 versions=None, out: str | None = None, overwrite: bool = False, warehouse=None,
                 config: str | None = None, history_ties: str = "exclude") -> TrainingSet:
    """Point-in-time features for every row of ``spine`` (:func:`pipelines.training_set.training_set`).

    ``spine``: pandas, pyarrow, a Spark DataFrame or a Parquet/CSV path with ``user_id``,
    optionally ``item_id``, and the example time ``ts_column`` (UTC); other columns pass through.
    ``features``: names such as ``user_sequences``, ``users.*``, ``items.duration_ms``,
    ``lookalike_users``, ``recall_items``, ``watch_time_labels.d2co``, ``duration_stats.wt_mean_s``.
    ``ttl``: table -> a maximum age (``"30d"``, seconds or a timedelta). ``versions``: table ->
    version to read, or the path of an earlier output (reproduces it exactly). ``out``: a
    directory to write (Parquet files and ``_training_set.json``). ``history_ties``:
    ``"exclude"`` (events strictly before the example time) or ``"log_order"`` (a row naming an
    event by ``event_id`` gets that event's ``user_sequences`` history: same-time events before
    it in the total order too; docs/python-api.md, "Same inputs as the built-in trainers"). Returns a
    :class:`~pipelines.training_set.TrainingSet` (``.to_pandas()``, ``.df``, ``.metadata``, ``.report``).
    """
    from pipelines.training_set import training_set as build

    settings = _settings(warehouse if not isinstance(warehouse, Warehouse) else None, config)
    wh = _warehouse(warehouse, config, settings)
    return build(_spark(settings), wh, spine, features, ts_column=ts_column, max_len=max_len, ttl=ttl,
                 versions=versions, settings=settings, out=out, overwrite=overwrite, history_ties=history_ties)
