"""RAR's cross-stage selection: which build an example may read, and which users and items it takes.

Two steps, both point in time:

1. **Builds** (:func:`list_builds`, :func:`choose_builds`). ``lookalike_users`` and
   ``recall_items`` are rebuilt as of a cutoff (``cutoff_ts``, UTC), each build one committed
   version. A build's cutoff is the ``cutoff_ts`` its commit records (the producer record), else
   the one its rows carry (one per build). An example at time ``t`` uses the build with the latest
   cutoff ``<= t``; of several versions with that cutoff, the newest. An example before the first
   cutoff gets no build (and is counted). These are the semantics of the training-set API
   (``pipelines/training_set/builds.py``), implemented again here on :func:`trainers.tables.open_table`
   because trainers read no Spark and no ``pipelines/`` (a test checks that both pick the same
   builds on one warehouse). Versions are read up to a pinned one (``table_versions``) or the
   current one; a version whose data files are gone (retention) or a migration placeholder is
   skipped.
2. **Sets** (:func:`read_lookalikes`, :func:`read_pools`, then :func:`simhash_topk` /
   :func:`exact_topk` in the model). The ``k`` look-alike users are the first ``k`` ranks of the
   user's row list in the chosen ``lookalike_users`` build (already ranked by cosine there). The
   ``k`` recall items are those of the user's pool in the chosen ``recall_items`` build (its first
   ``pool_size`` ranks) most similar to the target item, scored with SimHash signatures of the
   model's item embeddings (RAR's choice over the inner product) or, optionally, exactly by cosine.

Only the builds some example chooses are read, and each example's rows come from its own build:
nothing built after an example's time reaches it (``tests/trainers/test_rar_selection.py``).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from features.contracts import TableContract
from features.snapshots import commit_info
from trainers.tables import filesystem, open_table, snapshot

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Build:
    """One committed version of a table computed as of ``cutoff`` (UTC), usable from it on."""

    version: int
    cutoff: dt.datetime

    def record(self) -> dict:
        return {"version": self.version, "cutoff_ts": self.cutoff.isoformat()}


def _us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1))


def build_cutoff(root: str, contract: TableContract, version: int) -> dt.datetime | None:
    """The cutoff of ``version``: the commit's recorded ``cutoff_ts``, else the one its rows carry
    (``None`` for an empty version without a record; ``ValueError`` when rows mix cutoffs)."""
    snap = open_table(root, contract, version)
    recorded = snap.manifest.producer.get("cutoff_ts")
    if recorded:
        return dt.datetime.fromisoformat(recorded).astimezone(UTC)
    found: set = set()
    for rb in snap.batches(["cutoff_ts"]):
        found |= {c for c in pc.unique(rb.column("cutoff_ts")).to_pylist() if c is not None}
    if len(found) > 1:
        raise ValueError(f"{contract.name} version {version} holds rows of {len(found)} cutoffs; a build has one")
    return found.pop().astimezone(UTC) if found else None


def readable_versions(root: str, contract: TableContract, upto: int | None = None) -> list[int]:
    """Committed versions ``1 .. upto`` (default: the current one) whose data files are all there,
    migration placeholders left out."""
    current = snapshot(root, contract.name).version
    last = current if upto is None else min(upto, current)
    fs, _ = filesystem(root)
    out = []
    for v in range(1, last + 1):
        if commit_info(None, root, contract.name, v).get("recfeat.placeholder") == "true":
            continue
        try:
            manifest = snapshot(root, contract.name, v).manifest
        except FileNotFoundError:
            continue
        if all(fs.exists(f) for f in manifest.file_paths(filesystem(root)[1])):
            out.append(v)
    return out


def list_builds(root: str, contract: TableContract, upto: int | None = None) -> list[Build]:
    """Every build of ``contract``'s table among its readable versions ``<= upto``, by cutoff;
    of versions with the same cutoff only the newest. ``[]`` when the table has none."""
    out: dict[dt.datetime, Build] = {}
    for v in readable_versions(root, contract, upto):
        cutoff = build_cutoff(root, contract, v)
        if cutoff is None:
            continue
        if cutoff not in out or out[cutoff].version < v:
            out[cutoff] = Build(v, cutoff)
    return [out[c] for c in sorted(out)]


def choose_builds(builds: Sequence[Build], ts_us: np.ndarray) -> np.ndarray:
    """Index into ``builds`` (sorted by cutoff, distinct cutoffs) of each example's build: the latest
    cutoff ``<= t`` (microseconds since the epoch, UTC); ``-1`` before the first cutoff."""
    cut = np.array([_us(b.cutoff) for b in builds], np.int64)
    if np.any(np.diff(cut) <= 0):
        raise ValueError("builds must be sorted by cutoff, one build per cutoff")
    return np.searchsorted(cut, np.asarray(ts_us, np.int64), side="right").astype(np.int64) - 1


#: What a reader is given: (contract, version, columns) -> the version's rows of those columns.
Reader = Callable[[TableContract, int, Sequence[str]], pa.Table]


def table_reader(root: str) -> Reader:
    """The reader of committed versions under ``root`` (through :func:`open_table`)."""

    def read(contract: TableContract, version: int, columns: Sequence[str]) -> pa.Table:
        snap = open_table(root, contract, version)
        batches = list(snap.batches(list(columns)))
        if not batches:
            return pa.table({c: pa.array([], contract.schema.field(c).type) for c in columns})
        return pa.Table.from_batches(batches)

    return read


@dataclass
class SetRows:
    """Per example, a row of ``values`` (``-1``: none), and per row up to ``width`` ids (``""`` pads)."""

    row: np.ndarray  # int64 [examples]
    values: np.ndarray  # object [rows, width]

    def ids(self, examples: np.ndarray) -> np.ndarray:
        """The ids of ``examples`` ``[n, width]`` (``""`` where the example has none)."""
        r = self.row[examples]
        out = np.full((len(examples), self.values.shape[1]), "", dtype=object)
        has = r >= 0
        out[has] = self.values[r[has]]
        return out


def _ranked_sets(
    reader: Reader, contract: TableContract, builds: Sequence[Build], chosen: np.ndarray, users: np.ndarray,
    value_column: str, width: int,
) -> SetRows:
    """The first ``width`` ranks of ``value_column`` per (chosen build, user), one row per pair."""
    users = np.asarray(users, dtype=object)
    row = np.full(len(users), -1, np.int64)
    blocks: list[np.ndarray] = []
    offset = 0
    for b in np.unique(chosen[chosen >= 0]):
        at = np.flatnonzero(chosen == b)
        t = reader(contract, builds[b].version, ["user_id", "rank", value_column])
        t = t.filter(pc.less_equal(t.column("rank"), width))
        uid = t.column("user_id").to_numpy(zero_copy_only=False).astype(object)
        rank = t.column("rank").to_numpy(zero_copy_only=False).astype(np.int64)
        val = t.column(value_column).to_numpy(zero_copy_only=False).astype(object)
        wanted, inverse = np.unique(users[at].astype(str), return_inverse=True)
        pos = np.searchsorted(wanted, uid.astype(str))
        keep = (pos < len(wanted)) & (wanted[np.minimum(pos, len(wanted) - 1)] == uid.astype(str))
        block = np.full((len(wanted), width), "", dtype=object)
        block[pos[keep], rank[keep] - 1] = val[keep]
        has_rows = np.zeros(len(wanted), bool)
        has_rows[pos[keep]] = True
        r = np.where(has_rows[inverse], offset + inverse, -1)
        row[at] = r
        blocks.append(block)
        offset += len(wanted)
    values = np.concatenate(blocks) if blocks else np.full((0, width), "", dtype=object)
    return SetRows(row, values)


def read_lookalikes(reader: Reader, contract: TableContract, builds: Sequence[Build], chosen: np.ndarray,
                    users: np.ndarray, k: int) -> SetRows:
    """Each example's ``k`` look-alike users (ranks ``1..k``) from its chosen ``lookalike_users`` build."""
    return _ranked_sets(reader, contract, builds, chosen, users, "neighbor_user_id", k)


