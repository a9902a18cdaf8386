"""Watch-time backbones, losses (CWM included), label re-application and the end-to-end trainer."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from features.labels import math as lm
from tests.trainers._run_files import read_json
from trainers.config import ConfigError, build_config
from trainers.registry import get_model, model_names
from trainers.runs import load_state
from trainers.watch_time.losses import cwm_loss, soft_bce
from trainers.watch_time.models import FM, DeepFM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _watch_time_tables import write_tables  # noqa: E402


# ---- backbones -------------------------------------------------------------------------------
def test_fm_matches_the_pairwise_formula():
    torch.manual_seed(0)
    fm = FM([3, 4, 2], embed_dim=5)
    torch.nn.init.normal_(fm.linear.embedding.weight)
    x = torch.tensor([[1, 2, 0], [2, 3, 1]])
    e = fm.embed(x)
    lin = fm.linear(x).sum(dim=(1, 2)) + fm.bias
    pair = sum((e[:, i] * e[:, j]).sum(1) for i in range(3) for j in range(i + 1, 3))
    assert torch.allclose(fm(x), lin + pair, atol=1e-5)


def test_fields_use_separate_embedding_rows():
    fm = FM([3, 3], embed_dim=2)
    assert fm.embed.embedding.num_embeddings == 6
    a = fm.embed(torch.tensor([[1, 1]]))
    assert not torch.equal(a[0, 0], a[0, 1])  # the same index in two fields is two rows


def test_deepfm_shapes_and_eval_is_deterministic():
    m = DeepFM([5, 7, 3], embed_dim=4)
    x = torch.tensor([[1, 2, 0], [4, 6, 2], [0, 0, 0]])
    m.eval()
    assert m(x).shape == (3,) and torch.equal(m(x), m(x))


# ---- losses ----------------------------------------------------------------------------------
def test_cwm_loss_hand():
    s = torch.tensor([1.0, 0.0, 2.0])
    t = torch.tensor([0.0, 2.0, 1.0])
    cens = torch.tensor([False, False, True])
    sigma = 2.0
    obs = ((1.0 / 2) ** 2 / 2 + (-2.0 / 2) ** 2 / 2) / 2
    cen = -np.log(expit(0.5))
    assert cwm_loss(s, t, cens, sigma).item() == pytest.approx(obs + cen, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-20, 20), st.floats(-14, 14), st.booleans()), min_size=1, max_size=20))
def test_cwm_loss_finite_on_one_sided_batches(rows):
    s = torch.tensor([r[0] for r in rows], requires_grad=True)
    t = torch.tensor([r[1] for r in rows])
    c = torch.tensor([r[2] for r in rows])
    loss = cwm_loss(s, t, c)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    # parity with a NumPy reference of the spec (sum of the two subsets' means; empty -> 0)
    z = (np.array([r[0] for r in rows]) - np.array([r[1] for r in rows])) / 2.0
    m = np.array([r[2] for r in rows])
    ref = (z[~m] ** 2 / 2).mean() if (~m).any() else 0.0
    ref += (np.logaddexp(0, -z[m])).mean() if m.any() else 0.0
    assert loss.item() == pytest.approx(ref, rel=1e-5, abs=1e-5)


def test_censored_term_pushes_scores_up():
    s = torch.tensor([0.0], requires_grad=True)
    cwm_loss(s, torch.tensor([0.0]), torch.tensor([True])).backward()
    assert s.grad.item() < 0  # gradient descent raises s


def test_soft_bce_matches_reference():
    s = torch.tensor([0.3, -1.0])
    y = torch.tensor([0.2, 0.9])
    p = expit(s.numpy())
    ref = -(y.numpy() * np.log(p) + (1 - y.numpy()) * np.log(1 - p)).mean()
    assert soft_bce(s, y).item() == pytest.approx(ref, rel=1e-6)


# ---- the trainer on small tables ---------------------------------------------------------------
def _cfg(name, wh, tmp_path, **kw):
    base = {"warehouse": wh.uri, "runs_root": str(tmp_path / "runs"), "epochs": 3, "patience": 2, "progress": False}
    return build_config(get_model(name).config_cls, base, kw)


def test_registry_and_config_errors(tmp_path):
    assert {"watch_time_fm", "watch_time_deepfm"} <= set(model_names())
    spec = get_model("watch_time_deepfm")
    assert spec.config_cls().backbone == "deepfm"
    with pytest.raises(ConfigError, match="label"):
        build_config(spec.config_cls, {"label": "nope"})
    with pytest.raises(ConfigError, match="lrr: unknown key"):
        build_config(spec.config_cls, {"lrr": 1})


def test_labels_reapplied_at_the_tables_defaults_match_the_table(warehouse):
    from trainers.config import DateSplit
    from trainers.watch_time.data import load_watch_time_data
    from trainers.watch_time.labels import LabelParams, prepare_labels

    write_tables(warehouse)
    data = load_watch_time_data(warehouse.uri, DateSplit())
    for split in ("train", "valid", "test"):
        c = data.splits[split].columns
        prep = prepare_labels(data, LabelParams("d2co", 0.0, 3))
        # the test tables smoothed quantiles with T=3, positional, like duration_stats's default
        assert np.allclose(prep.targets[split], c["d2co"])
        prep = prepare_labels(data, LabelParams("cwm", cwm_c_inv=40.0))
        assert np.allclose(prep.targets[split], c["cwm_target"])
    prep = prepare_labels(data, LabelParams("d2q", d2q_bins=5))
    assert np.allclose(prep.targets["train"], data.splits["train"].columns["d2q"])


@pytest.mark.parametrize("label", ["pcr", "wtg", "d2q", "d2co", "watch_time", "cwm"])
def test_predictions_map_to_seconds_within_duration(warehouse, label):
    from trainers.config import DateSplit
    from trainers.watch_time.data import load_watch_time_data
    from trainers.watch_time.labels import LabelParams, prepare_labels, score_to_seconds

    write_tables(warehouse)
    data = load_watch_time_data(warehouse.uri, DateSplit())
    hp = LabelParams(label, d2q_bins=4 if label == "d2q" else None)
    prep = prepare_labels(data, hp)
    d = data.splits["test"].columns["duration_s"]
    for s in (np.full(len(d), -30.0), np.zeros(len(d)), np.full(len(d), 30.0)):
        sec = score_to_seconds(data, prep, hp, "test", s)
        assert np.isfinite(sec).all() and (sec >= 0).all() and (sec <= d).all()
    lo = score_to_seconds(data, prep, hp, "test", np.full(len(d), -3.0))
    hi = score_to_seconds(data, prep, hp, "test", np.full(len(d), 3.0))
    assert (hi >= lo - 1e-9).all()  # monotone in the score
    if label == "pcr":
        assert np.allclose(score_to_seconds(data, prep, hp, "test", np.zeros(len(d))), d / 2)
    if label == "cwm":
        assert np.allclose(hi, lm.cwm_score_to_seconds(np.full(len(d), 3.0), 40.0, d))


def test_train_end_to_end_reproducible_and_traceable(warehouse, tmp_path):
    write_tables(warehouse)
    spec = get_model("watch_time_fm")
    cfg = _cfg("watch_time_fm", warehouse, tmp_path, label="cwm", seed=7)
    r1 = spec.train(cfg)
    r2 = spec.train(cfg)
    assert r1.run_dir != r2.run_dir
    assert r1.metrics["valid"] == r2.metrics["valid"] and r1.metrics["test"] == r2.metrics["test"]
    tables = read_json(r1.run_dir, "tables.json")
    assert tables["watch_time_labels"]["version"] == warehouse.current_version("watch_time_labels")
    assert tables["duration_stats"]["version"] == warehouse.current_version("duration_stats")
    assert set(tables) >= {"items", "users"}
    state = load_state(r1.run_dir)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    saved = read_json(r1.run_dir, "config.json")
    assert saved["config"]["label"] == "cwm" and saved["config"]["seed"] == 7
    assert read_json(r1.run_dir, "metrics.json")["throughput"]["loader_samples_per_s"] > 0


def test_a_planted_signal_is_learned(warehouse, tmp_path):
    write_tables(warehouse, users=60, items=80)
    res = get_model("watch_time_fm").train(_cfg("watch_time_fm", warehouse, tmp_path, label="pcr", epochs=8, lr=0.01))
    # item quality drives watch time: the ranking beats chance on the test days
    assert res.metrics["test"]["auc"] > 0.55
    assert res.metrics["test"]["xauc"] > 0.55


def test_synthetic_truth_adds_ndcg_against_the_planted_interest(warehouse, tmp_path):
    import pyarrow as pa

    from features.synthetic_truth import SYNTHETIC_TRUTH
    from trainers import metrics as M

    df = write_tables(warehouse)
    truth = df[["event_id", "user_id", "item_id", "event_ts", "interest"]].assign(
        is_noisy_play=False, is_complete=False, is_replay=False, session_index=0
    )
    warehouse.write_arrow(SYNTHETIC_TRUTH, pa.Table.from_pandas(truth, preserve_index=False))
    from trainers.config import DateSplit
    from trainers.watch_time.data import load_watch_time_data
    from trainers.watch_time.labels import LabelParams, prepare_labels
    from trainers.watch_time.trainer import evaluate_split

    data = load_watch_time_data(warehouse.uri, DateSplit())
    cfg = _cfg("watch_time_fm", warehouse, tmp_path)
    hp = LabelParams("pcr")
    prep = prepare_labels(data, hp)
    interest = df.set_index("event_id").loc[data.event_ids["test"], "interest"].to_numpy()
    out = evaluate_split(data, prep, hp, cfg, "test", interest)  # the planted interest as the score
    ref = M.ndcg_at_k(data.groups["test"], interest, interest, 3)
    assert out["ndcg@3_interest"] == pytest.approx(ref) and out["ndcg@3_interest"] == pytest.approx(1.0)
    assert data.tables["synthetic_truth"]["version"] == warehouse.current_version("synthetic_truth")
