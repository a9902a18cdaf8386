"""trainers.rar.selection: builds chosen point in time (never one whose cutoff is after the
example), the same builds as the training-set API, and SimHash against the exact cosine.

- hand-computed build choices, ties at a cutoff, examples before the first cutoff;
- a property test over random cutoffs and examples on a real warehouse (Delta commits), against a
  brute-force reference, for the look-alike sets and the recall pools (rows tagged by their
  build), with a reader that records every version read (bounded examples by default;
  ``-m slow`` runs many more);
- ``list_builds`` against ``pipelines.training_set.builds.builds`` on one warehouse;
- SimHash by hand, its bit agreement against ``1 - angle / pi``, and its top-k against the exact one.
"""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.lookalike import LOOKALIKE_USERS
from features.recall import RECALL_ITEMS
from trainers.rar.selection import (
    Build,
    choose_builds,
    exact_similarity,
    exact_topk,
    list_builds,
    read_lookalikes,
    read_pools,
    simhash_planes,
    simhash_similarity,
    simhash_topk,
    table_reader,
    topk_by,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2022, 4, 25, tzinfo=UTC)
USERS = [f"u{i}" for i in range(4)]


def us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1))


def lookalike_rows(cutoff: dt.datetime, tag: str, k: int = 3) -> pa.Table:
    """Every user's ``k`` look-alikes, named after the build (``tag``) so a row tells its build."""
    rows = [(u, r, f"{tag}:{u}:{r}", 1.0 - r / 10, cutoff) for u in USERS for r in range(1, k + 1)]
    cols = list(zip(*rows))
    return pa.table([pa.array(c) for c in cols[:4]] + [pa.array(cols[4], LOOKALIKE_USERS.schema.field("cutoff_ts").type)],
                    schema=LOOKALIKE_USERS.schema)


def recall_rows(cutoff: dt.datetime, tag: str, size: int = 4) -> pa.Table:
    rows = [(u, r, f"{tag}:{u}:i{r}", 1.0 / r, "i2i", cutoff) for u in USERS[:3] for r in range(1, size + 1)]
    cols = list(zip(*rows))
    return pa.table([pa.array(c) for c in cols[:5]] + [pa.array(cols[5], RECALL_ITEMS.schema.field("cutoff_ts").type)],
                    schema=RECALL_ITEMS.schema)


def write_builds(warehouse, cutoffs: list[dt.datetime], record_in_commit: list[bool] | None = None) -> list[tuple[int, dt.datetime]]:
    """One ``lookalike_users`` and ``recall_items`` version per cutoff (in this order); the cutoff
    recorded in the commit, or only on the rows. Returns (version, cutoff) per write."""
    out = []
    for n, cutoff in enumerate(cutoffs):
        rec = record_in_commit[n] if record_in_commit else True
        producer = {"cutoff_ts": cutoff.isoformat()} if rec else {}
        m = warehouse.write_arrow(LOOKALIKE_USERS, lookalike_rows(cutoff, f"v{n + 1}"), producer=producer)
        warehouse.write_arrow(RECALL_ITEMS, recall_rows(cutoff, f"v{n + 1}"), producer=producer)
        out.append((m.version, cutoff))
    return out


def brute_force(written: list[tuple[int, dt.datetime]], t: dt.datetime) -> int | None:
    """The version an example at ``t`` must read: latest cutoff <= t, newest version among equals."""
    ok = [(c, v) for v, c in written if c <= t]
    return max(ok)[1] if ok else None


class Recording:
    """A reader that remembers every (table, version) it was asked for."""

    def __init__(self, root: str):
        self.inner, self.read = table_reader(root), []

    def __call__(self, contract, version, columns):
        self.read.append((contract.name, version))
        return self.inner(contract, version, columns)


# --------------------------------------------------------------------------- by hand


def test_build_choice_by_hand():
    c1, c2, c3 = (T0 + dt.timedelta(days=d) for d in (0, 3, 6))
    builds = [Build(1, c1), Build(4, c2), Build(3, c3)]
    ts = [c1 - dt.timedelta(microseconds=1), c1, c1 + dt.timedelta(days=1), c2 - dt.timedelta(microseconds=1), c2,
          c3 + dt.timedelta(days=30)]
    assert choose_builds(builds, np.array([us(t) for t in ts])).tolist() == [-1, 0, 0, 0, 1, 2]
    with pytest.raises(ValueError, match="sorted by cutoff"):
        choose_builds([Build(1, c2), Build(2, c1)], np.array([0]))


def test_list_builds_by_hand_newest_version_per_cutoff_and_rows_only_cutoffs(warehouse):
    c1, c2 = T0, T0 + dt.timedelta(days=7)
    # v1: c2 (rows only), v2: c1, v3: c1 again (rebuilt: the newest wins), v4: c2 recorded
    write_builds(warehouse, [c2, c1, c1, c2], record_in_commit=[False, True, True, True])
    assert list_builds(warehouse.uri, LOOKALIKE_USERS) == [Build(3, c1), Build(4, c2)]
    assert list_builds(warehouse.uri, LOOKALIKE_USERS, upto=2) == [Build(2, c1), Build(1, c2)]


