"""Dataset readers and categorical encoders for trainers (pyarrow -> NumPy -> torch, no Spark).

Tables are read through :mod:`trainers.tables`, the one reader (schema checked against each
table's contract, columns projected, partitions pruned, the version recorded); its
``partitions_between``, ``stream_table`` and ``table_record`` are re-exported here.

Reading is streamed: a fact table (for example ``watch_time_labels``) is read in record batches
of the selected daily partitions and only the needed columns; each batch is joined to the small
dimension tables (``items``, ``users``) in memory, by :mod:`features.attributes` (the kernel a
training set's Spark tasks attach the same attributes with), and encoded straight away, so what a split
holds is its encoded int64 field matrix and a few numeric label columns, never the raw table.

Encoders (:class:`CategoricalEncoder`) are fitted on the training split only; index 0 is
reserved for values never seen in training and for nulls, so validation and test rows with a new
user or video map to 0 instead of failing. They are saved with the model (``encoders.json``).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from features.attributes import DimensionIndex, take_series
from features.contracts import TableContract
from features.dimensions import ITEMS, USERS
from trainers.tables import TableSnapshot, open_table, partitions_between, stream_table, table_record

_log = logging.getLogger("recfeat.train")

__all__ = [  # the reader's helpers are re-exported: trainers.tables is the one reader
    "UNKNOWN", "FieldSpec", "Dimension", "CategoricalEncoder", "EncodedSplit", "FieldEncoder", "TableSnapshot",
    "partitions_between", "stream_table", "table_record", "load_dimension", "batch_indices", "tensor_batches",
    "kuairand_side_fields", "KUAIRAND_DIMENSIONS", "encoders_record",
]

UNKNOWN = 0


@dataclass(frozen=True)
class FieldSpec:
    """One categorical input field: ``column`` of ``table`` (the fact table or a dimension).

    ``transform``: ``"identity"`` (the value as text) or ``"most_frequent_tag"`` (for a
    comma-separated tag list, the tag that is most frequent across the training split, as
    D²Co's and CWM's ``tag_pop``).
    """

    name: str
    table: str
    column: str
    transform: str = "identity"


@dataclass(frozen=True)
class Dimension:
    """A dimension table (its contract) joined to the fact table on ``fact_key`` = the dimension's ``key``."""

    contract: TableContract
    key: str
    fact_key: str

    @property
    def table(self) -> str:
        return self.contract.name


class CategoricalEncoder:
    """Value -> index in 1..n by training frequency (ties by value); 0 for unknown and null."""

    def __init__(self, vocab: Sequence[str] = (), min_count: int = 1):
        self.vocab = list(vocab)
        self.min_count = min_count
        self._index = pd.Index(self.vocab)

    @classmethod
    def fit(cls, counts: Counter, min_count: int = 1) -> "CategoricalEncoder":
        items = sorted(((v, c) for v, c in counts.items() if v is not None and c >= min_count), key=lambda vc: (-vc[1], vc[0]))
        return cls([v for v, _ in items], min_count)

    @property
    def cardinality(self) -> int:
        """Embedding rows needed: the vocabulary plus the unknown index."""
        return len(self.vocab) + 1

    def transform(self, values) -> np.ndarray:
        codes = self._index.get_indexer(pd.Index(pd.Series(values, dtype="object").astype("string").fillna("\x00")))
        return (codes + 1).astype(np.int64)  # -1 (unknown) -> 0

    def to_json(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "min_count": self.min_count}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CategoricalEncoder":
        return cls(data["vocab"], data.get("min_count", 1))


def _float_text(v) -> str | None:
    return None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v))


def _as_text(values: pd.Series) -> pd.Series:
    """Ids and categories as text (``None`` where missing); floats that hold integers lose their ``.0``.

    A typed column (float, integer, bool, string) or an object column of only strings or only
    integers is converted once per distinct value (ids repeat on many rows); any other object
    column row by row, since equal Python objects of different types (``1``, ``1.0``,
    ``True``) would share a distinct value but not a text.
    Both give :func:`_as_text_rows`'s result.
    """
    dtype = values.dtype
    typed = (pd.api.types.is_float_dtype(dtype) or pd.api.types.is_integer_dtype(dtype)
             or pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.StringDtype))
    if isinstance(dtype, pd.CategoricalDtype) or not (
            typed or pd.api.types.infer_dtype(values, skipna=True) in ("string", "integer", "empty")):
        return _as_text_rows(values)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = np.empty(len(uniques) + 1, dtype=object)  # the last slot: a missing value
    convert = _float_text if pd.api.types.is_float_dtype(dtype) else str
    text[:-1] = [convert(v) for v in np.asarray(uniques, dtype=object)]
    text[-1] = None
    return pd.Series(text[codes], index=values.index, name=values.name, dtype=object)


