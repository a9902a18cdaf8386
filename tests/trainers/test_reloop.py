"""trainers.reloop: the sketch by hand and against a brute-force reference of its bucket sums,
the stored mean for an identical key, a fixed memory size, λ = 0 is the base, the ANN memory's
labels by cumulative id (not the official code's per-shard row), faiss and NumPy agreeing, no
peeking inside a slice (memory and fine-tuning), and a tiny end-to-end stream on DIN and DeepFM."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from features.dimensions import ITEMS
from features.events import EVENTS
from trainers.din import DINConfig, load_din_data
from trainers.loop import deterministic
from trainers.reloop.memory import KNNMemory, Readout, SketchMemory, compensate, faiss_available
from trainers.reloop.models import BASES, concat_impressions, logits_and_keys
from trainers.reloop.stream import (
    click_metrics,
    segments,
    sigmoid,
    slice_ids,
    stream_fine_tune,
    stream_memory,
    train_base,
)

# --------------------------------------------------------------------------- the sketch by hand


def test_sketch_by_hand_two_arrays_one_bit():
    mem = SketchMemory(dim=2, arrays=2, bits=1)
    mem.planes = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # array 0: sign of x, array 1: sign of y
    keys = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    mem.write(keys, [1.0, 0.0, 1.0], [0.5, 0.2, 0.4])
    assert mem.buckets(keys).tolist() == [[1, 1], [1, 0], [0, 1]]
    # array 0 bucket 1: rows 0, 1 -> count 2, Σy 1, Σp 0.7; bucket 0: row 2. array 1 bucket 1: rows 0, 2; bucket 0: row 1
    s = mem.sums.numpy().reshape(2, 2, 3)
    assert s[0, 1].tolist() == pytest.approx([2, 1, 0.7]) and s[0, 0].tolist() == pytest.approx([1, 1, 0.4])
    assert s[1, 1].tolist() == pytest.approx([2, 2, 0.9]) and s[1, 0].tolist() == pytest.approx([1, 0, 0.2])
    # a query at (2, 3) reads bucket 1 of both arrays: τ = 1 pools them, (1 + 2) / (2 + 2)
    r = mem.read([[2.0, 3.0]])
    assert r.label[0] == pytest.approx(3 / 4) and r.base[0] == pytest.approx(1.6 / 4) and r.weight[0] == 2.0
    # τ = 0.5: weights ∝ count², equal counts -> the mean of the two bucket means
    mem.tau = 0.5
    r = mem.read([[2.0, 3.0]])
    assert r.label[0] == pytest.approx((1 / 2 + 2 / 2) / 2)
    # a query at (1, -5): array 0 bucket 1 (count 2, mean 1/2), array 1 bucket 0 (count 1, mean 0); τ = 0.5: 4:1
    r = mem.read([[1.0, -5.0]])
    assert r.label[0] == pytest.approx((4 * 0.5 + 1 * 0.0) / 5)


def test_compensation_by_hand_gamma_mix_and_clamp():
    r = Readout(label=np.array([0.8, 0.8, 0.0, 0.3]), base=np.array([0.2, 0.2, 0.9, 0.1]),
                weight=np.array([3.0, 3.0, 1.0, 0.0]))
    base = np.array([0.5, 0.5, 0.1, 0.4])
    # γ = 1: err = ȳ − y_base; γ = 0: err = ȳ − ȳ_base; no neighbour (weight 0): err = 0
    assert compensate(base, r, 0.5, 1.0).tolist() == pytest.approx([0.65, 0.65, 0.05, 0.4])
    assert compensate(base, r, 0.5, 0.0).tolist() == pytest.approx([0.8, 0.8, 0.0, 0.4])  # 0.1 − 0.45 clamps to 0
    mixed = 0.25 * (0.8 - 0.5) + 0.75 * (0.8 - 0.2)
    assert compensate(base, r, 0.5, 0.25)[0] == pytest.approx(0.5 + 0.5 * mixed)
    assert compensate(base, r, 1.0, 0.0)[0] == 1.0  # 0.5 + 0.6 clamps to 1


def test_slices_are_whole_utc_hours_and_segments_need_time_order():
    t = dt.datetime(2022, 5, 6, tzinfo=dt.timezone.utc)
    us = np.array([int((t + dt.timedelta(minutes=m)).timestamp() * 1e6) for m in (0, 59, 60, 61, 185)])
    ids = slice_ids(us, 1)
    assert (ids - ids[0]).tolist() == [0, 0, 1, 1, 3]
    assert segments(ids) == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(ValueError, match="time order"):
        segments(ids[::-1])


# --------------------------------------------------------------------------- memory invariants


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_identical_key_returns_exactly_the_stored_mean(tau):
    rng = np.random.default_rng(0)
    mem = SketchMemory(dim=8, arrays=16, bits=10, tau=tau, seed=3)
    key = rng.normal(size=8)
    y = rng.integers(0, 2, 37).astype(float)
    p = rng.random(37)
    mem.write(np.tile(key, (37, 1)), y, p)
    r = mem.read(key[None])
    assert r.label[0] == pytest.approx(y.mean(), abs=1e-12) and r.base[0] == pytest.approx(p.mean(), abs=1e-12)
    assert r.weight[0] == 37
    mem.decay(0.5)  # ageing scales every sum: the means stay
    assert mem.read(key[None]).label[0] == pytest.approx(y.mean(), abs=1e-12)
    knn = KNNMemory(dim=8, k=37, tau=0.1, backend="numpy")
    knn.write(np.tile(key, (37, 1)), y, p)  # float32 cosines: the softmax weights are equal up to rounding
    assert knn.read(key[None]).label[0] == pytest.approx(y.mean(), abs=1e-6)


def test_sketch_size_does_not_grow_with_the_samples_written():
    rng = np.random.default_rng(1)
    mem = SketchMemory(dim=16, arrays=8, bits=6)
    size = mem.nbytes
    assert size == 8 * 2**6 * 3 * 8
    for n in (1, 100, 20_000):
        mem.write(rng.normal(size=(n, 16)), rng.integers(0, 2, n), rng.random(n))
        assert mem.nbytes == size and mem.sums.shape == (8 * 2**6, 3)
    assert mem.written == 20_101 and mem.sums[:, 0].sum().item() == 8 * 20_101  # every sample in every array
    mem.reset()
    assert mem.written == 0 and mem.sums.abs().sum().item() == 0 and mem.read(rng.normal(size=(2, 16))).weight.tolist() == [0, 0]
    knn = KNNMemory(dim=16, backend="numpy")  # the ANN memory grows: one key per stored sample
    knn.write(rng.normal(size=(10, 16)), np.ones(10), np.zeros(10))
    assert len(knn) == 10 and knn.nbytes == 10 * (16 * 4 + 8 + 8)


def test_lambda_zero_is_the_base_prediction():
    rng = np.random.default_rng(2)
    keys, y, p = rng.normal(size=(300, 6)), rng.integers(0, 2, 300).astype(float), rng.random(300)
    slices = np.repeat(np.arange(10), 30)
    for mem in (SketchMemory(6, 8, 4), KNNMemory(6, k=5, backend="numpy")):
        r = stream_memory(mem, keys, p, y, slices)
        assert (r.weight[30:] > 0).all()
        for gamma in (0.0, 0.5, 1.0):
            assert np.array_equal(compensate(p, r, 0.0, gamma), p)


def sketch_reference(planes: np.ndarray, arrays: int, bits: int, keys, labels, base):
    """Brute force: per sample and array, the bucket from L dot products, sums in a dict."""
    sums: dict[tuple[int, int], list[float]] = {}
    for h, y, p in zip(keys, labels, base):
        for k in range(arrays):
            b = sum(1 << l for l in range(bits) if float(np.dot(h, planes[:, k * bits + l])) > 0)
            c = sums.setdefault((k, b), [0.0, 0.0, 0.0])
            c[0] += 1
            c[1] += y
            c[2] += p
    return sums


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 5), arrays=st.integers(1, 4), bits=st.integers(1, 5), seed=st.integers(0, 1_000),
    n=st.integers(1, 30), data=st.data(),
)
def test_sketch_bucket_sums_and_reads_match_a_brute_force_reference(dim, arrays, bits, seed, n, data):
    rng = np.random.default_rng(seed)
    keys = rng.normal(size=(n, dim)) * data.draw(st.sampled_from([1e-3, 1.0, 1e3]))
    labels = data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
    base = rng.random(n)
    mem = SketchMemory(dim, arrays, bits, seed=seed)
    planes = mem.planes.numpy()
    proj = keys @ planes
    assume(np.abs(proj).min() > 1e-9 * max(1.0, np.abs(proj).max()))  # no key on a hyperplane (rounding)
    half = n // 2
    mem.write(keys[:half], labels[:half], base[:half])  # two writes add up as one
    mem.write(keys[half:], labels[half:], base[half:])
    ref = sketch_reference(planes, arrays, bits, keys, labels, base)
    got = mem.sums.numpy().reshape(arrays, 2**bits, 3)
    expected = np.zeros_like(got)
    for (k, b), c in ref.items():
        expected[k, b] = c
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # a read pools the query's buckets (τ = 1)
    q = keys[:3]
    r = mem.read(q)
    for i, h in enumerate(q):
        bs = [sum(1 << l for l in range(bits) if float(np.dot(h, planes[:, k * bits + l])) > 0) for k in range(arrays)]
        cells = np.array([expected[k, b] for k, b in enumerate(bs)])
        assert r.label[i] == pytest.approx(cells[:, 1].sum() / cells[:, 0].sum())
        assert r.base[i] == pytest.approx(cells[:, 2].sum() / cells[:, 0].sum())


# --------------------------------------------------------------------------- the ANN memory


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_ann_labels_come_from_the_cumulative_index_not_the_current_shard(backend):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss is not installed (optional: pip install faiss-cpu)")
    rng = np.random.default_rng(4)
    shard_a, shard_b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    mem = KNNMemory(8, k=1, tau=0.1, backend=backend)
    mem.write(shard_a, np.ones(5), np.full(5, 0.3))
    mem.write(shard_b, np.zeros(5), np.full(5, 0.7))
    sims, ids = mem.search(shard_a[:2])
    assert ids[:, 0].tolist() == [0, 1] and sims[:, 0] == pytest.approx([1.0, 1.0], abs=1e-5)
    r = mem.read(np.concatenate([shard_a[:2], shard_b[:2]]))
    # the official code would read shard B's labels at rows 0, 1 for the shard-A neighbours
    assert r.label.tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0]) and r.base.tolist() == pytest.approx([0.3, 0.3, 0.7, 0.7])


def test_ann_softmax_over_cosine_by_hand_and_error_threshold():
    mem = KNNMemory(2, k=2, tau=0.5, backend="numpy")
    mem.write([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [1.0, 0.0, 1.0], [0.5, 0.5, 0.5])
    r = mem.read([[3.0, 3.0]])  # cosines 0.7071 to both of the first two
    assert r.label[0] == pytest.approx(0.5) and r.weight[0] == 2
    r = mem.read([[2.0, 1.0]])  # cosines 2/√5 and 1/√5
    w = np.exp(np.array([2, 1]) / np.sqrt(5) / 0.5)
    assert r.label[0] == pytest.approx(w[0] / w.sum())
    kept = KNNMemory(2, k=2, backend="numpy", error_threshold=0.3)
    kept.write([[1.0, 0.0], [0.0, 1.0]], [1.0, 0.0], [0.9, 0.5])  # errors 0.1 (dropped) and 0.5
    assert len(kept) == 1


def test_faiss_and_numpy_find_the_same_neighbours():
    pytest.importorskip("faiss", reason="faiss is not installed (optional: pip install faiss-cpu)")
    rng = np.random.default_rng(5)
    keys, q = rng.normal(size=(500, 12)), rng.normal(size=(40, 12))
    y, p = rng.integers(0, 2, 500).astype(float), rng.random(500)
    a, b = KNNMemory(12, k=7, backend="faiss"), KNNMemory(12, k=7, backend="numpy")
    for mem in (a, b):
        mem.write(keys[:200], y[:200], p[:200])
        mem.write(keys[200:], y[200:], p[200:])
    (sa, ia), (sb, ib) = a.search(q), b.search(q)
    assert np.array_equal(ia, ib) and np.allclose(sa, sb, atol=1e-5)
    ra, rb = a.read(q), b.read(q)
    assert np.allclose(ra.label, rb.label, atol=1e-6) and np.allclose(ra.base, rb.base, atol=1e-6)


# --------------------------------------------------------------------------- no peeking


def test_a_slice_is_scored_before_any_of_its_labels_is_written():
    rng = np.random.default_rng(6)
    n = 240
    keys, p = rng.normal(size=(n, 5)), rng.random(n)
    y = rng.integers(0, 2, n).astype(float)
    slices = np.sort(rng.integers(0, 8, n))
    cut = int(np.searchsorted(slices, 4))  # rows of slice 4 and later
    y2, p2 = y.copy(), p.copy()
    y2[cut:], p2[cut:] = 1 - y2[cut:], 1 - p2[cut:]  # change every label and prediction from slice 4 on
    end4 = int(np.searchsorted(slices, 5))
    for make in (lambda: SketchMemory(5, 4, 3, seed=1), lambda: KNNMemory(5, k=4, backend="numpy")):
        r1 = stream_memory(make(), keys, p, y, slices)
        r2 = stream_memory(make(), keys, p2, y2, slices)
        # slice 4's readouts (and earlier ones) ignore slice 4's labels; later slices see them
        assert np.array_equal(r1.label[:end4], r2.label[:end4]) and np.array_equal(r1.base[:end4], r2.base[:end4])
        assert not np.array_equal(r1.label[end4:], r2.label[end4:])
        # and a read never changes the memory: reading twice gives the same answer
        mem = make()
        mem.write(keys[:cut], y[:cut], p[:cut])
        first = mem.read(keys[cut:])
        assert np.array_equal(mem.read(keys[cut:]).label, first.label)


# --------------------------------------------------------------------------- a tiny end-to-end stream

T0 = dt.datetime(2022, 4, 25, tzinfo=dt.timezone.utc)


def write_tables(warehouse, days=14, users=30, items=12, per_day=4, seed=0) -> None:
    """Users of taste ``u % 2`` click items of group ``i % 2`` (85 %); ``events`` and ``items``."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {f.name: [] for f in EVENTS.schema}
    k = 0
    for u in range(users):
        for day in range(days):
            secs = np.sort(rng.choice(86_000, per_day, replace=False))
            for j, i in enumerate(rng.choice(items, per_day, replace=False)):
                ts = T0 + dt.timedelta(days=day, seconds=int(secs[j]))
                row = {"event_id": f"e{k:06d}", "source": "t", "source_file": "log.csv", "source_line": k + 1,
                       "event_date": ts.date(), "user_id": f"u{u}", "item_id": f"i{i}", "event_ts": ts,
                       "is_click": bool(rng.random() < (0.85 if i % 2 == u % 2 else 0.15))}
                for name in cols:
                    cols[name].append(row.get(name))
                k += 1
    warehouse.write_arrow(EVENTS, pa.table(cols, schema=EVENTS.schema))
    ids = [f"i{i}" for i in range(items)]
    warehouse.write_arrow(ITEMS, pa.table({"item_id": ids, "source": ["t"] * items,
                                           "author_id": [f"a{i % 3}" for i in range(items)],
                                           "tag": [f"{i % 2}" for i in range(items)]}))


