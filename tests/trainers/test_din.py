"""trainers.din: Dice and the attention unit by hand, pads change nothing (with and without CAPE),
CAPE as target attention, the point-in-time histories (no history item at or after the
impression), gAUC and logloss by hand, and a small training run that learns."""
from __future__ import annotations

import copy
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from features.dimensions import ITEMS
from features.events import EVENTS
from trainers import metrics as M
from trainers.cape import CAPE
from trainers.din import (
    DIN,
    MLP,
    DINConfig,
    Dice,
    TargetAttention,
    history_arrays,
    history_windows,
    load_din_data,
    train,
)
from trainers.registry import get_model

T0 = dt.datetime(2022, 4, 25, tzinfo=dt.timezone.utc)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# --------------------------------------------------------------------------- small tables


def events_table(rows: list[dict]) -> pa.Table:
    """``events`` rows from dicts with user_id, item_id, event_ts, is_click (the rest filled in)."""
    cols: dict[str, list] = {f.name: [] for f in EVENTS.schema}
    for k, r in enumerate(rows):
        full = {"event_id": f"e{k:06d}", "source": "t", "source_file": "log.csv", "source_line": k + 1,
                "event_date": r["event_ts"].date(), **r}
        for name in cols:
            cols[name].append(full.get(name))
    return pa.table(cols, schema=EVENTS.schema)


def items_table(n_items: int) -> pa.Table:
    ids = [f"i{i}" for i in range(n_items)]
    return pa.table({"item_id": ids, "source": ["t"] * n_items, "author_id": [f"a{i % 2}" for i in range(n_items)],
                     "tag": [f"{i % 2},{i % 3}" for i in range(n_items)]})


def taste_rows(days=14, users=40, items=20, per_day=4, seed=0, ties_every=5) -> list[dict]:
    """Users of taste ``u % 2`` click items of group ``i % 2`` (90 %) and rarely others (10 %).

    Every item is shown to both tastes, so the item alone says nothing about the click: only the
    user's click history does. Every ``ties_every``-th impression of a user repeats the previous
    one's timestamp (ties must stay out of each other's histories).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        prev = None
        for day in range(days):
            secs = np.sort(rng.integers(0, 86_000, per_day))
            for j, i in enumerate(rng.choice(items, per_day, replace=False)):
                ts = T0 + dt.timedelta(days=day, seconds=int(secs[j]))
                if prev is not None and (day * per_day + j) % ties_every == 0:
                    ts = prev
                prev = ts
                click = bool(rng.random() < (0.9 if i % 2 == u % 2 else 0.1))
                rows.append({"user_id": f"u{u}", "item_id": f"i{i}", "event_ts": ts, "is_click": click})
    return rows


def write_click_tables(warehouse, seed=0, **kw) -> pd.DataFrame:
    """``events`` and ``items`` of :func:`taste_rows` in ``warehouse``; returns the events."""
    table = events_table(taste_rows(seed=seed, **kw))
    warehouse.write_arrow(EVENTS, table)
    warehouse.write_arrow(ITEMS, items_table(kw.get("items", 20)))
    return table.to_pandas()


def small_config(root, tmp_path, **kw) -> DINConfig:
    base = dict(warehouse=root, runs_root=str(tmp_path / "runs"), max_len=6, embed_dim=4, attention_units=(8,),
                tower_units=(8,), epochs=2, batch_size=64, progress=False, seed=5)
    base.update(kw)
    return DINConfig(**base)


# --------------------------------------------------------------------------- Dice, the attention unit


def test_dice_by_hand_train_eval_and_masked_rows():
    dice = Dice(1)
    with torch.no_grad():
        dice.alpha.fill_(0.5)
    x = torch.tensor([[1.0], [3.0]])  # batch mean 2, biased variance 1: normalised -1, +1
    out = dice(x)
    expected = [sig(-1) * 1 + 0.5 * (1 - sig(-1)) * 1, sig(1) * 3 + 0.5 * (1 - sig(1)) * 3]
    assert out[:, 0].tolist() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx([0.6344707, 2.5965879], abs=1e-6)
    # running statistics move by momentum 0.01 (the unbiased variance, 2, as batch norm)
    assert dice.running_mean.item() == pytest.approx(0.02) and dice.running_var.item() == pytest.approx(1.01)
    dice.eval()
    z = (1.0 - 0.02) / math.sqrt(1.01 + 1e-9)
    assert dice(torch.tensor([[1.0]])).item() == pytest.approx(sig(z) + 0.5 * (1 - sig(z)), abs=1e-6)
    # masked rows add nothing to the batch statistics
    dice.train()
    masked = Dice(1)
    with torch.no_grad():
        masked.alpha.fill_(0.5)
    got = masked(torch.tensor([[1.0], [3.0], [100.0]]), torch.tensor([True, True, False]))
    assert got[:2, 0].tolist() == pytest.approx(expected, abs=1e-6)


class FuxiDice(torch.nn.Module):
    """FuxiCTR's Dice (``fuxictr/pytorch/layers/activations.py``), transcribed."""

    def __init__(self, input_dim, eps=1e-9):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(input_dim, affine=False, eps=eps, momentum=0.01)
        self.alpha = torch.nn.Parameter(torch.zeros(input_dim))

    def forward(self, X):
        p = torch.sigmoid(self.bn(X))
        return p * X + self.alpha * (1 - p) * X


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 30), d=st.integers(1, 5))
def test_dice_without_a_mask_is_fuxictr_dice(seed, n, d):
    torch.manual_seed(seed)
    ours, ref = Dice(d), FuxiDice(d)
    with torch.no_grad():
        ours.alpha.normal_()
        ref.alpha.copy_(ours.alpha)
    for _ in range(3):
        x = torch.randn(n, d) * 3 + 1
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.bn.running_mean)
    torch.testing.assert_close(ours.running_var, ref.bn.running_var)
    ours.eval(), ref.eval()
    x = torch.randn(n, d)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)


