"""HNSW candidates of ``lookalike_users`` (faiss ``IndexHNSWFlat``, inner product), exact re-ranking, sampled recall.

The other candidate engine of ``lookalike_users`` (``lookalike.candidates: hnsw``; SimHash is
:mod:`features.lookalike.lsh`). One graph index over all users' unit vectors is built once in the
driver, serialized (``faiss.serialize_index``) and broadcast; Spark tasks query it for their own
range of users (``mapInArrow``), so the vectors never go through a Spark ``collect()``: the
caller passes the matrix it read from the committed ``user_vectors`` files.

Ranking is exactly the SimHash path's: a user's candidates are the users the graph search
returns (``max(ef_search, k + 1)`` of them, the search's whole result list), the user itself
removed; each gets its exact cosine in float64 from the stored float32 vectors, rounded to
``SIM_DECIMALS``, and the top ``k`` are kept by similarity descending, then user index
(= ``user_id`` order) ascending. A user for whom the graph returns fewer than ``k`` other users
(a graph that does not reach enough nodes) is ranked by brute force over every user instead,
so every user gets ``min(k, users - 1)`` distinct neighbours.

Identical vectors: users whose vectors are equal (bit for bit) share one index entry
(:func:`vector_groups`), and a returned entry stands for its users, the first ``k + 1`` of them
in ``user_id`` order (all a ranking by similarity, then id, can take from users of one
similarity). A graph over many copies of one point is a poor graph: with a large share of users
on one vector (profile-only users with the same profile, for example) the other users lost most
of their true neighbours when every copy was a node of its own.

Determinism: with ``threads == 1`` the vectors are added one by one in ``user_id`` order, and
faiss draws each node's level from its own fixed-seed generator, so the same vectors give the
same graph; a search is single-threaded per query and reads the graph only, so the rows do not
depend on the partitioning. ``threads > 1`` adds vectors in parallel: faster, but the graph (and
so possibly a few neighbours) may vary from run to run.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import numpy as np

from features.lookalike.lsh import SIM_DECIMALS, _finish, exact_kth, recall_samples

#: Most query rows per faiss search call inside a task.
QUERY_BLOCK = 2048
#: Most float64 entries of one block's (rows, candidates, dim) gather (128 MB).
GATHER_ENTRIES = 1 << 24
#: Users per Spark query task (at least the default parallelism tasks).
USERS_PER_TASK = 50_000
ROW_SCHEMA = "user_id string, rank int, neighbor_user_id string, similarity double, n_candidates long"


@dataclass(frozen=True)
class HnswParams:
    """HNSW candidates: a faiss ``IndexHNSWFlat`` with ``m`` links per node (``2·m`` on the
    bottom layer), built with ``ef_construction`` and searched with ``ef_search`` (the length of
    the search's candidate list; at least ``k``); ``threads`` OpenMP threads for the build in the
    driver (1: deterministic); the top ``k`` kept; ``recall_sample`` held-out users whose exact
    top-k is brute-forced to estimate recall@k (0 = off).

    ``auto_ef_search``: before the users are queried, ``ef_search`` is doubled until the recall@k
    of a *selection* sample (``recall_sample`` other users, disjoint from the held-out ones)
    reaches ``target_recall``, or until doubling would pass ``max_ef_search``; the graph is not
    rebuilt (``ef_search`` is a search-time setting). The recall reported is the held-out
    sample's, which chose nothing."""

    k: int = 50
    m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    threads: int = 1
    seed: int = 20220408
    recall_sample: int = 1000
    auto_ef_search: bool = True
    max_ef_search: int = 512
    target_recall: float = 0.95

    def validate(self) -> None:
        if self.k < 1 or self.m < 2 or self.ef_construction < 1 or self.threads < 1:
            raise ValueError("k >= 1, m >= 2, ef_construction >= 1 and threads >= 1 are required")
        if self.ef_search < self.k:
            raise ValueError(f"ef_search ({self.ef_search}) must be at least k ({self.k})")
        if self.recall_sample < 0:
            raise ValueError("recall_sample must be >= 0")
        if self.auto_ef_search and (self.recall_sample == 0 or self.max_ef_search < self.ef_search):
            raise ValueError("auto_ef_search needs recall_sample > 0 and max_ef_search >= ef_search")


def vectors_matrix(table) -> tuple[object, np.ndarray]:
    """``(ids, matrix)`` from an Arrow table with ``user_id`` and ``vector`` (list of float32):
    ``ids`` a pyarrow string array sorted ascending (byte order of UTF-8, as Spark sorts
    strings), ``matrix`` the float32 ``(n, dim)`` vectors in that order (C-contiguous).

    Every vector must have the same width (``size(vector) = profile_dim + behaviour_dim``)
    and finite values; otherwise ``ValueError``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    table = table.select(["user_id", "vector"]).combine_chunks()
    n = table.num_rows
    if n == 0:
        return pa.array([], pa.string()), np.zeros((0, 0), dtype=np.float32)
    order = pc.sort_indices(table, sort_keys=[("user_id", "ascending")])
    table = table.take(order)
    ids = table.column("user_id").combine_chunks()
    vec = table.column("vector").combine_chunks()
    lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
    dim = int(lengths[0])
    if (lengths != dim).any():
        raise ValueError(f"user_vectors holds vectors of several widths ({sorted(set(lengths.tolist()))[:5]}): "
                         "every user needs the same profile_dim + behaviour_dim")
    flat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    mat = np.ascontiguousarray(flat.reshape(n, dim))
    bad = ~np.isfinite(mat).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"user_vectors holds {int(bad.sum())} vector(s) with NaN or infinite values "
                         f"(first: user_id {ids[first].as_py()!r}): rebuild user_vectors")
    return ids, mat


@dataclass(frozen=True)
class VectorGroups:
    """Users with identical vectors, grouped: the index holds one *entry* per distinct vector.

    ``rep[u]``: user ``u``'s entry; the users of entry ``e`` are
    ``members[offsets[e]:offsets[e + 1]]``, ascending. Entries are numbered in the order of
    their first user, so without duplicates ``rep``, ``members`` are the identity."""

    rep: np.ndarray
    offsets: np.ndarray
    members: np.ndarray

    @property
    def entries(self) -> int:
        return len(self.offsets) - 1

    @property
    def largest(self) -> int:
        return int(np.diff(self.offsets).max()) if self.entries else 0


def vector_groups(mat: np.ndarray) -> tuple[np.ndarray, VectorGroups]:
    """``(entry matrix, groups)``: the distinct rows of ``mat`` (bitwise, in the order of their
    first row) and which users share each (:class:`VectorGroups`)."""
    n = len(mat)
    if n == 0:
        z = np.zeros(0, np.int64)
        return mat, VectorGroups(z, np.zeros(1, np.int64), z)
    mat = np.ascontiguousarray(mat)
    rows = mat.view(np.dtype((np.void, mat.dtype.itemsize * mat.shape[1]))).reshape(n)
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if len(first) == n:  # no duplicates: the identity
        ident = np.arange(n, dtype=np.int64)
        return mat, VectorGroups(ident, np.arange(n + 1, dtype=np.int64), ident)
    order = np.argsort(first, kind="stable")  # entries in the order of their first user
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    rep = renumber[inverse].astype(np.int64)
    members = np.argsort(rep, kind="stable").astype(np.int64)  # by entry, users ascending within
    offsets = np.zeros(len(first) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rep, minlength=len(first)), out=offsets[1:])
    return np.ascontiguousarray(mat[first[order]]), VectorGroups(rep, offsets, members)


def build_index(mat: np.ndarray, params: HnswParams):
    """The faiss ``IndexHNSWFlat`` (inner product) of the float32 rows of ``mat``, added in row
    order with ``params.threads`` OpenMP threads (1: the same graph on every run). The
    process-wide OpenMP thread count is restored afterwards."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(params.threads)
    try:
        index = faiss.IndexHNSWFlat(mat.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.add(np.ascontiguousarray(mat, dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(before)
    index.hnsw.efSearch = params.ef_search
    return index


def search_width(n: int, params: HnswParams) -> int:
    """How many index entries one search returns (the user's own usually among them): the
    search's whole candidate list, ``max(ef_search, k + 1)``, capped at the ``n`` entries."""
    return min(n, max(params.ef_search, params.k + 1))


def block_rows(n: int, dim: int, params: HnswParams) -> int:
    """Query rows per block: at most ``QUERY_BLOCK``, and at most ``GATHER_ENTRIES`` gathered
    candidate entries (rows · search width · dim), at least 1."""
    return max(1, min(QUERY_BLOCK, GATHER_ENTRIES // max(1, search_width(n, params) * dim)))


def rank_block(index, entries: np.ndarray, groups: VectorGroups, rows: np.ndarray, params: HnswParams):
    """Search users ``rows`` and re-rank: ``(neighbours (b, kk) int64, similarities (b, kk)
    float64, n_candidates (b,) int64)`` with ``kk = min(k, users - 1)``; ``entries`` are the
    index's vectors, ``groups`` which users each stands for (:func:`vector_groups`).

    Candidates are the users of the entries the search returns (at most ``kk + 1`` per entry,
    the first in id order), the user removed; similarities are the exact cosines
    ``round(entry · query, SIM_DECIMALS)`` in float64; order similarity descending, then user
    index ascending. A user with fewer than ``kk`` candidates is ranked over all users (its
    ``n_candidates`` is then ``users - 1``).
    """
    n = len(groups.rep)
    kk = min(params.k, n - 1)
    b = len(rows)
    q32 = entries[groups.rep[rows]]
    _, found = index.search(np.ascontiguousarray(q32, dtype=np.float32), search_width(len(entries), params))
    found = found.astype(np.int64)
    hit = found >= 0
    safe = np.where(hit, found, 0)
    sim = np.einsum("bkd,bd->bk", entries[safe].astype(np.float64), q32.astype(np.float64))
    sim = np.round(sim, SIM_DECIMALS)
    # expand each returned entry into its first kk + 1 users (one user each without duplicates)
    size = np.where(hit, np.minimum(np.diff(groups.offsets)[safe], kk + 1), 0).reshape(-1)
    total = int(size.sum())
    slot = np.repeat(np.arange(size.size), size)
    within = np.arange(total) - np.repeat(np.cumsum(size) - size, size)
    flat_found = safe.reshape(-1)
    users = groups.members[groups.offsets[flat_found[slot]] + within]
    qid = slot // found.shape[1]
    sims_flat = sim.reshape(-1)[slot]
    keep = users != rows[qid]
    users, qid, sims_flat = users[keep], qid[keep], sims_flat[keep]
    counts = np.bincount(qid, minlength=b).astype(np.int64)
    order = np.lexsort((users, -sims_flat, qid))
    users, qid, sims_flat = users[order], qid[order], sims_flat[order]
    start = np.cumsum(counts) - counts
    pos = np.arange(len(qid)) - start[qid]
    top = pos < kk
    nb = np.full((b, kk), n, dtype=np.int64)
    sims = np.full((b, kk), -np.inf)
    nb[qid[top], pos[top]] = users[top]
    sims[qid[top], pos[top]] = sims_flat[top]
    short = np.nonzero(counts < kk)[0]
    if len(short):  # the graph reached too few users: brute force for these
        all64 = entries.astype(np.float64)
        for r in short:
            i = int(rows[r])
            full = np.round(all64 @ q32[r].astype(np.float64), SIM_DECIMALS)[groups.rep]
            others = np.delete(np.arange(n), i)
            best = np.lexsort((others, -full[others]))[:kk]
            nb[r], sims[r], counts[r] = others[best], full[others][best], n - 1
    return nb, sims, counts


_INDEX_CACHE: dict = {}


def _cached_index(key, payload):
    """A task's faiss index and the float32 matrix viewed from its storage, deserialized once
    per Python worker (per broadcast)."""
    import faiss

    if key not in _INDEX_CACHE:
        _INDEX_CACHE.clear()  # one build's index at a time
        index = faiss.deserialize_index(payload)
        flat = faiss.downcast_index(index.storage)
        mat = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
        _INDEX_CACHE[key] = (index, mat)
    return _INDEX_CACHE[key]


def hnsw_recall(mat: np.ndarray, index, entries: np.ndarray, groups: VectorGroups, params: HnswParams,
                rows: np.ndarray) -> float:
    """Recall@k of the job's rows for users ``rows``: a returned neighbour counts as found when
    its cosine reaches the user's exact ``k``-th cosine (:func:`~features.lookalike.lsh.exact_kth`
    over every user's vector ``mat``, brute force; tie-aware); found / (rows · k), 4 decimals.
    Exact for these users, since the job ranks them with the same search and the same function
    (:func:`rank_block`)."""
    kk = min(params.k, len(mat) - 1)
    return recall_against(exact_kth(mat.astype(np.float64), rows, kk), index, entries, groups, params, rows)


def recall_against(kth: np.ndarray, index, entries: np.ndarray, groups: VectorGroups, params: HnswParams,
                   rows: np.ndarray) -> float:
    """:func:`hnsw_recall` given the users' exact ``k``-th cosines ``kth`` (one per row of ``rows``)."""
    kk = min(params.k, len(groups.rep) - 1)
    found, step = 0, block_rows(len(entries), entries.shape[1], params)
    for start in range(0, len(rows), step):
        _, sims, _ = rank_block(index, entries, groups, rows[start : start + step], params)
        found += int(np.count_nonzero(sims >= kth[start : start + step, None]))
    return round(found / (len(rows) * kk), 4)


def choose_ef_search(mat: np.ndarray, index, entries: np.ndarray, groups: VectorGroups, params: HnswParams,
                     selection: np.ndarray, stats: dict) -> HnswParams:
    """``params`` with the ``ef_search`` the selection sample asks for (``auto_ef_search``):
    from ``params.ef_search``, doubled while the selection's recall@k (:func:`hnsw_recall`'s
    rule, against the exact ``k``-th cosine computed once) is below ``target_recall`` and the
    doubled value is at most ``max_ef_search``. Records in ``stats``: ``ef_search_tried``
    (``ef:recall`` for each try), ``selection_recall_estimate`` and ``selection_sample_users``."""
    from dataclasses import replace

    kth = exact_kth(mat.astype(np.float64), selection, min(params.k, len(mat) - 1))
    tried = []
    while True:
        index.hnsw.efSearch = params.ef_search  # faiss searches as far as efSearch, whatever the results asked for
        recall = recall_against(kth, index, entries, groups, params, selection)
        tried.append(f"{params.ef_search}:{recall}")
        if recall >= params.target_recall or 2 * params.ef_search > params.max_ef_search:
            break
        params = replace(params, ef_search=2 * params.ef_search)
    stats.update(ef_search_tried=" ".join(tried), selection_recall_estimate=recall,
                 selection_sample_users=int(len(selection)))
    return params


def hnsw_topk(spark, ids, mat: np.ndarray, params: HnswParams, cutoff_ts: dt.datetime | None = None):
    """Spark: ``(lookalike rows, stats)`` for users ``ids`` (pyarrow string array, sorted
    ascending: :func:`vectors_matrix`) with unit float32 vectors ``mat`` (row ``i`` is ``ids[i]``).

    The index is built once here (:func:`build_index`), serialized and broadcast with the ids;
    ``spark.range(n)`` cut into tasks of about ``USERS_PER_TASK`` users queries it per partition
    (``mapInArrow``, one faiss thread per task: Spark's task slots are the parallelism), and
    each block of users is ranked by :func:`rank_block`. Rows: ``user_id``, ``rank`` (1-based),
    ``neighbor_user_id``, ``similarity``, ``cutoff_ts``, ``n_candidates`` (the user's candidates
    whose exact cosine was computed: the search's results other than the user, about
    ``search_width - 1``).

    ``stats``: ``candidates`` (``hnsw``), ``users``, ``dim``, ``m``, ``ef_construction``,
    ``ef_search``, ``threads``, ``index_entries`` (distinct vectors: users with identical vectors
    share an entry, :func:`vector_groups`), ``largest_identical_group``, ``search_width``,
    ``index_bytes`` (the serialized index that is broadcast), and, when sampled, ``recall_estimate`` and ``recall_sample_users``: the recall@k
    (:func:`hnsw_recall`) on the same held-out sample the SimHash path reports on
    (:func:`~features.lookalike.lsh.recall_samples`). With ``auto_ef_search``, ``ef_search`` is
    the value every user was searched with, and :func:`choose_ef_search` adds ``ef_search_tried``,
    ``selection_recall_estimate`` and ``selection_sample_users``.
    """
    import faiss
    import pyarrow as pa

    params.validate()
    n = len(mat)
    stats = {"candidates": "hnsw", "users": n, "dim": int(mat.shape[1]) if n else 0, "m": params.m,
             "ef_construction": params.ef_construction, "ef_search": params.ef_search, "threads": params.threads}
    if n < 2:
        return _finish(spark.createDataFrame([], ROW_SCHEMA), cutoff_ts), stats
    if not isinstance(ids, pa.Array):
        ids = pa.array(np.asarray(ids, dtype=object), pa.string())
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    entries, groups = vector_groups(mat)
    stats["index_entries"] = groups.entries
    stats["largest_identical_group"] = groups.largest
    index = build_index(entries, params)
    stats["search_width"] = search_width(groups.entries, params)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # queries (here and in the tasks) are single-threaded
    try:
        selection, held_out = recall_samples(n, params.recall_sample, params.seed)
        if params.auto_ef_search and len(selection):
            params = choose_ef_search(mat, index, entries, groups, params, selection, stats)
            stats["ef_search"] = params.ef_search
            stats["search_width"] = search_width(groups.entries, params)
            index.hnsw.efSearch = params.ef_search
        if len(held_out):
            stats["recall_sample_users"] = int(len(held_out))
            stats["recall_estimate"] = hnsw_recall(mat, index, entries, groups, params, held_out)
    finally:
        faiss.omp_set_num_threads(before)
    payload = faiss.serialize_index(index)
    stats["index_bytes"] = int(payload.nbytes)
    del index
    shared = spark.sparkContext.broadcast((payload, ids, groups))
    key = uuid.uuid4().hex  # names this build's index in the workers' cache
    del payload
    step = block_rows(groups.entries, mat.shape[1], params)  # fixed here: the tasks use the driver's value

    def _query(batches):
        import faiss as faiss_

        faiss_.omp_set_num_threads(1)
        payload_, ids_, groups_ = shared.value
        index_, entries_ = _cached_index(key, payload_)
        out_schema = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("neighbor_user_id", pa.string()),
                                ("similarity", pa.float64()), ("n_candidates", pa.int64())])
        for batch in batches:
            users = batch.column(0).to_numpy()
            for start in range(0, len(users), step):
                rows = users[start : start + step].astype(np.int64)
                nb, sims, counts = rank_block(index_, entries_, groups_, rows, params)
                kk = nb.shape[1]
                yield pa.RecordBatch.from_arrays(
                    [
                        ids_.take(pa.array(np.repeat(rows, kk))),
                        pa.array(np.tile(np.arange(1, kk + 1, dtype=np.int32), len(rows))),
                        ids_.take(pa.array(nb.reshape(-1))),
                        pa.array(sims.reshape(-1)),
                        pa.array(np.repeat(counts, kk)),
                    ],
                    schema=out_schema,
                )

    parts = max(spark.sparkContext.defaultParallelism, -(-n // USERS_PER_TASK))
    ranked = spark.range(n, numPartitions=parts).mapInArrow(_query, ROW_SCHEMA)
    return _finish(ranked, cutoff_ts), stats
