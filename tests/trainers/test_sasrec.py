"""trainers.sasrec: data assembly, negatives, padding invariance, full-ranking evaluation, a run."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features.sequences import USER_SEQUENCES
from trainers.registry import get_model
from trainers.sasrec import (
    SASRec,
    SASRecConfig,
    attention_allowed,
    evaluate,
    load_data,
    position_ids,
    rank_scores,
    sample_negatives,
    time_levels,
    train,
)
from trainers.sequences import FIRST_ITEM, OOV

T0 = dt.datetime(2022, 4, 25, tzinfo=dt.timezone.utc)


def loo_table(logs: dict[str, list[tuple[str, int]]], max_len: int = 50) -> pa.Table:
    """``user_sequences`` for per-user logs [(item, seconds after T0)], leave-one-out, as the job builds it."""
    cols: dict[str, list] = {f.name: [] for f in USER_SEQUENCES.schema}
    for user, events in logs.items():
        n = len(events)
        for pos, (item, s) in enumerate(events):
            hist = events[max(0, pos - max_len):pos]
            split = "train" if n < 4 or pos < n - 2 else ("valid" if pos == n - 2 else "test")
            ts = T0 + dt.timedelta(seconds=s)
            row = {
                "event_id": f"{user}-{pos}", "user_id": user, "target_item_id": item, "target_ts": ts,
                "target_play_time_ms": 0, "hist_item_ids": [h[0] for h in hist],
                "hist_ts": [T0 + dt.timedelta(seconds=h[1]) for h in hist], "hist_play_time_ms": [0] * len(hist),
                "hist_len": len(hist), "seq_pos": pos, "split": split, "target_date": ts.date(),
            }
            for name in cols:
                cols[name].append(row.get(name))
    return pa.table(cols, schema=USER_SEQUENCES.schema)


LOGS = {
    "u1": [("a", 0), ("b", 100), ("c", 200), ("d", 300), ("e", 400), ("f", 500)],
    "u2": [("b", 0), ("c", 86_400), ("a", 2 * 86_400), ("new", 3 * 86_400)],
    "u3": [("c", 0), ("d", 10)],
}


def small_config(root, tmp_path, **kw) -> SASRecConfig:
    base = dict(warehouse=root, runs_root=str(tmp_path / "runs"), max_len=4, hidden=8, epochs=2, batch_size=2,
                progress=False, seed=3)
    base.update(kw)
    return SASRecConfig(**base)


@pytest.fixture
def root(warehouse):
    warehouse.write_arrow(USER_SEQUENCES, loo_table(LOGS))
    return warehouse.uri


def test_load_data_builds_the_leave_one_out_inputs(root, tmp_path):
    data = load_data(small_config(root, tmp_path))
    v = data.vocab
    # train items: u1 a..d, u2 b c, u3 c d -> a b c d (e, f are u1's valid/test, "new" is u2's test)
    assert v.item_ids == ("a", "b", "c", "d")
    a, b, c, d = v.encode(["a", "b", "c", "d"])
    assert list(data.user_ids) == ["u1", "u2", "u3"]
    # u1's last train row: history a b c, target d; u2: history b, target c; u3 (2 events, all train): c -> d
    assert data.train.items.tolist() == [[0, a, b, c], [0, 0, 0, b], [0, 0, 0, c]]
    assert data.train.targets.tolist() == [[0, b, c, d], [0, 0, 0, c], [0, 0, 0, d]]
    assert data.valid.items.tolist() == [[a, b, c, d], [0, 0, b, c]]
    assert data.valid.targets.tolist() == [OOV, a]  # e is unknown
    assert data.test.items.tolist() == [[b, c, d, OOV], [0, b, c, a]]
    assert data.test.targets.tolist() == [OOV, OOV]
    # every known item of each user, all splits
    items_of = [sorted(data.user_items[data.user_items_ptr[u]:data.user_items_ptr[u + 1]]) for u in range(3)]
    assert items_of == [[a, b, c, d], [a, b, c], [c, d]]


def test_rank_scores_excludes_the_users_other_items(root, tmp_path):
    cfg = small_config(root, tmp_path)
    data = load_data(cfg)
    model = SASRec(data.vocab.size, cfg)
    scores, targets = rank_scores(model, data, data.valid, np.arange(2))
    a, b, c, d = data.vocab.encode(["a", "b", "c", "d"])
    assert np.isneginf(scores[:, [0, OOV]]).all()
    # u2's valid target is a: b and c (its other items) are excluded, a and d are ranked
    assert np.isneginf(scores[1, [b, c]]).all() and np.isfinite(scores[1, [a, d]]).all()
    # u1's valid target is unknown: all its items excluded, the target scores -inf -> a miss
    assert np.isneginf(scores[0]).sum() == 2 + 4
    m = evaluate(model, data, data.valid, "valid")
    assert m["valid_rows"] == 2 and m["valid_unknown_targets"] == 1
    assert m["valid_hr@10"] == 0.5  # u2's target ranks among 2 candidates; u1 misses


def reference_metrics(scores: np.ndarray, targets: np.ndarray, k: int) -> tuple[float, float]:
    """Spec: rank = other ranked items scoring >= target; HR = rank < k; NDCG = 1/log2(rank + 2)."""
    hr = nd = 0.0
    for row, t in zip(scores, targets):
        if np.isneginf(row[t]):
            continue
        rank = sum(1 for j, s in enumerate(row) if j != t and np.isfinite(s) and s >= row[t])
        if rank < k:
            hr += 1
            nd += 1 / np.log2(rank + 2)
    return hr / len(targets), nd / len(targets)


def test_evaluation_matches_a_numpy_reference(warehouse, tmp_path):
    rng = np.random.default_rng(0)
    items = [f"i{j:02d}" for j in range(30)]
    logs = {f"u{u}": [(items[j], 60 * k) for k, j in enumerate(rng.choice(30, 8, replace=False))] for u in range(12)}
    warehouse.write_arrow(USER_SEQUENCES, loo_table(logs))
    cfg = small_config(warehouse.uri, tmp_path)
    data = load_data(cfg)
    model = SASRec(data.vocab.size, cfg)
    got = evaluate(model, data, data.test, "test", batch=5)
    scores, targets = rank_scores(model, data, data.test, np.arange(len(data.test)))
    for k in (5, 10):
        hr, nd = reference_metrics(scores, targets, k)
        assert got[f"test_hr@{k}"] == pytest.approx(hr)
        assert got[f"test_ndcg@{k}"] == pytest.approx(nd)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n_items=st.integers(4, 40))
@example(seed=4655, n_items=4)  # every user has an empty training set: no keys at all
def test_negatives_avoid_the_users_training_items(seed, n_items):
    rng = np.random.default_rng(seed)
    users = np.arange(5)
    seen = [rng.choice(np.arange(FIRST_ITEM, n_items), size=rng.integers(0, n_items - FIRST_ITEM), replace=False) for _ in users]
    keys = np.unique(np.concatenate([u * n_items + s for u, s in zip(users, seen)] + [np.zeros(0, np.int64)]).astype(np.int64))
    pos = rng.integers(0, n_items, size=(5, 6))
    neg = sample_negatives(pos, users, keys, n_items, rng, tries=200)
    assert ((neg == 0) == (pos == 0)).all()
    for u in users:
        real = neg[u][pos[u] != 0]
        assert ((real >= FIRST_ITEM) & (real < n_items)).all()
        if len(seen[u]) < n_items - FIRST_ITEM:  # some unseen item exists
            assert not np.isin(real, seen[u]).any()


def test_position_ids_and_attention_mask_by_hand():
    left = torch.tensor([[False, False, True, True]])
    right = torch.tensor([[True, True, False, False]])
    assert position_ids(left, 4).tolist() == [[0, 0, 3, 4]]
    assert position_ids(right, 4).tolist() == [[3, 4, 0, 0]]
    # counted from max_len, not from the batch width: a trimmed batch keeps the ids
    assert position_ids(left, 6).tolist() == [[0, 0, 5, 6]]
    assert position_ids(left[:, 2:], 6).tolist() == [[5, 6]]
    with pytest.raises(ValueError, match="max_len"):
        position_ids(left, 3)
    allowed = attention_allowed(left)[0, 0].int().tolist()
    assert allowed == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]


@pytest.mark.parametrize("rote_on,levels", [(False, "paper"), (True, "paper"), (True, "finer")])
def test_padding_positions_have_no_effect_on_real_positions(rote_on, levels):
    torch.manual_seed(0)
    cfg = SASRecConfig(max_len=8, hidden=16, heads=2, rote=rote_on, rote_levels=levels)
    model = SASRec(20, cfg).eval()
    real_items = torch.tensor([5, 7, 3, 9])
    real_ts = np.array([1.65e9, 1.65e9 + 3_600, 1.65e9 + 90_000, 1.651e9])

    def run(items_row, ts_row, mask_row):
        items = torch.tensor([items_row])
        mask = torch.tensor([mask_row])
        lv = {k: torch.from_numpy(v) for k, v in time_levels(np.array([ts_row]), np.array([mask_row]), levels).items()} if rote_on else None
        return model.encode(items, mask, lv)[0]

    pads = [False] * 4
    left = run([0] * 4 + real_items.tolist(), [0.0] * 4 + real_ts.tolist(), pads + [True] * 4)
    # pads holding garbage items and times change nothing at real positions
    junk = run([11, 2, 19, 4] + real_items.tolist(), [1.7e9, 5.0, 1.6e9, 9e8] + real_ts.tolist(), pads + [True] * 4)
    right = run(real_items.tolist() + [0] * 4, real_ts.tolist() + [0.0] * 4, [True] * 4 + pads)
    torch.testing.assert_close(junk[4:], left[4:])
    torch.testing.assert_close(right[:4], left[4:], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(left).all()


@pytest.mark.parametrize("rote_on", [False, True])
def test_trimmed_and_untrimmed_batches_give_the_same_outputs(rote_on):
    """A history's outputs do not depend on how many all-padding columns its batch kept.

    Training and evaluation drop a batch's leading all-padding columns (``first_used_column``); the learned
    positions must still be counted from ``max_len`` (regression: they were counted from the
    trimmed width, moving the last position's output by up to 0.69).
    """
    torch.manual_seed(0)
    cfg = SASRecConfig(max_len=10, hidden=16, heads=2, dropout=0.0, rote=rote_on)
    model = SASRec(30, cfg).eval()
    rng = np.random.default_rng(0)
    lengths = [3, 5, 2]
    items = np.zeros((3, 10), np.int64)
    ts = np.zeros((3, 10))
    for r, n in enumerate(lengths):
        items[r, 10 - n:] = rng.integers(2, 30, n)
        ts[r, 10 - n:] = 1.65e9 + np.sort(rng.integers(0, 10**7, n))
    mask = items != 0

    def run(first):
        lv = time_levels(ts[:, first:], mask[:, first:], "paper") if rote_on else {}
        out = model.encode(torch.from_numpy(items[:, first:]), torch.from_numpy(mask[:, first:]),
                           {k: torch.from_numpy(v) for k, v in lv.items()})
        return out[:, -max(lengths):]

    full, trimmed = run(0), run(10 - max(lengths))
    for r, n in enumerate(lengths):
        torch.testing.assert_close(trimmed[r, -n:], full[r, -n:], rtol=1e-5, atol=1e-5)


def test_rote_model_has_no_position_embedding_and_uses_time():
    torch.manual_seed(0)
    base = SASRec(20, SASRecConfig(max_len=4, hidden=8))
    rote_model = SASRec(20, SASRecConfig(max_len=4, hidden=8, rote=True)).eval()
    assert base.pos_emb is not None and rote_model.pos_emb is None
    items, mask = torch.tensor([[3, 4, 5, 6]]), torch.ones(1, 4, dtype=torch.bool)

    def out(ts):
        lv = {k: torch.from_numpy(v) for k, v in time_levels(np.array([ts]), mask.numpy(), "paper").items()}
        return rote_model.encode(items, mask, lv)

    assert not torch.allclose(out([1.65e9, 1.65e9 + 86_400, 1.66e9, 1.67e9]), out([1.65e9] * 4))


def test_a_short_run_writes_its_run_directory_and_is_registered(root, tmp_path):
    spec = get_model("sasrec")
    assert spec.config_cls is SASRecConfig and spec.tables(None) == ["user_sequences"]
    cfg = small_config(root, tmp_path, rote=True, epochs=3)
    result = train(cfg)
    m = result.metrics
    assert set(m["valid"]) >= {"hr@5", "hr@10", "ndcg@5", "ndcg@10"} and set(m["test"]) >= {"hr@5", "ndcg@10"}
    assert m["throughput"]["train_samples_per_s"] > 0
    assert m["test"]["rows"] == 2 and m["epochs_run"] <= 3
    assert json.loads((result.run_dir / "encoders.json").read_text())["items"]["item_ids"] == ["a", "b", "c", "d"]
    assert result.tables["user_sequences"]["version"] == 1
    state = torch.load(result.run_dir / "model.pt", weights_only=True)
    assert "pos_emb.weight" not in state and "item_emb.weight" in state
    again = train(cfg)
    assert again.metrics["valid"] == m["valid"]  # same seed, same numbers


def test_sasrec_dagster_asset_materializes_with_metrics(root, warehouse, tmp_path):
    import dagster as dg

    from orchestration.models import build
    from orchestration.resources import SettingsResource
    from pipelines.settings import load_settings

    cfg_file = tmp_path / "recfeat.yaml"
    cfg_file.write_text(
        f"warehouse:\n  root: {root}\ntraining:\n  runs_root: {tmp_path / 'runs'}\n  models:\n"
        "    sasrec: {epochs: 2, max_len: 4, hidden: 8, batch_size: 2, rote: true}\n"
    )
    ext = build(load_settings(cfg_file))
    asset = next(a for a in ext.assets if a.key.to_user_string() == "sasrec")
    assert {k.to_user_string() for k in asset.asset_deps[asset.key]} == {"user_sequences"}
    assert any(s.name == "retrain_models_daily" for s in ext.schedules)
    result = dg.materialize([asset], resources={"settings": SettingsResource(config_file=str(cfg_file))})
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert 0.0 <= meta["test/ndcg@10"].value <= meta["test/hr@10"].value <= 1.0
    assert meta["table_versions"].value == {"user_sequences": warehouse.current_version("user_sequences")}
    assert json.loads((Path(meta["run_dir"].value) / "config.json").read_text())["config"]["rote"] is True


def test_evaluation_sample_is_fixed_by_the_seed(root, tmp_path):
    from trainers.sasrec import sample_users

    data = load_data(small_config(root, tmp_path))
    assert sample_users(data.valid, None, 1) is data.valid and sample_users(data.valid, 5, 1) is data.valid
    one = sample_users(data.valid, 1, 1)
    assert len(one) == 1 and one.users.tolist() == sample_users(data.valid, 1, 1).users.tolist()
    assert {tuple(sample_users(data.valid, 1, s).users) for s in range(20)} == {(0,), (1,)}


def test_bad_sasrec_overrides_fail_naming_the_field(tmp_path):
    from orchestration.models import model_config
    from pipelines.settings import load_settings
    from trainers.config import ConfigError

    for bad, field in (("{dropout: 2}", "dropout"), ("{rote_levels: minutes}", "rote_levels"), ("{hidden: 64, heads: 3}", "hidden / heads")):
        p = tmp_path / "recfeat.yaml"
        p.write_text(f"training:\n  models:\n    sasrec: {bad}\n")
        with pytest.raises(ConfigError, match=f"training.models.sasrec.*{field}"):
            model_config(load_settings(p), "sasrec")
