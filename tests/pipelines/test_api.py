"""The Python API (pipelines/api.py): read, tables, describe, training_set, and the code of
docs/python-api.md run against a small synthetic warehouse."""
from __future__ import annotations

import datetime as dt
import random
import re
import time

import pyarrow as pa
import pytest

from features.dimensions import ITEMS, USERS
from features.events import EVENTS, FEEDBACK_FLAGS
from features.lookalike import LOOKALIKE_USERS
from pipelines import api
from pipelines.warehouse import Warehouse
from tests.conftest import REPO_ROOT

UTC = dt.timezone.utc
DAY0 = dt.datetime(2022, 4, 8, tzinfo=UTC)


def synthetic_warehouse(root: str, users: int = 30, days: int = 5, per_day: int = 120, seed: int = 5) -> Warehouse:
    """Events over ``days`` UTC days, users and items with attributes, two look-alike builds."""
    rnd = random.Random(seed)
    rows = []
    for d in range(days):
        for i in range(per_day):
            ts = DAY0 + dt.timedelta(days=d, seconds=rnd.randrange(86400))
            rows.append({
                "event_id": f"e{d}-{i:04d}", "source": "synthetic", "user_id": f"u{rnd.randrange(users)}",
                "item_id": f"i{rnd.randrange(40)}", "event_ts": ts, "play_time_ms": rnd.randrange(60_000),
                "duration_ms": 60_000, "rating": None, **{f: None for f in FEEDBACK_FLAGS},
                "event_date": ts.date(), "source_file": f"log{d}.csv", "source_line": i + 1,
            })
    wh = Warehouse(root)
    wh.write_arrow(EVENTS, pa.Table.from_pylist(rows, schema=pa.schema([pa.field(f.name, f.type) for f in EVENTS.schema])))
    wh.write_arrow(USERS, pa.table({"user_id": [f"u{u}" for u in range(users)], "source": ["synthetic"] * users,
                                    "age": [20 + u % 40 for u in range(users)]}))
    wh.write_arrow(ITEMS, pa.table({"item_id": [f"i{i}" for i in range(40)], "source": ["synthetic"] * 40,
                                    "duration_ms": [30_000 + 1000 * i for i in range(40)]}))
    schema = pa.schema([pa.field(f.name, f.type) for f in LOOKALIKE_USERS.schema])
    for day in (2, 3):
        cutoff = DAY0 + dt.timedelta(days=day)
        lk = [{"user_id": f"u{u}", "rank": r + 1, "neighbor_user_id": f"u{(u + r + day) % users}",
               "similarity": 0.9 - 0.1 * r, "cutoff_ts": cutoff} for u in range(users) for r in range(2)]
        wh.write_arrow(LOOKALIKE_USERS, pa.Table.from_pylist(lk, schema=schema), producer={"cutoff_ts": cutoff.isoformat()})
    return wh


def test_read_tables_and_describe(spark, tmp_path):
    root = str(tmp_path / "wh")
    wh = synthetic_warehouse(root)
    assert api.tables(warehouse=root) == ["events", "items", "lookalike_users", "users"]
    first_commit = wh.history("lookalike_users")[-2]["timestamp"]
    time.sleep(0.01)
    old = api.read("lookalike_users", version=1, warehouse=root)
    assert set(old.cutoff_ts.dt.day) == {10}
    assert set(api.read("lookalike_users", warehouse=root, engine="arrow").column("cutoff_ts").to_pylist()) == {
        DAY0 + dt.timedelta(days=3)}
    as_of = api.read("lookalike_users", as_of=first_commit.isoformat(), warehouse=root, engine="arrow")
    assert as_of.num_rows == old.shape[0] and set(as_of.column("cutoff_ts").to_pylist()) == {DAY0 + dt.timedelta(days=2)}
    day = api.read("events", partitions=["2022-04-09"], columns=["event_id", "event_date"], warehouse=root)
    assert list(day.columns) == ["event_id", "event_date"] and set(day.event_date.astype(str)) == {"2022-04-09"}
    sdf = api.read("events", engine="spark", columns=["user_id"], warehouse=root)
    assert sdf.count() == 600
    d = api.describe("events", warehouse=root)
    assert list(d.columns) == ["column", "type", "description"]
    row = d.set_index("column").loc["play_time_ms"]
    assert row["type"] == "int64" and "milliseconds" in row["description"]
    assert d.attrs["key"] == ["event_id"] and d.attrs["version"] == 1
    users = api.describe("users", warehouse=root).set_index("column")
    assert "age" in users.index and "profile attribute" in users.loc["age", "description"]
    assert "hist_len" in api.describe("user_sequences", warehouse=root).column.tolist()  # from the contract only
    with pytest.raises(ValueError, match="engine"):
        api.read("events", engine="polars", warehouse=root)
    with pytest.raises(ValueError, match="unknown table"):
        api.describe("nope", warehouse=root)


