"""Read ``user_sequences`` into padded NumPy arrays and PyTorch batches (no Spark).

The table (``features/sequences.py``, ``docs/sequences.md``) holds one row per target event
with the user's earlier events as lists of string ids and UTC timestamps. A trainer needs fixed
width integer arrays instead; this module provides:

* :class:`ItemVocab`: string ``item_id`` <-> int64 index, fitted on the *training* split only
  and saved with the model (:meth:`ItemVocab.to_dict` / :meth:`ItemVocab.from_dict`).
  Index ``0`` is padding, ``1`` is the out-of-vocabulary id (an item never seen in training,
  which can only happen in ``valid`` / ``test`` rows), known items are ``2 ..`` in sorted
  ``item_id`` order.
* :func:`read_sequences`: streams the committed table (:mod:`trainers.tables`, schema-checked
  against the ``user_sequences`` contract) into
  :class:`SequenceBatch` objects of at most ``batch_rows`` rows: int64 item ids, float64
  timestamps in seconds, boolean masks, left- or right-padded to ``max_len`` (longer histories
  keep their most recent ``max_len`` events), optionally with RoTE levels from
  :mod:`features.sequences.rote`.
* :class:`SequenceDataset`: the same stream as a PyTorch ``IterableDataset`` of tensor dicts.

Memory is bounded by one record batch plus its padded arrays (``batch_rows * max_len``
elements per array); nothing holds the whole table.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from features.contracts import TableContract
from features.sequences import SPLITS, USER_SEQUENCES, rote
from trainers.tables import open_table

PAD = 0
OOV = 1
FIRST_ITEM = 2
PADDINGS = ("left", "right")
#: ``rote=`` choices of :func:`read_sequences`: the SASRec continuous form or exact calendar ids.
ROTE_FORMS = ("sasrec", "calendar")


@dataclass(frozen=True)
class ItemVocab:
    """String item ids <-> int64 indices (0 = padding, 1 = unknown, known items from 2).

    ``fitted_on`` records where the vocabulary came from (table, version, split), as every
    fitted statistic must.
    """

    item_ids: tuple[str, ...]
    fitted_on: dict = field(default_factory=dict)

    def __post_init__(self):
        if list(self.item_ids) != sorted(set(self.item_ids)):
            raise ValueError("item_ids must be sorted and unique")
        object.__setattr__(self, "_index", pd.Index(list(self.item_ids), dtype=object))

    @property
    def size(self) -> int:
        """Rows an embedding table needs: padding + unknown + known items."""
        return len(self.item_ids) + FIRST_ITEM

    def encode(self, ids) -> np.ndarray:
        """int64 indices of string ids (unknown -> :data:`OOV`)."""
        values = np.asarray(ids, dtype=object)
        if values.size == 0:
            return np.zeros(values.shape, np.int64)
        pos = self._index.get_indexer(values.ravel()).reshape(values.shape)
        return np.where(pos >= 0, pos + FIRST_ITEM, OOV).astype(np.int64)

    def decode(self, indices) -> list[str | None]:
        """String ids of indices (``None`` for padding and unknown)."""
        out = []
        for i in np.asarray(indices, dtype=np.int64).ravel():
            out.append(self.item_ids[i - FIRST_ITEM] if i >= FIRST_ITEM else None)
        return out

    def to_dict(self) -> dict:
        return {"item_ids": list(self.item_ids), "fitted_on": dict(self.fitted_on), "pad": PAD, "oov": OOV}

    @classmethod
    def from_dict(cls, data: dict) -> ItemVocab:
        return cls(tuple(data["item_ids"]), dict(data.get("fitted_on", {})))

    @classmethod
    def fit(
        cls, root: str, table: TableContract = USER_SEQUENCES, version: int | None = None, split: str = "train",
        batch_rows: int = 65_536,
    ) -> ItemVocab:
        """Every item id in the ``split`` rows (targets and histories) of a committed table."""
        snap = open_table(root, table, version)
        seen: set[str] = set()
        cols = ["target_item_id", "hist_item_ids", "split"]
        for batch in snap.batches(cols, batch_rows=batch_rows):
            keep = pc.equal(batch.column("split"), split)
            rows = batch.filter(keep)
            if rows.num_rows == 0:
                continue
            seen.update(pc.unique(rows.column("target_item_id")).to_pylist())
            seen.update(pc.unique(pc.list_flatten(rows.column("hist_item_ids"))).to_pylist())
        seen.discard(None)
        return cls(tuple(sorted(seen)), {"table": table.name, "version": snap.version, "split": split})


@dataclass
class SequenceBatch:
    """Padded arrays for ``rows`` table rows, positions ``0 .. max_len - 1``.

    ``item_ids`` int64 [rows, max_len] (0 at pads, 1 for unknown items); ``ts_s`` float64
    [rows, max_len], seconds since the epoch (whole seconds, 0 at pads); ``mask`` bool
    [rows, max_len] (True = real event); ``hist_len`` int64 [rows], real positions after
    truncation; ``target_item_id`` int64 [rows]; ``target_ts_s`` float64 [rows];
    ``user_id`` / ``event_id`` / ``split`` object [rows]; ``seq_pos`` int64 [rows];
    ``levels``: RoTE level arrays ``[rows, max_len]`` (0 at pads) when asked for.
    """

    item_ids: np.ndarray
    ts_s: np.ndarray
    mask: np.ndarray
    hist_len: np.ndarray
    target_item_id: np.ndarray
    target_ts_s: np.ndarray
    user_id: np.ndarray
    event_id: np.ndarray
    seq_pos: np.ndarray
    split: np.ndarray
    levels: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The numeric arrays as tensors (names as the fields; levels as ``level_<name>``)."""
        out = {
            "item_ids": torch.from_numpy(self.item_ids),
            "ts_s": torch.from_numpy(self.ts_s),
            "mask": torch.from_numpy(self.mask),
            "hist_len": torch.from_numpy(self.hist_len),
            "target_item_id": torch.from_numpy(self.target_item_id),
            "target_ts_s": torch.from_numpy(self.target_ts_s),
            "seq_pos": torch.from_numpy(self.seq_pos),
        }
        for name, arr in self.levels.items():
            out[f"level_{name}"] = torch.from_numpy(np.ascontiguousarray(arr))
        return out