def test_selection_by_hand_reads_only_the_valid_builds(warehouse):
    c1, c2, c3 = T0, T0 + dt.timedelta(days=7), T0 + dt.timedelta(days=14)
    write_builds(warehouse, [c1, c2, c3])
    builds = list_builds(warehouse.uri, LOOKALIKE_USERS)
    ts = np.array([us(c1 - dt.timedelta(hours=1)), us(c1 + dt.timedelta(hours=1)), us(c2), us(c2 + dt.timedelta(days=1))])
    users = np.array(["u0", "u1", "u2", "u9"], dtype=object)
    rec = Recording(warehouse.uri)
    got = read_lookalikes(rec, LOOKALIKE_USERS, builds, choose_builds(builds, ts), users, 2)
    ids = got.ids(np.arange(4))
    assert ids.tolist() == [["", ""], ["v1:u1:1", "v1:u1:2"], ["v2:u2:1", "v2:u2:2"], ["", ""]]  # u9 has no row
    assert sorted(set(rec.read)) == [("lookalike_users", 1), ("lookalike_users", 2)]  # never v3 (cutoff c3)
    pools = read_pools(rec, RECALL_ITEMS, list_builds(warehouse.uri, RECALL_ITEMS), choose_builds(builds, ts), users, 3)
    assert pools.ids(np.arange(4)).tolist()[2] == ["v2:u2:i1", "v2:u2:i2", "v2:u2:i3"]
    assert pools.ids(np.array([3])).tolist() == [["", "", ""]]  # u9: no pool


# --------------------------------------------------------------------------- property: never a later build

CUTOFF_HOURS = st.lists(st.integers(0, 24 * 20), min_size=1, max_size=4)
EXAMPLES = st.lists(st.tuples(st.sampled_from(USERS), st.integers(-24, 24 * 24)), min_size=1, max_size=12)


def check_never_later(warehouse, hours: list[int], examples: list[tuple[str, int]]) -> None:
    cutoffs = [T0 + dt.timedelta(hours=h) for h in hours]
    written = write_builds(warehouse, cutoffs)
    builds = list_builds(warehouse.uri, LOOKALIKE_USERS)
    assert builds == sorted((Build(brute_force(written, c), c) for c in set(cutoffs)), key=lambda b: b.cutoff)
    when = [T0 + dt.timedelta(hours=h, minutes=7 * (h % 3) - 7) for _, h in examples]  # also a little before cutoffs
    users = np.array([u for u, _ in examples], dtype=object)
    ts = np.array([us(t) for t in when])
    chosen = choose_builds(builds, ts)
    rec = Recording(warehouse.uri)
    rows = read_lookalikes(rec, LOOKALIKE_USERS, builds, chosen, users, 3).ids(np.arange(len(examples)))
    version_of = {b.version: b.cutoff for b in builds}
    for n, t in enumerate(when):
        want = brute_force(written, t)
        if want is None:
            assert chosen[n] == -1 and (rows[n] == "").all()
        else:
            assert builds[chosen[n]].version == want
            assert rows[n].tolist() == [f"v{want}:{users[n]}:{r}" for r in (1, 2, 3)]
    # every version read is one some example chose, and none has a cutoff after every example's time
    assert {v for _, v in rec.read} == {builds[c].version for c in set(chosen.tolist()) if c >= 0}
    for _, v in rec.read:
        assert version_of[v] <= max(when)
    # the recall pools: each example's pool is its own valid build's (rows tagged by version)
    pool_builds = list_builds(warehouse.uri, RECALL_ITEMS)
    pool_chosen = choose_builds(pool_builds, ts)
    pool_rec = Recording(warehouse.uri)
    pools = read_pools(pool_rec, RECALL_ITEMS, pool_builds, pool_chosen, users, 4).ids(np.arange(len(examples)))
    for n, t in enumerate(when):
        want = brute_force(written, t)
        if want is None or users[n] not in USERS[:3]:  # before the first cutoff, or a user without a pool
            assert (pools[n] == "").all()
        else:
            assert pool_builds[pool_chosen[n]].version == want
            assert pools[n].tolist() == [f"v{want}:{users[n]}:i{r}" for r in (1, 2, 3, 4)]
    assert {v for _, v in pool_rec.read} <= {b.version for b in pool_builds if b.cutoff <= max(when)}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hours=CUTOFF_HOURS, examples=EXAMPLES)
def test_selection_never_reads_a_later_build(tmp_path_factory, hours, examples):
    from pipelines.warehouse import Warehouse

    check_never_later(Warehouse(str(tmp_path_factory.mktemp("wh"))), hours, examples)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hours=CUTOFF_HOURS, examples=EXAMPLES)
def test_selection_never_reads_a_later_build_many(tmp_path_factory, hours, examples):
    from pipelines.warehouse import Warehouse

    check_never_later(Warehouse(str(tmp_path_factory.mktemp("wh"))), hours, examples)