def test_attention_unit_and_sum_pooling_by_hand():
    att = TargetAttention(1, (), "dice")
    with torch.no_grad():
        att.unit.out.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))  # over [h, t, h - t, h * t]
        att.unit.out.bias.fill_(0.5)
    t = torch.tensor([[3.0]])
    # h = 2: 2 + 6 - 3 + 24 + .5 = 29.5; h = 1: 1 + 6 - 6 + 12 + .5 = 13.5; no softmax
    pooled, w = att(t, torch.tensor([[[2.0], [1.0]]]), torch.tensor([[True, True]]))
    assert w.tolist() == [[29.5, 13.5]] and pooled.tolist() == [[29.5 * 2 + 13.5 * 1]]
    # a pad (junk value) gets weight 0 and changes nothing
    pooled_p, w_p = att(t, torch.tensor([[[9.0], [2.0], [1.0]]]), torch.tensor([[False, True, True]]))
    assert w_p.tolist() == [[0.0, 29.5, 13.5]] and pooled_p.tolist() == pooled.tolist()
    # one PReLU hidden unit: Linear [1, -1, 0, 0] -> PReLU(0.25) -> 2 x + 1
    att = TargetAttention(1, (1,), "prelu")
    with torch.no_grad():
        att.unit.linears[0].weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0]]))
        att.unit.linears[0].bias.zero_()
        att.unit.acts[0].weight.fill_(0.25)
        att.unit.out.weight.fill_(2.0)
        att.unit.out.bias.fill_(1.0)
    # h = 2: 2 - 3 = -1 -> -0.25 -> 0.5; h = 5: 5 - 3 = 2 -> 2 -> 5
    pooled, w = att(t, torch.tensor([[[2.0], [5.0]]]), torch.tensor([[True, True]]))
    assert w.tolist() == [[0.5, 5.0]] and pooled.tolist() == [[0.5 * 2 + 5.0 * 5]]
    with pytest.raises(ValueError, match="dice or prelu"):
        MLP(2, (2,), "relu")


# --------------------------------------------------------------------------- CAPE in the target attention


def cape_target_reference(cape: CAPE, target, scores, mask, masked_keys):
    """The spec's DIN path in plain loops: logits = scores x mask, one query (the target)."""
    w, b, table = cape.weight[0].detach().numpy(), cape.bias[0].detach().numpy(), cape.table[0].detach().numpy()
    out = np.zeros(scores.shape)
    for r in range(scores.shape[0]):
        z = target[r] @ w + b
        e = (z / (1 + np.exp(-z))) @ table  # silu(W t + b) . P[:, t]
        logits = scores[r] * mask[r]
        gates = 1 - 1 / (1 + np.exp(-logits))
        if masked_keys == "ignore":
            gates = gates * mask[r]
        for j in range(scores.shape[1]):
            p = min(gates[j:].sum(), cape.max_len - 1)
            lo, hi = math.floor(p), math.ceil(p)
            out[r, j] = (p - lo) * e[hi] + (1 - (p - lo)) * e[lo]
    return out