def _as_text_rows(values: pd.Series) -> pd.Series:
    """:func:`_as_text` one row at a time (the reference of its per-distinct-value form)."""
    if pd.api.types.is_float_dtype(values):
        return values.map(_float_text).astype("object")
    return values.astype("object").where(values.notna(), None).map(lambda v: None if v is None else str(v))


def load_dimension(root: str, dim: Dimension, columns: list[str], version: int | None = None) -> tuple[pd.DataFrame, TableSnapshot]:
    """A dimension table's ``columns`` as text, indexed by its key (small: held in memory).

    A column the source lacks (an open contract's attribute) comes back as nulls."""
    snap = open_table(root, dim.contract, version)
    cols = [dim.key] + [c for c in columns if c != dim.key]
    present = [c for c in cols if c in snap.columns]
    frames = [b.to_pandas() for b in snap.batches(present)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=present)
    for c in cols:
        if c not in df:
            df[c] = None
    keys = _as_text(df[dim.key])
    index = DimensionIndex(keys.values)
    keep = index.rows  # a repeated key: its last row (features.attributes)
    if index.repeated:
        _log.warning("%s v%s holds %d repeated %s value(s); each uses its last row (features.attributes)",
                     dim.contract.name, snap.version, index.repeated, dim.key)
    df = df.iloc[keep]
    out = pd.DataFrame({c: _as_text(df[c]) for c in cols if c != dim.key})
    out.index = keys.values[keep]
    return out, snap


@dataclass
class EncodedSplit:
    """One split: the encoded field matrix and the numeric columns, row-aligned."""

    x: np.ndarray  # int64 [rows, fields]
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: np.ndarray) -> "EncodedSplit":
        return EncodedSplit(self.x[idx], {k: v[idx] for k, v in self.columns.items()})