def pad_lists(
    offsets: np.ndarray, values: np.ndarray, max_len: int, padding: str = "left", fill=0
) -> tuple[np.ndarray, np.ndarray]:
    """Lists given as Arrow-style ``offsets`` into ``values`` -> ([rows, max_len], mask).

    Each list keeps its last ``max_len`` elements, in order; ``left`` puts them at the end of
    the row (pads first), ``right`` at the start (pads last).
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    kept = np.minimum(lengths, max_len)
    n = lengths.shape[0]
    out = np.full((n, max_len), fill, dtype=values.dtype)
    mask = np.zeros((n, max_len), dtype=bool)
    total = int(kept.sum())
    if total:
        rows = np.repeat(np.arange(n), kept)
        j = np.arange(total) - np.repeat(np.cumsum(kept) - kept, kept)  # 0 .. kept-1 within a row
        src = np.repeat(offsets[1:] - kept, kept) + j
        cols = j + np.repeat(max_len - kept, kept) if padding == "left" else j
        out[rows, cols] = values[src]
        mask[rows, cols] = True
    return out, mask


def _list_parts(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Offsets (nulls as empty lists) and the child values of a list column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    column = pc.fill_null(column, pa.scalar([], column.type)) if column.null_count else column
    offsets = column.offsets.to_numpy().astype(np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    return offsets - start, column.values.slice(start, end - start)


def rote_levels(
    ts_s: np.ndarray, mask: np.ndarray, form: str, calendar_levels: Iterable[str] = rote.PAPER_LEVELS,
    relative: bool = False,
) -> dict[str, np.ndarray]:
    """RoTE level arrays of padded timestamps, computed by :mod:`features.sequences.rote` (0 at pads).

    ``sasrec``: float64 ``days_f``, ``months_f``, ``years_f`` since the epoch;
    ``calendar``: int64 ``<level>_id`` (``relative``: minus the row's first real position).
    """
    ints = np.asarray(ts_s).astype(np.int64)
    if form == "sasrec":
        return rote.sasrec_levels(ints, mask=mask)
    if form == "calendar":
        ids = rote.calendar_ids(ints, calendar_levels, mask=mask)
        return {k: rote.relative_to_first(v, mask) for k, v in ids.items()} if relative else ids
    raise ValueError(f"unknown RoTE form {form!r}; choose from {ROTE_FORMS}")


def batch_from_arrow(
    batch: pa.RecordBatch, vocab: ItemVocab, max_len: int, padding: str = "left", rote_form: str | None = None,
    calendar_levels: Iterable[str] = rote.PAPER_LEVELS, relative: bool = False,
) -> SequenceBatch:
    """One record batch of ``user_sequences`` -> a :class:`SequenceBatch`."""
    item_off, item_vals = _list_parts(batch.column("hist_item_ids"))
    ts_off, ts_vals = _list_parts(batch.column("hist_ts"))
    if not np.array_equal(item_off, ts_off):
        raise ValueError("hist_item_ids and hist_ts are not aligned (contract invariant broken)")
    items, mask = pad_lists(item_off, vocab.encode(item_vals.to_numpy(zero_copy_only=False)), max_len, padding)
    secs = rote.to_epoch_seconds(ts_vals) if len(ts_vals) else np.zeros(0, np.int64)
    ts, _ = pad_lists(ts_off, secs.astype(np.float64), max_len, padding, fill=0.0)
    target_ts = rote.to_epoch_seconds(batch.column("target_ts")).astype(np.float64)
    levels = rote_levels(ts, mask, rote_form, calendar_levels, relative) if rote_form else {}
    return SequenceBatch(
        item_ids=items,
        ts_s=ts,
        mask=mask,
        hist_len=mask.sum(axis=1).astype(np.int64),
        target_item_id=vocab.encode(batch.column("target_item_id").to_numpy(zero_copy_only=False)),
        target_ts_s=target_ts,
        user_id=batch.column("user_id").to_numpy(zero_copy_only=False),
        event_id=batch.column("event_id").to_numpy(zero_copy_only=False),
        seq_pos=batch.column("seq_pos").to_numpy(zero_copy_only=False).astype(np.int64),
        split=batch.column("split").to_numpy(zero_copy_only=False),
        levels=levels,
    )


READ_COLUMNS = ["event_id", "user_id", "target_item_id", "target_ts", "hist_item_ids", "hist_ts", "seq_pos", "split"]


def read_sequences(
    root: str,
    vocab: ItemVocab,
    max_len: int = 50,
    padding: str = "left",
    splits: Iterable[str] | None = None,
    rote_form: str | None = None,
    calendar_levels: Iterable[str] = rote.PAPER_LEVELS,
    relative: bool = False,
    where: Callable[[pa.RecordBatch], np.ndarray] | None = None,
    version: int | None = None,
    batch_rows: int = 4_096,
    table: TableContract = USER_SEQUENCES,
) -> Iterator[SequenceBatch]:
    """Stream a committed ``user_sequences`` version as padded batches of at most ``batch_rows``.

    ``splits``: keep only these splits; ``where``: an extra row filter (a boolean array per
    record batch); ``rote_form``: add :func:`rote_levels` arrays. Row order is the table's
    file order (by ``target_date`` partition), not a user order.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    wanted = None if splits is None else set(splits)
    if wanted is not None and not wanted <= set(SPLITS):
        raise ValueError(f"unknown split(s) {sorted(wanted - set(SPLITS))}; choose from {SPLITS}")
    for rb in open_table(root, table, version).batches(READ_COLUMNS, batch_rows=batch_rows):
        keep = np.ones(rb.num_rows, dtype=bool)
        if wanted is not None:
            keep &= np.isin(rb.column("split").to_numpy(zero_copy_only=False), list(wanted))
        if where is not None:
            keep &= np.asarray(where(rb), dtype=bool)
        if not keep.all():
            rb = rb.filter(pa.array(keep))
        if rb.num_rows:
            yield batch_from_arrow(rb, vocab, max_len, padding, rote_form, calendar_levels, relative)


class SequenceDataset(torch.utils.data.IterableDataset):
    """:func:`read_sequences` as an ``IterableDataset`` of tensor dicts (one per batch).

    Use with ``DataLoader(dataset, batch_size=None)``; each item is already a batch of at most
    ``batch_rows`` rows. With several workers, worker ``w`` of ``n`` takes every ``n``-th batch.
    """

    def __init__(self, root: str, vocab: ItemVocab, **read_kwargs):
        super().__init__()
        self.root, self.vocab, self.read_kwargs = root, vocab, read_kwargs
        self.version = open_table(root, read_kwargs.get("table", USER_SEQUENCES), read_kwargs.get("version")).version
        self.read_kwargs["version"] = self.version

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        for i, batch in enumerate(read_sequences(self.root, self.vocab, **self.read_kwargs)):
            if info is None or i % info.num_workers == info.id:
                yield batch.tensors()