@pytest.mark.parametrize("masked_keys", ["ignore", "add"])
def test_cape_target_attention_shapes_reference_and_pads(masked_keys):
    torch.manual_seed(1)
    cape = CAPE(query_dim=6, max_len=5, pos_dim=3, heads=1, masked_keys=masked_keys)
    target, scores = torch.randn(4, 6), torch.randn(4, 7) * 2
    mask = torch.rand(4, 7) > 0.3
    out = cape.target_attention(target, scores, mask)
    assert out.shape == (4, 7) and torch.count_nonzero(out) == 0  # zero table: adds nothing
    with torch.no_grad():
        cape.table.normal_()
    out = cape.target_attention(target, scores, mask)
    ref = cape_target_reference(cape, target.numpy(), scores.numpy(), mask.numpy().astype(float), masked_keys)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    # left padding (pads before the real keys) with junk scores changes no real key's E
    real = torch.randn(2, 3)
    left = cape.target_attention(target[:2], torch.cat([torch.randn(2, 4) * 5, real], 1),
                                 torch.tensor([[False] * 4 + [True] * 3] * 2))
    trimmed = cape.target_attention(target[:2], real, torch.ones(2, 3, dtype=torch.bool))
    torch.testing.assert_close(left[:, 4:], trimmed)
    # right padding: "ignore" changes nothing, "add" (official) adds 0.5 per pad to every sum
    right = cape.target_attention(target[:2], torch.cat([real, torch.randn(2, 4)], 1),
                                  torch.tensor([[True] * 3 + [False] * 4] * 2))
    if masked_keys == "ignore":
        torch.testing.assert_close(right[:, :3], trimmed)
    else:
        assert not torch.allclose(right[:, :3], trimmed)
    with pytest.raises(ValueError, match="heads=1"):
        CAPE(6, 5, 3, heads=2).target_attention(target, scores, mask)


def _din(cape: bool, activation="dice", masked_keys="ignore") -> DIN:
    torch.manual_seed(0)
    cfg = DINConfig(max_len=8, embed_dim=3, attention_units=(5,), tower_units=(4,), activation=activation,
                    cape=cape, cape_dim=3, cape_masked_keys=masked_keys)
    model = DIN([12, 5], cfg)
    with torch.no_grad():  # non-trivial embeddings and a non-zero CAPE table
        for emb in model.embeddings:
            emb.weight.normal_()
        if cape:
            model.attention.cape.table.normal_()
    return model


@pytest.mark.parametrize("cape,activation,masked_keys", [
    (False, "dice", "ignore"), (False, "prelu", "ignore"), (True, "dice", "ignore"), (True, "prelu", "ignore"),
    (True, "dice", "add"),
])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pads_change_the_output_by_nothing(cape, activation, masked_keys, mode):
    model = _din(cape, activation, masked_keys)
    model.train(mode == "train")
    target = torch.tensor([[3, 1], [7, 2], [4, 4], [9, 0]])
    lengths = [3, 1, 0, 2]  # the third row has no history at all
    real = torch.randint(1, 12, (4, 3, 2))
    real[..., 1] %= 5

    def batch(width: int, junk: bool):
        hist = torch.randint(0, 5, (4, width, 2)) if junk else torch.zeros(4, width, 2, dtype=torch.long)
        mask = torch.zeros(4, width, dtype=torch.bool)
        for r, n in enumerate(lengths):
            if n:
                hist[r, width - n:] = real[r, 3 - n:]
                mask[r, width - n:] = True
        return hist, mask

    torch.manual_seed(3)
    base = model(target, *batch(3, junk=False))
    for width, junk in ((3, True), (8, False), (8, True)):
        torch.manual_seed(3)
        torch.testing.assert_close(model(target, *batch(width, junk)), base, rtol=1e-5, atol=1e-6)
    if cape:  # and CAPE does change the output once its table is non-zero
        plain = _din(cape, activation, masked_keys)
        with torch.no_grad():
            plain.attention.cape.table.zero_()
        plain.train(mode == "train")
        assert not torch.allclose(plain(target, *batch(3, False)), base)


def test_cape_gradients_reach_the_table():
    model = _din(True)
    with torch.no_grad():
        model.attention.cape.table.zero_()
    hist = torch.randint(1, 5, (6, 4, 2))
    out = model(torch.randint(1, 5, (6, 2)), hist, torch.ones(6, 4, dtype=torch.bool))
    out.sum().backward()
    assert torch.count_nonzero(model.attention.cape.table.grad) > 0


# --------------------------------------------------------------------------- point-in-time histories


