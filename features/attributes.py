"""Attach dimension attributes to examples: the one per-row kernel of every reader (pure Arrow/NumPy).

An example (a training-set spine row, a trainer's impression) gets the attributes of the
dimension row (``users``, ``items``) whose key equals its key. The rule, in one place:

* keys are compared as text (ids are strings in every table);
* a key the dimension lacks, and a null key, give null attributes;
* a key the dimension holds more than once (the contracts say never, and the dimension's
  blocking quality check refuses it; a table written by hand may) gives the attributes of its
  **last** row in the dimension's order, so an example is never duplicated. That order is the
  order of the version's files and rows, the same for every reader of one version but not
  across a rewrite, so readers count such keys (:attr:`DimensionIndex.repeated`) and say so:
  the training set's report (``<table>_repeated_keys``) and a warning of the trainers.

Both the trainers' loaders (:class:`trainers.data.FieldEncoder`, pandas) and the training set's
Spark tasks (``mapInArrow``, :mod:`pipelines.training_set.build`) call :func:`dimension_rows`
and take the attribute values with the positions it returns, so a user's training set and a
built-in trainer's inputs get the same attributes for the same rows.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

#: Position of a key the dimension lacks (its attributes are null).
MISSING = -1


def _text(keys) -> pd.Index:
    if isinstance(keys, (pa.Array, pa.ChunkedArray)):
        keys = keys.to_pandas()
    values = pd.Series(keys, dtype="object")
    return pd.Index(values.where(values.notna(), None).map(lambda v: None if v is None else str(v)), dtype="object")


class DimensionIndex:
    """The rows of a dimension by key (last row of a repeated key), for :func:`dimension_rows`."""

    def __init__(self, keys):
        index = _text(keys)
        keep = ~index.duplicated(keep="last") & index.notna()
        self.index = index[keep]
        self.rows = np.flatnonzero(keep).astype(np.int64)
        #: distinct non-null keys that appear on more than one row (their last row is used)
        self.repeated = int(index[index.notna() & index.duplicated(keep=False)].nunique())

    def positions(self, keys) -> np.ndarray:
        """Row of the dimension for each key (int64; :data:`MISSING` where it has none or the key is null)."""
        q = _text(keys)
        found = self.index.get_indexer(q)
        out = np.where(found >= 0, self.rows[np.maximum(found, 0)] if len(self.rows) else MISSING, MISSING)
        return out.astype(np.int64)


def dimension_rows(dimension_keys, keys) -> np.ndarray:
    """Row of the dimension (whose key column is ``dimension_keys``) for each example key:
    int64 positions, :data:`MISSING` (-1) for a key it lacks or a null key; a repeated key's last row."""
    return DimensionIndex(dimension_keys).positions(keys)


def take_rows(values: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """Arrow: ``values[rows]`` with null where ``rows`` is :data:`MISSING`."""
    rows = np.asarray(rows, dtype=np.int64)
    idx = pa.array(np.maximum(rows, 0), pa.int64(), mask=rows < 0)
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if len(arr) == 0:
        return pa.nulls(len(rows), arr.type)
    return arr.take(idx)


def take_series(values: pd.Series, rows: np.ndarray, index=None) -> pd.Series:
    """pandas: ``values`` at ``rows`` (positions) as object, ``None`` where ``rows`` is :data:`MISSING`."""
    rows = np.asarray(rows, dtype=np.int64)
    arr = values.to_numpy(dtype=object)
    out = np.empty(len(rows), dtype=object)
    hit = rows >= 0
    out[hit] = arr[rows[hit]]
    out[~hit] = None
    return pd.Series(out, index=index, dtype="object")


def attach_attributes(examples: pa.RecordBatch | pa.Table, dimension: pa.Table, key: str, columns: Sequence[str],
                      names: Sequence[str] | None = None, index: DimensionIndex | None = None):
    """``examples`` with ``columns`` of ``dimension`` appended (as ``names``), each example's
    attributes those of the dimension row with its ``key`` (module docstring); the examples'
    rows and order are unchanged. ``index``: a :class:`DimensionIndex` of the dimension's key,
    built once and reused across batches."""
    index = index or DimensionIndex(dimension.column(key))
    rows = index.positions(examples.column(key))
    out = examples
    for c, name in zip(columns, names or columns):
        out = out.append_column(name, take_rows(dimension.column(c), rows))
    return out