class FieldEncoder:
    """Joins fact batches to dimensions and encodes every field; fitted on the training split."""

    def __init__(self, fields: Sequence[FieldSpec], fact_table: str, dims: dict[str, tuple[Dimension, pd.DataFrame]]):
        self.fields = list(fields)
        self.fact_table = fact_table
        self.dims = dims
        self.encoders: dict[str, CategoricalEncoder] = {}
        self.tag_rank: dict[str, int] = {}
        self._indexes: dict[str, DimensionIndex] = {}  # per dimension table, built on first use

    def raw_fields(self, batch: pd.DataFrame) -> dict[str, pd.Series]:
        """Each field's value (text, before encoding) for the fact rows of ``batch``: a fact
        field from its column, a dimension field attached by :mod:`features.attributes` (the
        kernel a training set's Spark tasks use as well)."""
        out = {}
        rows: dict[str, np.ndarray] = {}
        for f in self.fields:
            if f.table == self.fact_table:
                values = _as_text(batch[f.column])
            else:
                dim, frame = self.dims[f.table]
                if f.table not in rows:
                    rows[f.table] = self._index(f.table).positions(_as_text(batch[dim.fact_key]).values)
                values = take_series(frame[f.column], rows[f.table], index=batch.index)
            out[f.name] = self._transform(f, values)
        return out

    def raw_fields_attached(self, frame: pd.DataFrame, columns: dict[str, str]) -> dict[str, pd.Series]:
        """Each field's value (text, before encoding) for rows whose dimension attributes are
        already attached (a training set's ``users__<column>`` / ``items__<column>``):
        ``columns`` maps a field name to its column of ``frame``. Same text and transform as
        :meth:`raw_fields`, so the same rows give the same values and codes."""
        out = {}
        for f in self.fields:
            values = _as_text(frame[columns.get(f.name, f.column)])
            values.index = frame.index
            out[f.name] = self._transform(f, values)
        return out

    def encode_attached(self, frame: pd.DataFrame, columns: dict[str, str]) -> np.ndarray:
        """:meth:`encode` for rows with their attributes attached (:meth:`raw_fields_attached`)."""
        raw = self.raw_fields_attached(frame, columns)
        return np.stack([self.encoders[f.name].transform(raw[f.name]) for f in self.fields], axis=1).astype(np.int64)

    def _index(self, table: str) -> DimensionIndex:
        if table not in self._indexes:
            self._indexes[table] = DimensionIndex(self.dims[table][1].index)
        return self._indexes[table]

    def _transform(self, f: FieldSpec, values: pd.Series) -> pd.Series:
        if f.transform == "most_frequent_tag":
            return self._pick_tags(values)
        return values

    def _pick_tags(self, values: pd.Series) -> pd.Series:
        """``values.map(self._pick_tag)``, computed once per distinct value (a tag list repeats
        on every row of its item)."""
        codes, uniques = pd.factorize(values.astype("object"), use_na_sentinel=True)
        picked = np.empty(len(uniques) + 1, dtype=object)  # the last slot: a missing value
        picked[:-1] = [self._pick_tag(v) for v in uniques]
        picked[-1] = None
        return pd.Series(picked[codes], index=values.index, dtype=object)

    def _pick_tag(self, v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        tags = [t.strip() for t in str(v).split(",") if t.strip()]
        if not tags:
            return None
        return min(tags, key=lambda t: (-self.tag_rank.get(t, 0), t))

    def fit(self, batches: Callable[[], Iterator[pd.DataFrame]]) -> "FieldEncoder":
        tag_counts: Counter = Counter()
        tag_fields = [f for f in self.fields if f.transform == "most_frequent_tag"]
        if tag_fields:
            for batch in batches():
                for f in tag_fields:
                    raw = FieldEncoder([FieldSpec(f.name, f.table, f.column)], self.fact_table, self.dims).raw_fields(batch)[f.name]
                    for v in raw.dropna():
                        tag_counts.update(t.strip() for t in str(v).split(",") if t.strip())
            self.tag_rank = dict(tag_counts)
        counts = {f.name: Counter() for f in self.fields}
        for batch in batches():
            for name, values in self.raw_fields(batch).items():
                counts[name].update(values.dropna().tolist())
        self.encoders = {name: CategoricalEncoder.fit(c) for name, c in counts.items()}
        return self

    def encode(self, batch: pd.DataFrame) -> np.ndarray:
        raw = self.raw_fields(batch)
        return np.stack([self.encoders[f.name].transform(raw[f.name]) for f in self.fields], axis=1).astype(np.int64)

    @property
    def cardinalities(self) -> list[int]:
        return [self.encoders[f.name].cardinality for f in self.fields]

    def to_json(self) -> dict[str, Any]:
        return {
            "fields": [f.__dict__ for f in self.fields],
            "tag_rank": self.tag_rank,
            "encoders": {k: e.to_json() for k, e in self.encoders.items()},
        }


def batch_indices(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> Iterator[np.ndarray]:
    """Row indices of each batch; the order depends only on (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def tensor_batches(
    split: EncodedSplit, columns: Sequence[str], batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> Iterator[tuple[torch.Tensor, ...]]:
    """``(x, *columns)`` tensors per batch, in the (seed, epoch) order."""
    x = torch.from_numpy(split.x)
    cols = [torch.from_numpy(np.ascontiguousarray(split.columns[c])) for c in columns]
    for idx in batch_indices(len(split), batch_size, seed, epoch, shuffle):
        t = torch.from_numpy(idx)
        yield (x.index_select(0, t), *(c.index_select(0, t) for c in cols))


def kuairand_side_fields(interactions: str) -> tuple[FieldSpec, ...]:
    """The pre-impression fields of the KuaiRand inputs: ids from ``interactions`` (the table of
    rows), the item and user side fields from ``items`` and ``users`` (a field whose column a
    source lacks is left out by the trainers)."""
    return (
        FieldSpec("user_id", interactions, "user_id"),
        FieldSpec("item_id", interactions, "item_id"),
        FieldSpec("author_id", "items", "author_id"),
        FieldSpec("music_id", "items", "music_id"),
        FieldSpec("tag_pop", "items", "tag", "most_frequent_tag"),
        FieldSpec("video_type", "items", "video_type"),
        FieldSpec("upload_type", "items", "upload_type"),
        FieldSpec("user_active_degree", "users", "user_active_degree"),
        FieldSpec("follow_user_num_range", "users", "follow_user_num_range"),
        FieldSpec("fans_user_num_range", "users", "fans_user_num_range"),
        FieldSpec("friend_user_num_range", "users", "friend_user_num_range"),
        FieldSpec("register_days_range", "users", "register_days_range"),
    )


#: The ``items`` and ``users`` dimensions, keyed by their id columns.
KUAIRAND_DIMENSIONS = {
    ITEMS.name: Dimension(ITEMS, "item_id", "item_id"),
    USERS.name: Dimension(USERS, "user_id", "user_id"),
}


def encoders_record(encoder: "FieldEncoder", table: str, window) -> dict:
    """A run's ``encoders.json``: the fitted vocabularies and what they were fitted on (the
    table and its training window of days; statistics never see later days)."""
    return {**encoder.to_json(), "fitted_on": {"table": table, "window": [d.isoformat() for d in window]}}

