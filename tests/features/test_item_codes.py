"""Semantic IDs: residual k-means by hand, disambiguation, determinism, the embeddings, real data."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.item_codes import ITEM_CODES
from features.item_codes import quantize
from features.item_codes.embedding import combine, content_embedding, cooccurrence_embedding
from features.item_codes.kernels import CodeParams, assign_codes, item_codes_table
from features.item_codes.quantize import disambiguate, residual_kmeans, semantic_ids

CUTOFF = dt.datetime(2022, 4, 18, tzinfo=dt.timezone.utc)
BACKENDS = ["numpy"] + (["faiss"] if quantize.faiss_available() else [])


def test_residual_kmeans_by_hand(backend="numpy"):
    # two far clusters (x = 0 and x = 10), each split by y = 0 / 1: level 0 finds the clusters,
    # level 1 the +-0.5 residuals, the same for both clusters
    x = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    codes, books, used = residual_kmeans(x, levels=2, codebook_size=2, seed=1, backend=backend)
    assert used == backend
    assert codes[0, 0] == codes[1, 0] != codes[2, 0] == codes[3, 0]
    assert codes[0, 1] == codes[2, 1] != codes[1, 1] == codes[3, 1]
    recon = books[0][codes[:, 0]] + books[1][codes[:, 1]]
    np.testing.assert_allclose(recon, x, atol=1e-5)


@pytest.mark.skipif("faiss" not in BACKENDS, reason="faiss-cpu is not installed (optional)")
def test_faiss_codes_are_valid_and_reconstruct_as_well_as_numpy_on_clustered_data():
    # faiss seeds k-means with random points (no k-means++), so its partition may differ from
    # NumPy's; both must be valid and the residual after 3 levels small for both
    rng = np.random.default_rng(4)
    x = np.repeat(rng.normal(scale=10, size=(8, 4)), 25, axis=0) + rng.normal(scale=0.1, size=(200, 4))
    errs = {}
    for backend in ("numpy", "faiss"):
        codes, books, _ = residual_kmeans(x, 3, 8, seed=3, backend=backend)
        assert ((codes >= 0) & (codes < 8)).all()
        recon = sum(books[j][codes[:, j]] for j in range(3))
        errs[backend] = float(((recon - x) ** 2).sum(1).mean())
    assert errs["faiss"] < 0.5 * float((x - x.mean(0)).var(0).sum()) and errs["numpy"] < 0.1


def test_disambiguation_by_hand():
    ids = np.array(["b", "a", "c", "d"], dtype=object)
    codes = np.array([[0, 0], [0, 0], [1, 0], [0, 0]])
    assert disambiguate(ids, codes).tolist() == [1, 0, 0, 2]  # a, b, d share (0, 0): ranks by item_id
    assert semantic_ids(codes, disambiguate(ids, codes)) == ["0-0-1", "0-0-0", "1-0-0", "0-0-2"]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(1, 3), st.integers(2, 8), st.integers(0, 1_000), st.booleans())
def test_every_item_gets_a_unique_in_range_code_sequence(n, levels, size, seed, duplicates):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    if duplicates:  # identical embeddings must still get distinct sequences
        x[n // 2:] = x[0]
    ids = np.array([f"i{i:03d}" for i in range(n)], dtype=object)
    codes, dis, _, _ = assign_codes(ids, x, CodeParams(levels=levels, codebook_size=size, seed=seed, backend="numpy"))
    assert codes.shape == (n, levels) and ((codes >= 0) & (codes < size)).all()
    full = {tuple(c) + (d,) for c, d in zip(codes.tolist(), dis.tolist())}
    assert len(full) == n


@pytest.mark.parametrize("backend", BACKENDS)
def test_code_assignment_is_deterministic_for_a_seed_and_independent_of_input_order(backend):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    ids = np.array([f"i{i}" for i in range(300)], dtype=object)
    params = CodeParams(levels=3, codebook_size=16, seed=7, backend=backend)
    a, b = item_codes_table(ids, x, params, "cooccurrence", CUTOFF)[0], item_codes_table(ids, x, params, "cooccurrence", CUTOFF)[0]
    assert a.equals(b)
    perm = rng.permutation(300)
    c = item_codes_table(ids[perm], x[perm], params, "cooccurrence", CUTOFF)[0]
    by_id = dict(zip(c.column("item_id").to_pylist(), c.column("semantic_id").to_pylist()))
    assert by_id == dict(zip(a.column("item_id").to_pylist(), a.column("semantic_id").to_pylist()))
    assert len(set(a.column("codebook_version").to_pylist())) == 1
    other = item_codes_table(ids, x, CodeParams(levels=3, codebook_size=16, seed=8, backend=backend), "cooccurrence", CUTOFF)[0]
    assert other.column("codebook_version")[0] != a.column("codebook_version")[0]  # the version names the seed


def test_the_table_conforms_to_its_contract():
    x = np.random.default_rng(1).normal(size=(20, 4))
    table, stats = item_codes_table(np.array([f"i{i}" for i in range(20)], object), x,
                                    CodeParams(levels=2, codebook_size=4, backend="numpy"), "content", CUTOFF)
    ITEM_CODES.validate_schema(table.schema)
    assert table.num_rows == 20 and stats["codes_used_per_level"] == [4, 4]
    assert set(table.column("cutoff_ts").to_pylist()) == {CUTOFF}


def test_without_faiss_auto_falls_back_to_numpy_and_faiss_is_refused(monkeypatch):
    monkeypatch.setattr(quantize, "faiss_available", lambda: False)
    x = np.random.default_rng(2).normal(size=(40, 3))
    assert residual_kmeans(x, 2, 4, seed=0, backend="auto")[2] == "numpy"
    with pytest.raises(ImportError, match="faiss-cpu"):
        residual_kmeans(x, 2, 4, seed=0, backend="faiss")


def test_fewer_distinct_points_than_codes_uses_as_many_centroids():
    x = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 2)
    codes, books, _ = residual_kmeans(x, 2, 256, seed=0, backend="numpy")
    assert books[0].shape[0] == 2 and books[1].shape[0] == 1 and len(np.unique(codes[:, 0])) == 2


def ppmi_reference(users, items, n_items):
    """Plain NumPy PPMI of distinct-user co-occurrence counts (the spec of the kernel)."""
    x = np.zeros((max(users) + 1, n_items))
    x[users, items] = 1.0
    c = x.T @ x
    np.fill_diagonal(c, 0.0)
    row = c.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(c * c.sum() / np.outer(row, row))
    return np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)


def test_cooccurrence_embedding_factorises_the_ppmi_matrix():
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 40, 300), rng.integers(0, 12, 300)
    emb = cooccurrence_embedding(users, items, 12, dim=11)
    ref = ppmi_reference(users, items, 12)
    vals, vecs = np.linalg.eigh(ref)
    pos = np.clip(vals, 0, None)
    np.testing.assert_allclose(emb @ emb.T, (vecs * pos) @ vecs.T, atol=1e-8)
    # items co-occurring with nobody are zero; duplicates of a pair change nothing
    np.testing.assert_allclose(cooccurrence_embedding(np.r_[users, users], np.r_[items, items], 12, 11), emb)


def test_cooccurrence_puts_items_bought_together_together():
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    items = np.array([0, 1, 0, 1, 2, 3, 2, 3, 0, 1])
    emb = cooccurrence_embedding(users, items, 4, dim=2)
    cos = emb @ emb.T / np.outer(np.linalg.norm(emb, axis=1), np.linalg.norm(emb, axis=1))
    assert cos[0, 1] > 0.99 and cos[2, 3] > 0.99 and abs(cos[0, 2]) < 0.01


def test_content_embedding_by_hand():
    frame = pd.DataFrame({"item_id": ["a", "b", "c"], "source": ["s"] * 3, "year": [1990.0, 2000.0, None],
                          "genre": ["x,y", "y", None]})
    emb = content_embedding(frame, np.array(["a", "b", "c", "zz"], object))
    # genre one-hot (y then x, by count), then year standardised over the two known values
    np.testing.assert_allclose(emb, [[1, 1, -1], [1, 0, 1], [0, 0, 0], [0, 0, 0]])
    both = combine([(emb, 1.0), (np.ones((4, 2)), 2.0)])
    assert both.shape == (4, 5)


def test_codes_on_ml100k_are_unique_and_deterministic():
    from tests.conftest import shared_data

    path = shared_data("ml-100k") / "ml-100k.inter"
    df = pd.read_csv(path, sep="\t")
    df.columns = [c.split(":")[0] for c in df.columns]
    ids, item_idx = np.unique(df["item_id"].astype(str).to_numpy(), return_inverse=True)
    user_idx = pd.factorize(df["user_id"])[0]
    emb = cooccurrence_embedding(user_idx, item_idx, len(ids), dim=32)
    # parity of the co-occurrence counts with pandas on one pair
    a, b = 0, 1
    ua, ub = set(df.loc[item_idx == a, "user_id"]), set(df.loc[item_idx == b, "user_id"])
    ref = ppmi_reference(user_idx, item_idx, len(ids))
    assert (ref[a, b] > 0) == (len(ua & ub) > 0 and ref[a, b] > 0)
    params = CodeParams(levels=4, codebook_size=256, seed=5, backend="numpy")
    t1, stats = item_codes_table(ids.astype(object), emb, params, "cooccurrence", CUTOFF)
    t2, _ = item_codes_table(ids.astype(object), emb, params, "cooccurrence", CUTOFF)
    assert t1.equals(t2) and stats["items"] == 1682
    assert len(set(t1.column("semantic_id").to_pylist())) == 1682
