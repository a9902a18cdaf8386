"""Look-alike users for Recall-Augmented Ranking (RAR): ``user_vectors`` and ``lookalike_users``.

RAR (Huang et al., WWW'24) enriches a ranking model's view of a user with look-alike users
(u2u) and recall-stage items (i2i, ``features/recall/kernels.py``). Its public text describes SimHash
selection (random-hyperplane signatures compared group by group) and a top-k; no code is
public. The details chosen here are documented in ``docs/lookalike.md``:

* **user vector** (as of a cutoff): an L2-normalised profile block (numeric attributes
  ``sign(x)·log1p(|x|)`` then z-scored; categorical attributes one-hot over their most frequent
  values) times ``profile_weight``, concatenated with an L2-normalised behaviour block (implicit
  ALS, NumPy in the driver or Spark ML by ``als_engine``, :mod:`features.lookalike.als`, on the
  positive events *strictly before* the cutoff) times
  ``behaviour_weight``; the concatenation is L2-normalised, so cosine = dot product and
  ``cos = (wp²·cos_profile + wb²·cos_behaviour) / (wp² + wb²)`` for users with both blocks.
* **hashing space**: the vectors are centred on their mean and projected on their
  ``projection_dims`` leading principal directions (fitted on a seeded sample of users) before
  hashing, so the hyperplanes cut where users differ rather than through a component every
  user shares; 0 hashes the raw vectors. Re-ranking always uses the exact cosine of the stored
  vectors.
* **candidates**: SimHash bands. ``bands`` groups of ``bits_per_band`` random hyperplanes
  (seeded Gaussian); a user's band key is the integer of its sign bits (a bucket). Each band
  sorts all users by (bucket, projection on one more random direction of the band, user id):
  users in the same bucket, and buckets sharing a long prefix of bits, are adjacent. A user's
  candidates are the ``window`` users on each side of it in every band: at most
  ``2·window·bands`` per user, linear in the number of users (this is also the cap on the
  bucket share: a bucket larger than ``2·window`` is only compared within the window).
* **HNSW candidates** (the default engine, :mod:`features.lookalike.hnsw`): a faiss
  ``IndexHNSWFlat`` (inner product) built once over every user, broadcast serialized and
  queried per Spark partition; a user's candidates are the search's ``max(ef_search, k + 1)``
  results, re-ranked as below.
* **re-ranking**: exact cosine of every candidate, the top ``k`` kept by similarity
  descending, then ``neighbor_user_id`` ascending (similarities rounded to 1e-12 so that the
  order does not depend on floating-point summation order).
* **recall estimate**: two disjoint seeded samples of ``recall_sample`` users get their exact
  top ``k`` by brute force (linear in users). With ``auto_bands`` (the default), bands are added
  (doubling the count; each band has its own seeded hyperplanes, so the bands already built are
  kept) until the recall on the *selection* sample reaches ``target_recall`` or ``max_bands``
  would be exceeded. The recall reported is measured on the other, *held-out* sample, which
  chose nothing.

Pure DataFrame-to-DataFrame functions; no I/O. The definitions live in
:mod:`features.lookalike.vectors` (events before the cutoff, user vectors) and
:mod:`features.lookalike.lsh` (hashing, candidates, re-ranking, recall) and
:mod:`features.lookalike.hnsw` (the HNSW engine); every name is importable from here.
"""
from __future__ import annotations

from features.lookalike.hnsw import HnswParams, build_index, hnsw_recall, hnsw_topk, rank_block, vectors_matrix
from features.lookalike.lsh import (
    PCA_FIT_ROWS,
    SIM_DECIMALS,
    LshParams,
    band_keys,
    band_orders,
    exact_kth,
    hash_projection,
    hyperplanes,
    lookalike_topk,
    pairs_evaluated,
    recall_samples,
    sampled_recall,
    signatures,
    top_by_similarity,
    window_candidates,
)
from features.lookalike.vectors import (
    VectorParams,
    before_cutoff,
    behaviour_embedding,
    build_user_vectors,
    encode_profiles,
    positive_column,
    profile_columns,
)
from features.timeutil import as_utc

__all__ = [
    "PCA_FIT_ROWS", "SIM_DECIMALS", "HnswParams", "LshParams", "VectorParams", "as_utc", "band_keys", "band_orders",
    "before_cutoff", "behaviour_embedding", "build_index", "build_user_vectors", "encode_profiles", "exact_kth",
    "hash_projection", "hnsw_recall", "hnsw_topk", "hyperplanes", "lookalike_topk", "pairs_evaluated", "positive_column", "profile_columns", "rank_block",
    "recall_samples", "sampled_recall", "signatures", "top_by_similarity", "vectors_matrix", "window_candidates",
]  # fmt: skip
