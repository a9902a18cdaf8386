"""Point-in-time histories for arbitrary example times, in the Spark tasks (Arrow + NumPy).

The spine rows and the user's events are unioned, shuffled by user and sorted by
``(user_id, time, kind, source_file, source_line, event_id)`` with kind 0 for a spine row and 1
for an event: a spine row at time ``t`` sorts before every event at ``t``, so the events before
it in the sorted stream are exactly the user's events strictly before ``t``, in the project's
total order (docs/sequences.md). With ``history_ties="log_order"`` a spine row that names an
event of its user at its time (``event_id``) takes that event's source order and sorts by
``(user_id, time, source_file, source_line, event_id, kind)``: just before its own event, so
its history is the events before that event in the total order, the ``user_sequences`` rule.
Each task streams its rows; the last ``max_len`` events of the last user of a batch are carried
into the next one, so memory is one batch plus ``max_len`` rows. A spine row carries its own
columns and the features already attached to it (the *payload*, null on event rows), which
come out next to its history: nothing is joined back after the shuffle. The gathers are
:func:`features.sequences.histories.history_gather`, the kernel the ``user_sequences`` job uses.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.events import TS_TYPE
from features.sequences.histories import history_gather
from features.sequences.rote import rote_batch, rote_table_schema

#: RoTE columns of the history group (from ``rote_batch``), apart from the ones it copies.
_ROTE_SKIP = ("event_id", "user_id", "hist_len", "target_date")


def rote_columns(levels: Sequence[str]) -> list[pa.Field]:
    return [f for f in rote_table_schema(levels) if f.name not in _ROTE_SKIP]


def history_schema(levels: Sequence[str], columns: Sequence[str] | None = None) -> pa.Schema:
    """``spine_row`` and the history columns (``columns``: the ones asked for, ``None``: all)."""
    fields = [
        pa.field("hist_item_ids", pa.list_(pa.string())),
        pa.field("hist_ts", pa.list_(TS_TYPE)),
        pa.field("hist_play_time_ms", pa.list_(pa.int64())),
        pa.field("hist_len", pa.int32()),
        *rote_columns(levels),
    ]
    if columns is not None:
        fields = [f for f in fields if f.name in set(columns)]
    return pa.schema([pa.field("spine_row", pa.int64()), *fields])


def histories_of_sorted(table: pa.Table, max_len: int, ttl_us: int | None, levels: Sequence[str],
                        columns: Sequence[str] | None = None, payload: Sequence[str] = ()) -> pa.Table:
    """Histories of the spine rows (``_k == 0``) of ``table``, which holds whole users (or a
    user's last ``max_len`` earlier events first), sorted as in the module docstring.

    Columns: ``user_id``, ``_t`` (int64 µs), ``_k`` (0 spine, 1 event), ``item_id``,
    ``play_time_ms``, ``spine_row``, and the ``payload`` columns (the spine's own columns and
    the features already attached to it, null on event rows), which are carried through: the
    output is the payload columns of each spine row, then :func:`history_schema` (``columns``:
    the history columns asked for; the RoTE ones are only computed when one is asked for).
    ``ttl_us``: events older than ``t - ttl`` are left out.
    """
    schema = history_schema(levels, columns)
    is_event = table.column("_k").to_numpy(zero_copy_only=False) == 1
    t = table.column("_t").to_numpy(zero_copy_only=False).astype(np.int64)
    spine = np.flatnonzero(~is_event)
    # the one history kernel of every history builder (the user_sequences job calls it too)
    hist_len, rows = history_gather(table.column("user_id"), max_len, is_event, spine, t, ttl_us)
    offsets = np.zeros(len(spine) + 1, dtype=np.int64)
    np.cumsum(hist_len, out=offsets[1:])
    take = pa.array(rows, pa.int64())
    off = pa.array(offsets.astype(np.int32), pa.int32())
    spine_idx = pa.array(spine, pa.int64())
    cols: dict[str, pa.Array] = {name: table.column(name).take(spine_idx) for name in payload}
    cols["spine_row"] = table.column("spine_row").take(spine_idx).cast(pa.int64())
    wanted = set(schema.names)

    def as_list(name: str, typ: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(off, table.column(name).combine_chunks().take(take).cast(typ))

    t_col = pa.array(t, pa.int64()).cast(pa.timestamp("us")).cast(TS_TYPE)
    hist_ts = pa.ListArray.from_arrays(off, t_col.take(take))
    if "hist_item_ids" in wanted:
        cols["hist_item_ids"] = as_list("item_id", pa.string())
    cols["hist_ts"] = hist_ts
    if "hist_play_time_ms" in wanted:
        cols["hist_play_time_ms"] = as_list("play_time_ms", pa.int64())
    cols["hist_len"] = pa.array(hist_len.astype(np.int32), pa.int32())
    rote_wanted = [f.name for f in rote_columns(levels) if f.name in wanted]
    if rote_wanted:
        rb = pa.table({
            "event_id": pa.nulls(len(spine), pa.string()),
            "user_id": table.column("user_id").take(spine_idx),
            "hist_ts": hist_ts,
            "target_ts": t_col.take(spine_idx),
            "target_date": pa.nulls(len(spine), pa.date32()),
        })
        rote = rote_batch(rb, levels)
        for name in rote_wanted:
            cols[name] = rote.column(name)
    names = [*payload, *schema.names]
    return pa.table({name: cols[name] for name in names})


def histories_from_sorted_batches(batches: Iterator[pa.RecordBatch], max_len: int, ttl_us: int | None,
                                  levels: Sequence[str], columns: Sequence[str] | None = None,
                                  payload: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """Stream :func:`histories_of_sorted` over a task's sorted batches (module docstring)."""
    carry: pa.Table | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        if carry is not None and carry.num_rows:
            table = pa.concat_tables([carry, table.select(carry.column_names).cast(carry.schema)])
        out = histories_of_sorted(table, max_len, ttl_us, levels, columns, payload)
        if out.num_rows:
            yield from out.to_batches()
        # carry the last user's last max_len events (its spine rows are done)
        users = table.column("user_id")
        last_user = users[table.num_rows - 1]
        mask = pc.and_(pc.equal(users, last_user), pc.equal(table.column("_k"), 1))
        tail = table.filter(mask)
        # the last max_len earlier events are all a later history can need (with a ttl too:
        # the events inside the window are a suffix of them)
        carry = tail.slice(max(tail.num_rows - max_len, 0))