@settings(max_examples=40, deadline=None)
@given(data=st.data(), max_len=st.integers(1, 6))
def test_history_windows_are_strictly_earlier_brute_force(data, max_len):
    n_pool = data.draw(st.integers(0, 40))
    pool = sorted(data.draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 8)), min_size=n_pool, max_size=n_pool)))
    queries = data.draw(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 9)), max_size=30))
    pu = np.array([p[0] for p in pool], np.int64)
    pt = np.array([p[1] for p in pool], np.int64)
    qu = np.array([q[0] for q in queries], np.int64)
    qt = np.array([q[1] for q in queries], np.int64)
    start, end = history_windows(pu, pt, qu, qt, max_len)
    for k, (u, t) in enumerate(queries):
        expected = [i for i, (pu_i, pt_i) in enumerate(pool) if pu_i == u and pt_i < t][-max_len:]
        assert list(range(start[k], end[k])) == expected


def test_history_windows_need_a_sorted_pool():
    with pytest.raises(ValueError, match="sorted"):
        history_windows(np.array([1, 0]), np.array([0, 0]), np.array([0]), np.array([5]), 3)


@pytest.mark.parametrize("history", ["clicks", "impressions"])
def test_no_history_item_is_at_or_after_the_impression(warehouse, tmp_path, history):
    """The leakage test: on data full of timestamp ties, every history item of every impression
    (train, validation and test) is strictly earlier, and the histories equal a pandas reference
    of the rule (the user's last max_len clicks, or impressions, with event_ts < the impression's)."""
    events = write_click_tables(warehouse, ties_every=3)
    cfg = small_config(warehouse.uri, tmp_path, max_len=5, history=history)
    data = load_din_data(cfg)
    ev = events.assign(ts=(events["event_ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1))
    ev = ev.sort_values(["user_id", "ts", "source_file", "source_line", "event_id"])
    pool = ev[ev["is_click"]] if history == "clicks" else ev
    by_user = {u: g for u, g in pool.groupby("user_id")}
    item_code = dict(zip(data.encoder.encoders["item_id"].vocab, range(1, 10_000)))
    ties = 0
    for name, split in data.splits.items():
        codes, mask, ts = history_arrays(data, split, np.arange(len(split)), width=cfg.max_len)
        assert (ts[mask] < np.repeat(split.ts_us, mask.sum(axis=1))).all(), f"{name}: a history item is not earlier"
        for r in range(len(split)):
            user = data.user_ids[split.users[r]]
            g = by_user.get(user, ev.iloc[:0])
            ties += int(((ev["user_id"] == user) & (ev["ts"] == split.ts_us[r])).sum() > 1)
            want = g[g["ts"] < split.ts_us[r]].tail(cfg.max_len)
            got = codes[r][mask[r]][:, 0]
            assert got.tolist() == [item_code.get(i, 0) for i in want["item_id"]]
            assert ts[r][mask[r]].tolist() == want["ts"].tolist()
    assert ties > 0  # the data did have impressions sharing a timestamp
    # test histories reach into the validation days (they are earlier than the impression)
    test = data.splits["test"]
    first_test = int((pd.Timestamp(data.windows["test"][0], tz="UTC") - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(microseconds=1))
    _, mask, ts = history_arrays(data, test, np.arange(len(test)))
    assert (ts[mask] < first_test).any()


def test_split_by_day_and_encoders_fitted_on_training_days(warehouse, tmp_path):
    write_click_tables(warehouse)
    data = load_din_data(small_config(warehouse.uri, tmp_path))
    windows = {k: (a.isoformat(), b.isoformat()) for k, (a, b) in data.windows.items()}
    assert windows == {"train": ("2022-04-25", "2022-05-04"), "valid": ("2022-05-04", "2022-05-06"),
                       "test": ("2022-05-06", "2022-05-09")}
    assert data.fields == ["item_id", "author_id", "tag_pop"]
    assert sum(len(s) for s in data.splits.values()) == 40 * 14 * 4
    assert sorted(data.tables) == ["events", "items"]
    assert len(data.tables["events"]["partitions_read"]) == 14
    with pytest.raises(ValueError, match="need the items table"):
        other = tmp_path / "no_items"
        from pipelines.warehouse import Warehouse

        wh = Warehouse(str(other))
        wh.write_arrow(EVENTS, events_table(taste_rows(users=4)))
        load_din_data(small_config(wh.uri, tmp_path))


# --------------------------------------------------------------------------- metrics


def test_gauc_by_impressions_and_logloss_by_hand():
    users = ["u1", "u1", "u1", "u2", "u2", "u3"]
    labels = [1, 0, 0, 1, 0, 1]
    scores = [0.9, 0.1, 0.95, 0.2, 0.1, 0.5]
    # u1: the positive beats one of two negatives, AUC 1/2, 3 rows; u2: AUC 1, 2 rows; u3 one class: skipped
    assert M.gauc_impressions(users, labels, scores) == pytest.approx((3 * 0.5 + 2 * 1.0) / 5)
    assert M.gauc(users, labels, scores) == pytest.approx((0.5 + 1.0) / 2)  # the positive-weighted GAUC differs
    assert M.gauc_impressions(users, labels, [0.3, 0.3, 0.3, 0.2, 0.2, 0.1]) == pytest.approx(0.5)  # ties count half
    assert math.isnan(M.gauc_impressions(["a", "a"], [1, 1], [0.1, 0.2]))
    assert M.logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert M.logloss([0], [1.0]) == pytest.approx(-math.log(1e-7))  # clipped to [eps, 1 - eps]
    assert math.isnan(M.logloss([], []))


# --------------------------------------------------------------------------- training


def test_training_learns_the_planted_taste_and_reruns_identically(warehouse, tmp_path):
    write_click_tables(warehouse)
    spec = get_model("din")
    assert spec.config_cls is DINConfig and spec.tables(DINConfig()) == ["events", "items"]
    cfg = small_config(warehouse.uri, tmp_path, epochs=6, patience=6, lr=1e-2, item_fields=("author_id",))
    r1 = train(cfg)
    m = r1.metrics
    losses = [h["train_loss"] for h in m["history"]]
    assert losses[-1] < losses[0] - 0.1  # the loss falls
    assert m["test"]["auc"] > 0.8 and m["test"]["gauc"] > 0.8  # only the history says who clicks what
    r2 = train(cfg)
    assert r2.metrics["test"] == m["test"] and r2.metrics["history"] == m["history"]
    run = Path(r1.run_dir)
    tables = json.loads((run / "tables.json").read_text())
    assert tables["events"]["version"] == warehouse.current_version("events")
    assert tables["items"]["version"] == warehouse.current_version("items")
    assert json.loads((run / "config.json").read_text())["model"] == "din"
    assert (run / "model.pt").exists() and "fitted_on" in json.loads((run / "encoders.json").read_text())


def test_cape_din_trains_end_to_end(warehouse, tmp_path):
    write_click_tables(warehouse)
    m = train(small_config(warehouse.uri, tmp_path, epochs=3, patience=3, lr=1e-2, cape=True, item_fields=())).metrics
    assert m["test"]["auc"] > 0.6 and m["fields"] == ["item_id"]
    assert all(math.isfinite(h["logloss"]) for h in m["history"])


@pytest.mark.parametrize("units,activation", [((64,), "dice"), ((8, 4), "prelu"), ((), "dice"), ((5, 3), "dice")])
def test_packed_split_first_layer_scores_equal_the_concatenation(units, activation):
    """The attention unit on the real items only, its first Linear split into the h, t, h - t and
    h * t blocks, gives the scores (and gradients) of the plain concatenation."""
    torch.manual_seed(0)
    att = TargetAttention(6, units, activation)
    target, history = torch.randn(5, 6), torch.randn(5, 7, 6)
    mask = torch.rand(5, 7) > 0.4
    mask[0] = False  # a row without history
    for mode in ("train", "eval"):
        getattr(att, mode)()
        ref_att = copy.deepcopy(att)
        got, ref = att.scores(target, history, mask), ref_att.scores_reference(target, history, mask)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        assert (got[~mask] == 0).all()
        got.square().sum().backward()
        ref.square().sum().backward()
        for (name, p), q in zip(att.named_parameters(), ref_att.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
        for b, rb in zip(att.buffers(), ref_att.buffers()):  # Dice's running statistics moved alike
            torch.testing.assert_close(b, rb)
        att.zero_grad()


def test_dice_in_fewer_operations_is_the_paper_formula():
    torch.manual_seed(1)
    dice = Dice(4)
    with torch.no_grad():
        dice.alpha.normal_()
    x, mask = torch.randn(9, 4) * 2 + 1, torch.rand(9) > 0.3
    rows = x[mask]
    mean, var = rows.mean(0), rows.var(0, unbiased=False)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + dice.eps))
    torch.testing.assert_close(dice(x, mask), p * x + dice.alpha * (1 - p) * x, rtol=1e-5, atol=1e-6)
