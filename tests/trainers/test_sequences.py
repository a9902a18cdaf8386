"""trainers.sequences: vocabulary, padded arrays (left / right), truncation, masks, RoTE levels."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from features.sequences import rote
from features.sequences import USER_SEQUENCES
from trainers.sequences import OOV, PAD, ItemVocab, SequenceDataset, pad_lists, read_sequences

T0 = dt.datetime(2022, 4, 25, tzinfo=dt.timezone.utc)
T0_S = int(T0.timestamp())


def seq_table(rows: list[dict]) -> pa.Table:
    """A ``user_sequences`` table from compact rows: user, items (history), target, split, ts (offsets in s)."""
    cols: dict[str, list] = {f.name: [] for f in USER_SEQUENCES.schema}
    for i, r in enumerate(rows):
        hist_ts = [T0 + dt.timedelta(seconds=s) for s in r["ts"]]
        target_ts = T0 + dt.timedelta(seconds=r.get("target_s", (r["ts"][-1] if r["ts"] else 0) + 1))
        values = {
            "event_id": r.get("event_id", f"e{i}"),
            "user_id": r["user"],
            "target_item_id": r["target"],
            "target_ts": target_ts,
            "target_play_time_ms": 1_000,
            "hist_item_ids": list(r["items"]),
            "hist_ts": hist_ts,
            "hist_play_time_ms": [1_000] * len(r["items"]),
            "hist_len": len(r["items"]),
            "seq_pos": r.get("seq_pos", len(r["items"])),
            "split": r.get("split", "train"),
            "target_date": target_ts.date(),
        }
        for name in cols:
            cols[name].append(values.get(name))
    return pa.table(cols, schema=USER_SEQUENCES.schema)


ROWS = [
    {"user": "u1", "items": ["a", "b", "c"], "ts": [0, 60, 120], "target": "d", "split": "train"},
    {"user": "u1", "items": ["a", "b", "c", "d"], "ts": [0, 60, 120, 180], "target": "x", "split": "valid"},
    {"user": "u2", "items": [], "ts": [], "target": "b", "split": "train"},
    {"user": "u2", "items": ["b"], "ts": [86_400], "target": "zz", "split": "test"},
]


@pytest.fixture
def root(warehouse):
    warehouse.write_arrow(USER_SEQUENCES, seq_table(ROWS))
    return warehouse.uri


def read_all(root, vocab, **kw):
    batches = list(read_sequences(root, vocab, **kw))
    order = np.argsort(np.concatenate([b.event_id for b in batches]))
    def cat(name):
        return np.concatenate([getattr(b, name) for b in batches])[order]
    return {n: cat(n) for n in ("item_ids", "ts_s", "mask", "hist_len", "target_item_id", "target_ts_s", "split")}, batches


def test_vocab_is_fitted_on_train_rows_only(root):
    vocab = ItemVocab.fit(root)
    # train rows hold a, b, c (history) and d, b (targets); x and zz only appear in valid / test.
    assert vocab.item_ids == ("a", "b", "c", "d")
    assert vocab.size == 6
    assert vocab.fitted_on == {"table": "user_sequences", "version": 1, "split": "train"}
    assert vocab.encode(["a", "d", "x", "zz"]).tolist() == [2, 5, OOV, OOV]
    assert vocab.decode([0, 1, 2, 5]) == [None, None, "a", "d"]
    assert ItemVocab.from_dict(vocab.to_dict()) == vocab


def test_left_padding_exact_arrays(root):
    vocab = ItemVocab.fit(root)
    got, _ = read_all(root, vocab, max_len=5, padding="left")
    assert got["item_ids"].tolist() == [
        [0, 0, 2, 3, 4],  # e0: a b c
        [0, 2, 3, 4, 5],  # e1: a b c d
        [0, 0, 0, 0, 0],  # e2: empty history
        [0, 0, 0, 0, 3],  # e3: b
    ]
    assert got["mask"].tolist() == (got["item_ids"] != PAD).tolist()
    assert got["ts_s"][0].tolist() == [0, 0, T0_S, T0_S + 60, T0_S + 120]
    assert got["ts_s"][3].tolist() == [0, 0, 0, 0, T0_S + 86_400]
    assert got["ts_s"].dtype == np.float64 and got["item_ids"].dtype == np.int64
    assert got["hist_len"].tolist() == [3, 4, 0, 1]
    assert got["target_item_id"].tolist() == [5, OOV, 3, OOV]
    assert got["target_ts_s"].tolist() == [T0_S + 121, T0_S + 181, T0_S + 1, T0_S + 86_401]
    assert got["split"].tolist() == ["train", "valid", "train", "test"]


def test_right_padding_and_truncation_keep_the_most_recent(root):
    vocab = ItemVocab.fit(root)
    got, _ = read_all(root, vocab, max_len=2, padding="right")
    assert got["item_ids"].tolist() == [[3, 4], [4, 5], [0, 0], [3, 0]]
    assert got["mask"].tolist() == [[True, True], [True, True], [False, False], [True, False]]
    assert got["ts_s"][1].tolist() == [T0_S + 120, T0_S + 180]
    assert got["hist_len"].tolist() == [2, 2, 0, 1]
    left, _ = read_all(root, vocab, max_len=2, padding="left")
    assert left["item_ids"].tolist() == [[3, 4], [4, 5], [0, 0], [0, 3]]


def test_split_filter_batches_and_rote_levels(root):
    vocab = ItemVocab.fit(root)
    batches = list(read_sequences(root, vocab, max_len=3, splits=["valid", "test"], rote_form="sasrec", batch_rows=1))
    assert sorted(s for b in batches for s in b.split) == ["test", "valid"]
    assert all(len(b) == 1 for b in batches)
    for b in batches:
        expect = rote.sasrec_levels(b.ts_s.astype(np.int64), mask=b.mask)
        for k in ("days_f", "months_f", "years_f"):
            np.testing.assert_array_equal(b.levels[k], expect[k])
        assert (b.levels["days_f"][~b.mask] == 0).all()
    cal = list(read_sequences(root, vocab, max_len=3, rote_form="calendar", relative=True, splits=["valid"]))[0]
    # valid row: a b c d at +0 s .. +180 s, last 3 kept: all the same day, so relative day ids are 0.
    assert cal.levels["day_id"].tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError, match="unknown split"):
        list(read_sequences(root, vocab, splits=["training"]))
    with pytest.raises(ValueError, match="padding"):
        list(read_sequences(root, vocab, padding="middle"))


def test_dataset_yields_tensor_batches(root):
    vocab = ItemVocab.fit(root)
    ds = SequenceDataset(root, vocab, max_len=4, batch_rows=3)
    got = list(torch.utils.data.DataLoader(ds, batch_size=None))
    assert sum(len(b["item_ids"]) for b in got) == 4
    assert got[0]["item_ids"].dtype == torch.int64 and got[0]["ts_s"].dtype == torch.float64
    assert got[0]["mask"].dtype == torch.bool
    assert ds.version == 1


def reference_pad(lists, max_len, padding):
    """Plain-Python padding reference: the last max_len elements, pads 0 on the chosen side."""
    out, mask = [], []
    for xs in lists:
        kept = list(xs)[-max_len:] if xs else []
        pad = [0] * (max_len - len(kept))
        out.append(pad + kept if padding == "left" else kept + pad)
        m = [False] * len(pad)
        mask.append(m + [True] * len(kept) if padding == "left" else [True] * len(kept) + m)
    return out, mask


lists_st = st.lists(st.lists(st.integers(1, 1_000), max_size=12), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(lists=lists_st, max_len=st.integers(1, 10))
def test_left_and_right_padding_hold_the_same_items_in_the_same_order(lists, max_len):
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    values = np.array([v for x in lists for v in x], dtype=np.int64)
    left, lmask = pad_lists(offsets, values, max_len, "left")
    right, rmask = pad_lists(offsets, values, max_len, "right")
    for i in range(len(lists)):
        assert left[i][lmask[i]].tolist() == right[i][rmask[i]].tolist() == lists[i][-max_len:]
    ref_l, ref_lm = reference_pad(lists, max_len, "left")
    ref_r, ref_rm = reference_pad(lists, max_len, "right")
    assert left.tolist() == ref_l and lmask.tolist() == ref_lm
    assert right.tolist() == ref_r and rmask.tolist() == ref_rm


@pytest.mark.slow
@pytest.mark.shared_data
def test_ml100k_reader_matches_the_table(warehouse, ml100k_dir, spark):
    """Parity on real data: every padded row equals the table's lists, encoded by a plain dict."""
    from pipelines.ingest import ingest_events
    from pipelines.sequences import build_sequences_table
    from pipelines.sequences import SequenceSettings
    from pipelines.settings import SourceConfig
    from pipelines.sources import adapter_for

    ingest_events(spark, warehouse, adapter_for("ml-100k", SourceConfig(kind="movielens", path=str(ml100k_dir))))
    build_sequences_table(spark, warehouse, SequenceSettings())
    vocab = ItemVocab.fit(warehouse.uri)
    table = warehouse.read_arrow(USER_SEQUENCES.name, columns=["event_id", "hist_item_ids", "split", "target_item_id"])
    train_items = {x for i, s in enumerate(table.column("split").to_pylist()) if s == "train"
                   for x in table.column("hist_item_ids")[i].as_py() + [table.column("target_item_id")[i].as_py()]}
    assert set(vocab.item_ids) == train_items
    index = {item: i + 2 for i, item in enumerate(sorted(train_items))}
    by_event = dict(zip(table.column("event_id").to_pylist(), table.column("hist_item_ids").to_pylist()))
    n = 0
    for b in read_sequences(warehouse.uri, vocab, max_len=20, padding="right", batch_rows=20_000):
        for ev, row, m in zip(b.event_id, b.item_ids, b.mask):
            expect = [index.get(x, OOV) for x in (by_event[ev] or [])][-20:]
            assert row[m].tolist() == expect
            n += 1
    assert n == 100_000