def read_pools(reader: Reader, contract: TableContract, builds: Sequence[Build], chosen: np.ndarray,
               users: np.ndarray, pool_size: int) -> SetRows:
    """Each example's recall pool (ranks ``1..pool_size``) from its chosen ``recall_items`` build."""
    return _ranked_sets(reader, contract, builds, chosen, users, "item_id", pool_size)


# --------------------------------------------------------------------------- the item similarity f


def simhash_planes(dim: int, groups: int, bits: int, seed: int) -> list[torch.Tensor]:
    """``groups`` blocks of ``bits`` Gaussian hyperplanes, one block per contiguous slice of the
    embedding (:func:`numpy.array_split` of ``dim``), drawn from ``seed``."""
    if not 1 <= groups <= dim:
        raise ValueError(f"simhash_groups must be in [1, {dim}] (the item embedding width), got {groups}")
    gen = torch.Generator().manual_seed(seed)
    sizes = [len(s) for s in np.array_split(np.arange(dim), groups)]
    return [torch.randn(s, bits, generator=gen) for s in sizes]


def simhash_signature(x: torch.Tensor, planes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sign bits ``[..., groups * bits]`` (bool) of ``x [..., dim]``: group ``g``'s slice against its planes."""
    parts, start = [], 0
    for p in planes:
        parts.append(x[..., start : start + p.shape[0]] @ p.to(x.dtype) > 0)
        start += p.shape[0]
    return torch.cat(parts, dim=-1)


def simhash_similarity(target: torch.Tensor, pool: torch.Tensor, planes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Agreeing signature bits of each pool item with the target: ``[B, P]`` in ``0 .. groups * bits``.

    For one group of ``b`` random hyperplanes, ``E[agreeing bits] = b (1 - angle / pi)`` (Charikar),
    so more agreeing bits means a smaller angle, as the exact cosine ranks them.
    """
    t = simhash_signature(target, planes)[:, None, :]
    s = simhash_signature(pool, planes)
    return (t == s).sum(-1)


def exact_similarity(target: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Cosine of each pool item with the target ``[B, P]`` (0 for a zero vector)."""
    t = torch.nn.functional.normalize(target, dim=-1)[:, None, :]
    return (torch.nn.functional.normalize(pool, dim=-1) * t).sum(-1)


def topk_by(score: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``[B, k]`` of the ``k`` best-scored real pool entries (ties: the lower pool rank first)
    and their mask (False where the pool has fewer than ``k`` real entries)."""
    b, p = score.shape
    k = min(k, p)
    s = score.double().masked_fill(~mask, float("-inf"))
    # a stable order: score descending, then pool position ascending
    order = torch.argsort(-s, dim=1, stable=True)[:, :k]
    return order, torch.gather(mask, 1, order)


def simhash_topk(target: torch.Tensor, pool: torch.Tensor, mask: torch.Tensor, k: int,
                 planes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` pool items of most agreeing SimHash bits with the target (see :func:`topk_by`)."""
    return topk_by(simhash_similarity(target, pool, planes), mask, k)


def exact_topk(target: torch.Tensor, pool: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` pool items of largest cosine with the target (see :func:`topk_by`)."""
    return topk_by(exact_similarity(target, pool), mask, k)
