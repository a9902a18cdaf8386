"""trainers.tables reads exactly the committed version, through the shared layout rules."""
from __future__ import annotations

import pyarrow as pa

from features.dimensions import USERS
from trainers.tables import iter_batches, snapshot


def test_reads_the_committed_version_only(warehouse):
    warehouse.write_arrow(USERS, pa.table({"user_id": ["a", "b"], "source": ["s", "s"]}))
    warehouse.write_arrow(USERS, pa.table({"user_id": ["c"], "source": ["s"]}))
    snap = snapshot(warehouse.uri, "users")
    assert snap.version == 2
    rows = [r for b in iter_batches(warehouse.uri, "users") for r in b.to_pylist()]
    assert rows == [{"user_id": "c", "source": "s"}]
    old = [r["user_id"] for b in iter_batches(warehouse.uri, "users", version=1) for r in b.to_pylist()]
    assert sorted(old) == ["a", "b"]
