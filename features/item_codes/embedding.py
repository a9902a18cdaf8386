"""Item embeddings for semantic IDs: co-occurrence (behaviour) and content (attributes).

Pure NumPy / SciPy, no I/O. Both return float64 ``[n_items, dim]`` rows in the order of the
``item_ids`` given.

* :func:`cooccurrence_embedding`: the positive pointwise mutual information (PPMI) of the
  item-item co-occurrence counts ``C = Xᵀ X`` of the binary user-item matrix ``X`` (distinct
  users per pair), factorised by its leading eigenvectors, each scaled by ``sqrt(eigenvalue)``
  (the SVD form of word2vec's implicit factorisation, Levy and Goldberg 2014). Items that
  co-occur with nobody get the zero vector (they are separated by the disambiguation token).
  Deterministic: ``eigsh`` starts from a fixed vector; each eigenvector's sign is fixed so its
  largest-magnitude entry is positive.
* :func:`content_embedding`: numeric attributes standardised (training mean and std), string
  attributes one-hot encoded over their ``max_categories`` most frequent values (comma-separated
  lists count each element), missing values 0.

Choices of ours (no FAIR code is public; docs/fair.md): PPMI + eigendecomposition rather than
a text encoder (the shared data have no item text) or a learned two-tower model; ``dim`` 32.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def cooccurrence_embedding(users: np.ndarray, items: np.ndarray, n_items: int, dim: int = 32) -> np.ndarray:
    """PPMI eigen-embedding of items from (user index, item index) pairs (duplicates ignored)."""
    from scipy import sparse
    from scipy.sparse.linalg import eigsh

    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    out = np.zeros((n_items, dim), np.float64)
    if len(users) == 0 or n_items == 0:
        return out
    n_users = int(users.max()) + 1
    x = sparse.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items))
    x.data[:] = 1.0  # duplicates summed by csr -> binary
    x.sum_duplicates()
    x.data[:] = 1.0
    c = (x.T @ x).tocsr().astype(np.float64)
    c.setdiag(0.0)
    c.eliminate_zeros()
    if c.nnz == 0:
        return out
    row = np.asarray(c.sum(axis=1)).ravel()
    total = row.sum()
    coo = c.tocoo()
    pmi = np.log(coo.data * total / (row[coo.row] * row[coo.col]))
    keep = pmi > 0
    m = sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(n_items, n_items))
    k = min(dim, n_items - 1)
    if m.nnz == 0 or k < 1:
        return out
    if n_items <= 2_000 or k >= n_items - 1:
        vals, vecs = np.linalg.eigh(m.toarray())
        order = np.argsort(vals)[::-1][:k]
        vals, vecs = vals[order], vecs[:, order]
    else:
        vals, vecs = eigsh(m, k=k, which="LA", v0=np.ones(n_items) / np.sqrt(n_items), tol=1e-8)
        order = np.argsort(vals)[::-1]
        vals, vecs = vals[order], vecs[:, order]
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    emb = vecs * signs * np.sqrt(np.clip(vals, 0.0, None))
    out[:, : emb.shape[1]] = emb
    return out


def content_embedding(frame: pd.DataFrame, item_ids: np.ndarray, exclude: tuple[str, ...] = ("item_id", "source"),
                      max_categories: int = 32) -> np.ndarray:
    """Standardised numeric and one-hot string attributes of ``item_ids`` (rows of ``frame`` by
    its ``item_id`` column); an item without a row gets zeros."""
    frame = frame.drop_duplicates("item_id").set_index("item_id").reindex(pd.Index(item_ids, dtype=object))
    blocks: list[np.ndarray] = []
    for name in sorted(c for c in frame.columns if c not in exclude):
        col = frame[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            v = col.astype(np.float64).to_numpy()
            ok = np.isfinite(v)
            if ok.sum() < 2:
                continue
            mu, sd = v[ok].mean(), v[ok].std()
            blocks.append(np.where(ok, (v - mu) / (sd if sd > 0 else 1.0), 0.0)[:, None])
        else:
            lists = col.astype("string").fillna("").str.split(",")
            counts = pd.Series([t.strip() for ts in lists for t in ts if t.strip()]).value_counts()
            top = sorted(counts.index[:max_categories], key=lambda t: (-counts[t], t))
            if not top:
                continue
            pos = {t: j for j, t in enumerate(top)}
            block = np.zeros((len(frame), len(top)))
            for i, ts in enumerate(lists):
                for t in ts:
                    j = pos.get(t.strip())
                    if j is not None:
                        block[i, j] = 1.0
            blocks.append(block)
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(item_ids), 0))


def combine(blocks: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Weighted concatenation of blocks, each first scaled to unit mean row norm."""
    out = []
    for block, weight in blocks:
        if block.shape[1] == 0:
            continue
        norm = np.linalg.norm(block, axis=1).mean()
        out.append(block * (weight / norm if norm > 0 else 0.0))
    n = blocks[0][0].shape[0] if blocks else 0
    return np.concatenate(out, axis=1) if out else np.zeros((n, 0))
