"""Semantic IDs for the FAIR trainer: the ``item_codes`` table as arrays, the prefix trie and
constrained beam search (docs/fair.md).

A semantic ID is ``K = levels + 1`` tokens (the k-means codes, then the disambiguation token);
token ``j`` of every item lies in ``[0, sizes[j])``. :class:`CodeBook` maps the trainer's item
vocabulary indices (``trainers.sequences.ItemVocab``) to their tokens; an item without a row in
``item_codes`` (and padding, unknown) has ``-1`` everywhere and can never be generated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features.item_codes import ITEM_CODES
from trainers.sequences import ItemVocab
from trainers.tables import open_table


@dataclass
class CodeBook:
    """``codes`` int64 [vocab.size, K] (-1: no code), ``sizes`` tokens per level, the version read."""

    codes: np.ndarray
    sizes: tuple[int, ...]
    table_version: int | None = None
    codebook_version: str = ""
    trie: "PrefixTrie" = field(init=False)

    def __post_init__(self):
        self.trie = PrefixTrie(self.codes)

    @property
    def levels(self) -> int:
        return int(self.codes.shape[1])

    @property
    def coded(self) -> np.ndarray:
        """bool [vocab.size]: items that have a semantic ID."""
        return self.codes[:, 0] >= 0

    @classmethod
    def from_rows(cls, vocab: ItemVocab, item_ids, codes, disambiguation, **kw) -> "CodeBook":
        full = np.array([list(c) + [d] for c, d in zip(codes, disambiguation)], dtype=np.int64).reshape(len(item_ids), -1)
        out = np.full((vocab.size, full.shape[1]), -1, np.int64)
        idx = vocab.encode(np.asarray(item_ids, dtype=object))
        known = idx >= 2
        out[idx[known]] = full[known]
        if (full < 0).any():
            raise ValueError("item_codes holds a negative code")
        sizes = tuple(int(v) + 1 for v in full.max(axis=0)) if len(full) else (1,) * full.shape[1]
        return cls(out, sizes, **kw)

    @classmethod
    def read(cls, root: str, vocab: ItemVocab, version: int | None = None) -> "CodeBook":
        """The committed ``item_codes`` (schema-checked against its contract) for ``vocab``."""
        snap = open_table(root, ITEM_CODES, version)
        ids, codes, dis, books = [], [], [], set()
        for b in snap.batches(["item_id", "codes", "disambiguation", "codebook_version"]):
            ids += b.column("item_id").to_pylist()
            codes += b.column("codes").to_pylist()
            dis += b.column("disambiguation").to_pylist()
            books.update(b.column("codebook_version").to_pylist())
        if not ids:
            raise ValueError("item_codes is empty: materialize item_codes first")
        return cls.from_rows(vocab, ids, codes, dis, table_version=snap.version, codebook_version=",".join(sorted(books)))


class PrefixTrie:
    """Children of every valid code prefix: ``children(prefix) -> sorted int64 tokens``; the
    leaf of a full sequence maps to its item index."""

    def __init__(self, codes: np.ndarray):
        self.levels = int(codes.shape[1])
        self._children: dict[tuple[int, ...], set[int]] = {}
        self.leaf: dict[tuple[int, ...], int] = {}
        for item in np.flatnonzero(codes[:, 0] >= 0):
            seq = tuple(int(v) for v in codes[item])
            if seq in self.leaf:
                raise ValueError(f"two items share the semantic ID {seq}")
            self.leaf[seq] = int(item)
            for j in range(self.levels):
                self._children.setdefault(seq[:j], set()).add(seq[j])
        self._sorted = {k: np.array(sorted(v), np.int64) for k, v in self._children.items()}

    def children(self, prefix: tuple[int, ...]) -> np.ndarray:
        return self._sorted.get(tuple(prefix), np.zeros(0, np.int64))


def beam_search(log_probs: list[np.ndarray], trie: PrefixTrie, beam: int, k: int,
                exclude: set[int] | frozenset[int] = frozenset()) -> list[tuple[int, float]]:
    """The ``k`` best items (item index, summed log-probability) for one row.

    ``log_probs[j]``: float [sizes[j]], the row's log-probabilities of token ``j`` (parallel
    prediction: the tokens are scored independently, so a sequence's score is the sum). Only
    prefixes in ``trie`` are extended, so every returned sequence is a real item's semantic ID;
    items in ``exclude`` are dropped at the leaves. With ``beam`` at least the number of items
    this is exhaustive.
    """
    beams: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
    for j in range(trie.levels):
        last = j == trie.levels - 1
        cand: list[tuple[float, tuple[int, ...]]] = []
        for score, prefix in beams:
            kids = trie.children(prefix)
            if not len(kids):
                continue
            s = score + log_probs[j][kids]
            for tok, v in zip(kids.tolist(), s.tolist()):
                seq = prefix + (tok,)
                if last and trie.leaf[seq] in exclude:
                    continue
                cand.append((v, seq))
        cand.sort(key=lambda c: (-c[0], c[1]))
        beams = cand[: (max(beam, k) if last else beam)]
    return [(trie.leaf[seq], float(v)) for v, seq in beams[:k]]