@settings(max_examples=300, deadline=None)
@given(hours=st.lists(st.integers(0, 1000), min_size=0, max_size=8, unique=True), probes=st.lists(st.integers(-50, 1100), max_size=30))
def test_build_choice_against_brute_force(hours, probes):
    builds = [Build(i + 1, T0 + dt.timedelta(hours=h)) for i, h in enumerate(sorted(hours))]
    got = choose_builds(builds, np.array([us(T0 + dt.timedelta(hours=p)) for p in probes], np.int64))
    for p, g in zip(probes, got):
        ok = [i for i, b in enumerate(builds) if b.cutoff <= T0 + dt.timedelta(hours=p)]
        assert g == (max(ok) if ok else -1)


def test_builds_agree_with_the_training_set_api(warehouse):
    builds_api = pytest.importorskip("pipelines.training_set.builds")
    c1, c2, c3 = T0, T0 + dt.timedelta(days=3), T0 + dt.timedelta(days=6)
    write_builds(warehouse, [c2, c1, c3, c2, c1], record_in_commit=[True, False, True, False, True])
    for contract in (LOOKALIKE_USERS, RECALL_ITEMS):
        for upto in range(1, 6):
            ours = [(b.version, b.cutoff) for b in list_builds(warehouse.uri, contract, upto)]
            theirs = [(b.version, b.valid_from) for b in builds_api.builds(warehouse, contract.name, upto)]
            assert ours == theirs, (contract.name, upto)


# --------------------------------------------------------------------------- SimHash


def test_simhash_by_hand():
    planes = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.contiguous()]  # bits: x > 0, y > 0
    target = torch.tensor([[1.0, 1.0]])
    pool = torch.tensor([[[2.0, 3.0], [1.0, -1.0], [-1.0, -1.0], [5.0, 0.5]]])
    assert simhash_similarity(target, pool, planes).tolist() == [[2, 1, 0, 2]]
    idx, mask = simhash_topk(target, pool, torch.tensor([[True, True, True, True]]), 2, planes)
    assert idx.tolist() == [[0, 3]] and mask.all()  # tie at 2 bits: the lower pool position first
    idx, mask = simhash_topk(target, pool, torch.tensor([[False, True, True, False]]), 3, planes)
    assert idx.tolist()[0][:2] == [1, 2] and mask.tolist() == [[True, True, False]]  # a pad never outranks


def test_topk_ties_and_short_pools():
    idx, mask = topk_by(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), torch.tensor([[True, True, True, True]]), 3)
    assert idx.tolist() == [[1, 2, 3]] and mask.all()
    idx, mask = topk_by(torch.tensor([[1.0, 3.0]]), torch.tensor([[True, False]]), 5)
    assert idx.shape == (1, 2) and mask.tolist() == [[True, False]]


def test_simhash_planes_group_bounds():
    planes = simhash_planes(10, 3, 4, seed=1)
    assert [p.shape for p in planes] == [(4, 4), (3, 4), (3, 4)]
    assert all(torch.equal(a, b) for a, b in zip(planes, simhash_planes(10, 3, 4, seed=1)))
    with pytest.raises(ValueError, match="simhash_groups"):
        simhash_planes(4, 5, 2, seed=0)


def test_simhash_bit_agreement_is_one_minus_angle_over_pi():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(400, 16, generator=gen, dtype=torch.float64)
    b = torch.randn(400, 16, generator=gen, dtype=torch.float64)
    planes = simhash_planes(16, 1, 2048, seed=5)
    agree = simhash_similarity(a, b[:, None, :], planes)[:, 0].double() / 2048
    cos = exact_similarity(a, b[:, None, :])[:, 0].clamp(-1, 1)
    expected = 1 - torch.arccos(cos) / math.pi
    assert (agree - expected).abs().max() < 0.05  # 2,048 bits: sd of one estimate about 0.011


def test_simhash_topk_agrees_with_the_exact_topk():
    gen = torch.Generator().manual_seed(11)
    centres = torch.randn(6, 32, generator=gen)
    pool = centres[torch.randint(0, 6, (64, 40), generator=gen)] + 0.6 * torch.randn(64, 40, 32, generator=gen)
    target = centres[torch.randint(0, 6, (64,), generator=gen)] + 0.6 * torch.randn(64, 32, generator=gen)
    mask = torch.ones(64, 40, dtype=torch.bool)
    exact, _ = exact_topk(target, pool, mask, 5)
    overlaps = []
    for groups, bits in ((4, 8), (4, 64)):
        approx, _ = simhash_topk(target, pool, mask, 5, simhash_planes(32, groups, bits, seed=2))
        overlaps.append(np.mean([len(set(a.tolist()) & set(e.tolist())) / 5 for a, e in zip(approx, exact)]))
    assert overlaps[1] >= 0.7  # 256 bits: close to the exact top-5
    assert overlaps[1] >= overlaps[0]  # more bits, closer
    rand = np.mean([len(set(np.random.default_rng(i).choice(40, 5, replace=False)) & set(e.tolist())) / 5
                    for i, e in enumerate(exact)])
    assert overlaps[0] > rand + 0.2  # even 32 bits beat a random pick by far