@pytest.fixture
def tiny(warehouse, tmp_path):
    write_tables(warehouse)
    cfg = DINConfig(warehouse=warehouse.uri, runs_root=str(tmp_path / "runs"), max_len=6, embed_dim=4,
                    attention_units=(8,), tower_units=(8, 6), epochs=3, patience=3, batch_size=64, lr=1e-2,
                    progress=False, seed=5)
    data = load_din_data(cfg)
    return cfg, data, concat_impressions([data.splits["valid"], data.splits["test"]])


@pytest.mark.parametrize("name", ["din", "deepfm"])
def test_tiny_stream_end_to_end(tiny, name):
    cfg, data, stream = tiny
    assert np.all(np.diff(stream.ts_us) >= 0) and len(stream) == len(data.splits["valid"]) + len(data.splits["test"])
    with deterministic(cfg.seed, 1):
        base = BASES[name](data, cfg)
        model, res = train_base(base)
        logits, keys = base.score(model, stream)
        # the key is the last hidden layer: the output layer applied to it gives the logit (DeepFM: plus the FM part)
        rows = np.arange(50)
        with torch.no_grad():
            model.eval()
            out, key = logits_and_keys(model, base.key_layer(model), base.inputs(stream, rows))
            head = base.key_layer(model)(key)[:, 0]
            if name == "deepfm":
                x = base.inputs(stream, rows)[0]
                head = head + model.fm_score(x, model.embed(x))
        assert torch.allclose(head, out, atol=1e-5) and np.allclose(logits[:50], out.double().numpy(), atol=1e-6)
        assert keys.shape == (len(stream), base.key_dim(model))
        prob = sigmoid(logits)
        slices = slice_ids(stream.ts_us, 6)
        sketch = stream_memory(SketchMemory(keys.shape[1], 8, 4, seed=1, center=keys.mean(0)), keys, prob,
                               stream.label, slices)
        knn = stream_memory(KNNMemory(keys.shape[1], k=8, backend="numpy"), keys, prob, stream.label, slices)
        first = slices == slices[0]
        for r in (sketch, knn):
            assert (r.weight[first] == 0).all() and (r.weight[~first] > 0).all()  # empty at the start, then filled
            assert np.array_equal(compensate(prob, r, 0.0), prob)
            final = compensate(prob, r, 0.5)
            assert ((final >= 0) & (final <= 1)).all()
            m = click_metrics(stream.users, stream.label, final)
            assert np.isfinite(m["auc"]) and np.isfinite(m["gauc"])
        base_auc = click_metrics(stream.users, stream.label, prob)["auc"]
        assert base_auc > 0.75  # the planted taste is learnt from the ids (DeepFM) or the history (DIN)
        # fine-tuning: a slice's scores do not depend on that slice's labels
        flipped = concat_impressions([data.splits["valid"], data.splits["test"]])
        later = slices >= slices[len(slices) // 2]
        flipped.label[later] = 1 - flipped.label[later]
        import copy

        a = stream_fine_tune(base, copy.deepcopy(model), stream, slices, 1e-2, 32, seed=1)
        b = stream_fine_tune(base, copy.deepcopy(model), flipped, slices, 1e-2, 32, seed=1)
        upto = slices <= slices[len(slices) // 2]
        assert np.array_equal(a[upto], b[upto]) and not np.array_equal(a[~upto], b[~upto])
