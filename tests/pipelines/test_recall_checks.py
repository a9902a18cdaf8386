"""The recall family's invariant counters on Arrow equal the Spark ones, on clean tables and on
tables with planted defects; the check step uses the Arrow ones for tables it validates in the process."""
from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from features.events import EVENTS
from features.recall import ITEM_NEIGHBORS, RECALL_ITEMS
from pipelines.recall import (
    build_item_neighbors_table,
    build_recall_table,
    check_item_neighbors,
    check_item_neighbors_arrow,
    check_recall,
    check_recall_arrow,
)
from pipelines.warehouse import Warehouse
from tests.pipelines.test_lookalike import CUTOFF, OTHER, events_table, small_recall


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A warehouse with both recall tables (cosine neighbours, pools with the popular top-up)."""
    wh = Warehouse(str(tmp_path_factory.mktemp("recall") / "w"))
    wh.write_arrow(EVENTS, events_table(1500, 3, 0, 200))
    settings = small_recall(CUTOFF, similarity="cosine", fill="popular", item_k=4, engine="local")
    build_item_neighbors_table(None, wh, settings)
    build_recall_table(None, wh, settings)
    return wh, settings


def _copy(base: Warehouse, tmp_path_factory) -> Warehouse:
    wh = Warehouse(str(tmp_path_factory.mktemp("defects") / "w"))
    wh.write_arrow(EVENTS, base.read_arrow(EVENTS.name))
    return wh


def _neighbor_defect(rows: list[dict], kind: str, i: int) -> list[dict]:
    if not rows:
        return rows
    k = i % len(rows)
    r = dict(rows[k])
    if kind == "drop":
        return rows[:k] + rows[k + 1:]
    if kind == "duplicate":
        return rows + [r]
    r.update({
        "self": {"neighbor_item_id": r["item_id"]},
        "zero": {"similarity": 0.0},
        "nan": {"similarity": math.nan},
        "above_one": {"similarity": 1.5},
        "co": {"co_users": 0},
        "cutoff": {"cutoff_ts": OTHER},
        "rank": {"rank": r["rank"] + 3},
    }[kind])
    return rows[:k] + [r] + rows[k + 1:]


def _pool_defect(rows: list[dict], kind: str, i: int, seen: list[tuple[str, str]]) -> list[dict]:
    if not rows:
        return rows
    k = i % len(rows)
    r = dict(rows[k])
    if kind == "drop":
        return rows[:k] + rows[k + 1:]
    if kind == "duplicate":
        return rows + [r]
    if kind == "swap":  # a popular row ranked before an i2i one, or scores out of order
        j = min(k + 1, len(rows) - 1)
        a, b = dict(rows[k]), dict(rows[j])
        a["rank"], b["rank"] = b["rank"], a["rank"]
        out = list(rows)
        out[k], out[j] = a, b
        return out
    if kind == "seen":
        user, item = seen[i % len(seen)]
        r.update(user_id=user, item_id=item)
    else:
        r.update({
            "zero": {"score": 0.0},
            "nan": {"score": math.nan},
            "up": {"score": r["score"] + 10.0},
            "source": {"source": "trending"},
            "cutoff": {"cutoff_ts": OTHER},
            "rank": {"rank": r["rank"] + 2},
        }[kind])
    return rows[:k] + [r] + rows[k + 1:]


def _diff(a: dict, b: dict) -> dict:
    return {k: (v, b.get(k)) for k, v in a.items() if v != b.get(k)}


def test_clean_tables_have_no_violation_on_either_engine(spark, built):
    wh, settings = built
    for arrow, on_spark in ((check_item_neighbors_arrow(wh, settings), check_item_neighbors(spark, wh, settings)),
                            (check_recall_arrow(wh, settings), check_recall(spark, wh, settings))):
        assert arrow["rows"] > 0 and not {k: v for k, v in arrow.items() if k != "rows" and v}
        assert arrow == on_spark


NEIGHBOR_KINDS = ["drop", "duplicate", "self", "zero", "nan", "above_one", "co", "cutoff", "rank"]
POOL_KINDS = ["drop", "duplicate", "swap", "seen", "zero", "nan", "up", "source", "cutoff", "rank"]


@hsettings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nb_defects=st.lists(st.tuples(st.sampled_from(NEIGHBOR_KINDS), st.integers(0, 10_000)), max_size=4),
       pool_defects=st.lists(st.tuples(st.sampled_from(POOL_KINDS), st.integers(0, 10_000)), max_size=4))
def test_arrow_counts_equal_spark_counts(spark, built, tmp_path_factory, nb_defects, pool_defects):
    base, settings = built
    wh = _copy(base, tmp_path_factory)
    nb = base.read_arrow(ITEM_NEIGHBORS.name).to_pylist()
    for kind, i in nb_defects:
        nb = _neighbor_defect(nb, kind, i)
    pool = base.read_arrow(RECALL_ITEMS.name).to_pylist()
    events = base.read_arrow(EVENTS.name)
    seen = [(r["user_id"], r["item_id"]) for r in events.to_pylist() if r["event_ts"] < CUTOFF]
    for kind, i in pool_defects:
        pool = _pool_defect(pool, kind, i, seen)
    producer = {"cutoff_ts": CUTOFF.isoformat(), "item_neighbors_cutoff_ts": CUTOFF.isoformat()}
    wh.write_arrow(ITEM_NEIGHBORS, pa.Table.from_pylist(nb, schema=ITEM_NEIGHBORS.schema), producer=producer)
    wh.write_arrow(RECALL_ITEMS, pa.Table.from_pylist(pool, schema=RECALL_ITEMS.schema), producer=producer)
    for arrow, on_spark in ((check_item_neighbors_arrow(wh, settings), check_item_neighbors(spark, wh, settings)),
                            (check_recall_arrow(wh, settings), check_recall(spark, wh, settings))):
        assert arrow == on_spark, _diff(arrow, on_spark)


def test_known_defects_are_counted_on_arrow(built, tmp_path_factory):
    base, settings = built
    wh = _copy(base, tmp_path_factory)
    nb = base.read_arrow(ITEM_NEIGHBORS.name).to_pylist()
    for kind in ("self", "nan", "co", "cutoff"):
        nb = _neighbor_defect(nb, kind, 0)  # all on the first row: one row, four violations
    nb = _neighbor_defect(nb, "above_one", 5)
    pool = base.read_arrow(RECALL_ITEMS.name).to_pylist()
    first_pop = next(k for k, r in enumerate(pool) if r["source"] == "popular" and r["rank"] > 1)
    pool = _pool_defect(pool, "swap", first_pop - 1, [])  # the user's last i2i row and its first popular one
    producer = {"cutoff_ts": OTHER.isoformat(), "item_neighbors_cutoff_ts": CUTOFF.isoformat()}
    wh.write_arrow(ITEM_NEIGHBORS, pa.Table.from_pylist(nb, schema=ITEM_NEIGHBORS.schema), producer=producer)
    wh.write_arrow(RECALL_ITEMS, pa.Table.from_pylist(pool, schema=RECALL_ITEMS.schema), producer=producer)
    counts = {k: v for k, v in check_item_neighbors_arrow(wh, settings).items() if k != "rows" and v}
    assert counts == {"self_neighbors": 1, "similarity_out_of_range": 2, "co_users_below_min": 1,
                      "rows_with_other_cutoff": 1, "built_with_other_cutoff": 1}
    counts = {k: v for k, v in check_recall_arrow(wh, settings).items() if k != "rows" and v}
    assert counts["users_with_popular_before_i2i"] == 1 and counts["built_with_other_cutoff"] == 1


def test_the_check_counts_on_arrow_in_the_process_and_on_spark_above(built, monkeypatch):
    """The family's counters follow ``quality.pandas_max_rows``: Arrow at or below it (no Spark),
    Spark above; the recall counter also weighs the events it reads."""
    import pipelines.recall as family
    from pipelines.family import JobContext
    from pipelines.cutoffs import events_in, partitions_before
    from pipelines.settings import Settings

    wh, settings = built
    calls = []
    monkeypatch.setattr(family, "check_item_neighbors", lambda spark, w, s: calls.append("item_neighbors") or {})
    monkeypatch.setattr(family, "check_recall", lambda spark, w, s: calls.append("recall_items") or {})
    nb_rows, pool_rows = wh.manifest(ITEM_NEIGHBORS.name).row_count, wh.manifest(RECALL_ITEMS.name).row_count
    events = events_in(wh, partitions_before(wh, settings.cutoff_ts))
    assert nb_rows <= pool_rows < events

    def spark_counted(limit: int) -> list[str]:
        asked = []
        ctx = JobContext(warehouse=wh, settings=Settings(quality={"pandas_max_rows": limit}), params=settings,
                         spark_session=lambda: asked.append("session"))
        calls.clear()
        for table in (ITEM_NEIGHBORS.name, RECALL_ITEMS.name):
            counts = family.FAMILY.invariants[table](ctx)
            assert table in calls or counts["rows"] == wh.manifest(table).row_count
        assert len(asked) == len(calls)  # only the Spark counters asked for a session
        return list(calls)

    assert spark_counted(events) == []
    assert spark_counted(pool_rows) == ["recall_items"]  # its table fits, the events it reads do not
    assert spark_counted(nb_rows - 1) == ["item_neighbors", "recall_items"]


def test_a_cutoff_with_a_time_of_day_reads_its_own_day(spark, tmp_path):
    """``seen`` holds the events before the cutoff on its own UTC day too."""
    wh = Warehouse(str(tmp_path / "w"))
    wh.write_arrow(EVENTS, events_table(1500, 5, 0, 200))
    cutoff = CUTOFF + dt.timedelta(hours=9)
    settings = small_recall(cutoff, engine="local")
    build_item_neighbors_table(None, wh, settings)
    build_recall_table(None, wh, settings)
    assert check_recall_arrow(wh, settings) == check_recall(spark, wh, settings)
    assert check_recall_arrow(wh, settings)["seen_items_recalled"] == 0