def python_blocks(path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.slow
def test_the_code_of_docs_python_api_runs(spark, tmp_path, monkeypatch):
    """Every code block of docs/python-api.md, in order, against a small synthetic warehouse."""
    synthetic_warehouse(str(tmp_path / "wh"))
    monkeypatch.setenv("RECFEAT_WAREHOUSE", str(tmp_path / "wh"))
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(REPO_ROOT / "docs" / "python-api.md")
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), namespace)  # noqa: S102 - the doc's own code
    df = namespace["df"]
    assert len(df) == 90 and (tmp_path / "var/training_sets/noon_visits/_training_set.json").exists()
    assert (df.hist_len <= 20).all() and df.lookalike_users__cutoff_ts.notna().sum() == 60  # noons of days 3 and 4


def test_rote_features_is_read_as_a_view_of_user_sequences(spark, tmp_path, capsys):
    """``sequences.rote_storage: view`` (the default): ``read`` / ``describe`` / ``recfeat show`` /
    ``recfeat export`` of rote_features derive it from the user_sequences version asked for."""
    import pyarrow.parquet as pq

    from orchestration.cli import main
    from pipelines.sequences import SequenceSettings, build_sequences_table, read_rote_arrow

    root = str(tmp_path / "wh")
    wh = synthetic_warehouse(root)
    settings = SequenceSettings()
    build_sequences_table(spark, wh, settings)
    first = wh.current_version("user_sequences")
    old_events = wh.read_arrow("events")
    wh.write_arrow(EVENTS, old_events.slice(0, 300))  # fewer events: the next build has fewer rows
    build_sequences_table(spark, wh, settings)
    assert "rote_features" not in api.tables(warehouse=root)
    now = api.read("rote_features", warehouse=root, engine="arrow")
    assert now.num_rows == 300 and now.equals(read_rote_arrow(wh, settings))
    assert api.read("rote_features", version=first, warehouse=root, engine="arrow").num_rows == 600
    as_of = wh.history("user_sequences")[-2]["timestamp"].isoformat()  # user_sequences' first build
    assert len(api.read("rote_features", as_of=as_of, columns=["event_id", "hist_day_id"], warehouse=root)) == 600
    assert api.read("rote_features", engine="spark", warehouse=root).count() == 300
    d = api.describe("rote_features", warehouse=root)
    assert d.attrs["view_of"] == "user_sequences" and d.attrs["version"] == wh.current_version("user_sequences")
    assert "hist_day_id" in d.column.tolist() and api.describe("events", warehouse=root).attrs["view_of"] is None

    assert main(["show", "rote_features", "--version", str(first), "--warehouse", root]) == 0
    out = capsys.readouterr().out
    assert "a view: derived on read from user_sequences" in out and f"user_sequences version {first}" in out
    assert "rows:         600" in out and "hist_day_id" in out and "sample:" in out
    assert main(["export", "rote_features", str(tmp_path / "rote.parquet"), "--warehouse", root]) == 0
    exported = pq.read_table(tmp_path / "rote.parquet")
    assert exported.sort_by("event_id").equals(now.sort_by("event_id"))
    assert main(["tables", "--warehouse", root]) == 0
    assert "view of user_sequences" in capsys.readouterr().out
