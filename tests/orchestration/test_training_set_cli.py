"""``recfeat training-set``: a spine file in, a reproducible Parquet directory out, one-line errors."""
from __future__ import annotations

import json

import pandas as pd

from orchestration.cli import main
from tests.pipelines.test_api import DAY0, synthetic_warehouse


def test_training_set_command_writes_and_reproduces(spark, tmp_path, capsys):
    root = str(tmp_path / "wh")
    synthetic_warehouse(root)
    spine = pd.DataFrame({"user_id": ["u1", "u2", "u99"], "item_id": ["i1", "i2", "i3"],
                          "event_ts": [DAY0 + pd.Timedelta(days=1), DAY0 + pd.Timedelta(days=4), DAY0],
                          "clicked": [1, 0, 1]})
    spine.to_csv(tmp_path / "spine.csv", index=False)
    out = tmp_path / "out"
    rc = main(["training-set", str(tmp_path / "spine.csv"), "--features", "user_sequences,items.*",
               "--features", "lookalike_users", "--ttl", "lookalike_users=1d", "--max-len", "5",
               "--out", str(out), "--warehouse", root])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "3 rows" in text and "events v1" in text and "lookalike users rows before first cutoff: 2" in text
    meta = json.loads((out / "_training_set.json").read_text())
    assert meta["versions"] == {"events": 1, "items": 1, "lookalike_users": 2} and meta["max_len"] == 5
    got = pd.read_parquet(out).sort_values("spine_row")
    assert got.clicked.tolist() == [1, 0, 1] and got.items__duration_ms.tolist() == [31_000, 32_000, 33_000]
    # day 4: the day-3 build is within the 1-day ttl; day 1 and day 0: before the first cutoff
    assert got.lookalike_users__cutoff_ts.notna().tolist() == [False, True, False]
    # a later build and a late event do not change a run pinned to the first one's versions
    import pyarrow as pa

    from features.lookalike import LOOKALIKE_USERS
    from pipelines.warehouse import Warehouse

    late = [{"user_id": "u2", "rank": 1, "neighbor_user_id": "u7", "similarity": 0.5, "cutoff_ts": DAY0 + pd.Timedelta(days=3, hours=1)}]
    Warehouse(root).write_arrow(LOOKALIKE_USERS, pa.Table.from_pylist(late, schema=pa.schema(
        [pa.field(f.name, f.type) for f in LOOKALIKE_USERS.schema])), producer={"cutoff_ts": late[0]["cutoff_ts"].isoformat()})
    rc = main(["training-set", str(tmp_path / "spine.csv"), "--features", "user_sequences,items.*,lookalike_users",
               "--ttl", "lookalike_users=1d", "--max-len", "5", "--versions", str(out), "--out", str(tmp_path / "again"),
               "--warehouse", root])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    again = pd.read_parquet(tmp_path / "again").sort_values("spine_row")
    pd.testing.assert_frame_equal(again.drop(columns=["hist_item_ids", "hist_ts", "hist_play_time_ms"]),
                                  got.drop(columns=["hist_item_ids", "hist_ts", "hist_play_time_ms"]), check_like=True)
    assert [list(x) for x in again.hist_item_ids] == [list(x) for x in got.hist_item_ids]
    assert json.loads((tmp_path / "again" / "_training_set.json").read_text())["versions"]["lookalike_users"] == 2
    rc = main(["training-set", str(tmp_path / "spine.csv"), "--features", "nope.x", "--out", str(tmp_path / "o2"),
               "--warehouse", root])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("recfeat: error: unknown feature 'nope.x'") and err.count("\n") == 1
    # --history-ties reaches the build: log_order needs the events the rows name
    rc = main(["training-set", str(tmp_path / "spine.csv"), "--features", "user_sequences", "--history-ties", "log_order",
               "--out", str(tmp_path / "o3"), "--warehouse", root])
    err = capsys.readouterr().err
    assert rc == 1 and "history_ties='log_order' needs an event_id column" in err and err.count("\n") == 1
