"""trainers.multitask: shapes and parameter counts by hand, the ESMM loss on a tiny case, our EKTM
modules (shapes, attention, the donor detach, the closed gate at the start), the exposure-space
labels, and a real small training run that learns (Adam and PUB), registered as ``multitask``."""
from __future__ import annotations

import datetime as dt
import json
import logging
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from features.dimensions import ITEMS
from features.events import EVENTS
from trainers.loop import TRAIN_LOGGER
from trainers.multitask.data import exposure_labels, load_multitask_data
from trainers.multitask.losses import exposure_probs, task_losses
from trainers.multitask.models import EKTM, MMoE, PLE, FieldEmbedding, build_model
from trainers.multitask.trainer import MultiTaskConfig, train
from trainers.registry import get_model

CARDS = [3, 4]
TASKS = ("click", "long_view", "like")


# --------------------------------------------------------------------------- shapes by hand


def test_field_embedding_offsets_and_shape():
    emb = FieldEmbedding(CARDS, 2)
    assert emb.table.weight.shape == (7, 2) and emb.out_dim == 4
    x = torch.tensor([[2, 3]])
    out = emb(x)
    torch.testing.assert_close(out, torch.cat([emb.table.weight[2], emb.table.weight[3 + 3]]).unsqueeze(0))


def test_mmoe_and_ple_shapes_and_parameter_counts():
    x = torch.tensor([[0, 1], [2, 3], [1, 0]])
    mmoe = MMoE(CARDS, k=3, dim=2, experts=4, expert_dims=(5,))
    assert mmoe(x).shape == (3, 3, 5)
    assert mmoe.last_gates.shape == (3, 3, 4)
    # embedding 7*2; experts 4*(4*5+5); gates 3*(4*4+4)
    assert sum(p.numel() for p in mmoe.shared_parameters()) == 14 + 4 * 25
    assert sum(p.numel() for p in mmoe.task_parameters()) == 3 * 20
    ple = PLE(CARDS, k=3, dim=2, shared_experts=2, task_experts=1, expert_dims=(5,))
    assert ple(x).shape == (3, 3, 5)
    assert sum(p.numel() for p in ple.shared_parameters()) == 14 + 2 * 25
    # own experts 3*(4*5+5); gates 3*(4*3+3)
    assert sum(p.numel() for p in ple.task_parameters()) == 3 * 25 + 3 * 15


@pytest.mark.parametrize("backbone,ektm", [("single", False), ("shared_bottom", False), ("mmoe", False), ("ple", False),
                                           ("mmoe", True), ("ple", True)])
def test_every_model_gives_a_logit_per_task_and_splits_its_parameters(backbone, ektm):
    model = build_model(backbone, CARDS, 3, embed_dim=2, bottom_dims=(6,), expert_dims=(6,), tower_dims=(4,), ektm=ektm)
    assert model(torch.tensor([[0, 1], [2, 3]])).shape == (2, 3)
    shared = {id(p) for p in model.shared_parameters()}
    task = {id(p) for p in model.task_parameters()}
    assert not shared & task
    assert shared | task == {id(p) for p in model.parameters()}
    assert model.conditional == (backbone != "single")


def test_ektm_shapes_attention_and_initial_gate():
    torch.manual_seed(0)
    m = EKTM(k=3, dim=5, attn_dim=4, gate_bias=-2.0)
    h = torch.randn(2, 3, 5)
    out = m(h)
    assert out.shape == (2, 3, 5)
    assert m.last_attention.shape == (2, 3, 3)
    torch.testing.assert_close(m.last_attention.sum(-1), torch.ones(2, 3))
    assert m.gate.bias.detach().eq(-2.0).all()
    # by hand: h' = h + σ(gate) ⊙ t with t = ReLU(transmitter(route(h)))
    t = torch.relu(m.transmitter(m.route(h)))
    g = torch.sigmoid(m.gate(torch.cat([h, t], -1)))
    torch.testing.assert_close(out, h + g * t)


def test_ektm_router_does_not_move_the_other_tasks_representations():
    torch.manual_seed(1)
    m = EKTM(k=3, dim=4)
    h = torch.randn(2, 3, 4, requires_grad=True)
    m(h)[:, 0].sum().backward()
    assert h.grad[:, 1:].abs().max() == 0  # task 0's output reads the donors but sends them no gradient
    assert h.grad[:, 0].abs().max() > 0
    # yet the values are those of plain attention over all tasks
    with torch.no_grad():
        att = m.last_attention
        torch.testing.assert_close(m.route(h), att @ m.value(h))


# --------------------------------------------------------------------------- ESMM loss


def test_esmm_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [math.log(3.0), 0.0, -math.log(3.0)]])
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    p = exposure_probs(logits, conditional=True)
    # row 0: p_click = 1/2, p_lv = 1/2 * 3/4, p_like = 1/2 * 1/2; row 1: 3/4, 3/4 * 1/2, 3/4 * 1/4
    torch.testing.assert_close(p, torch.tensor([[0.5, 0.375, 0.25], [0.75, 0.375, 0.1875]]))
    losses = task_losses(logits, y, conditional=True)
    expected = [-(math.log(0.5) + math.log(0.25)) / 2, -(math.log(0.375) + math.log(0.625)) / 2,
                -(math.log(0.75) + math.log(0.8125)) / 2]
    torch.testing.assert_close(losses, torch.tensor(expected))
    # single-task models: a plain sigmoid per task
    torch.testing.assert_close(exposure_probs(logits, conditional=False), torch.sigmoid(logits))


def test_esmm_loss_is_finite_for_extreme_logits():
    logits = torch.tensor([[40.0, 40.0], [-40.0, -40.0]], requires_grad=True)
    losses = task_losses(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), conditional=True)
    assert torch.isfinite(losses).all()
    losses.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_exposure_labels_need_the_click():
    flags = {"click": np.array([1, 1, 0, 0], bool), "like": np.array([1, 0, 1, 0], bool)}
    np.testing.assert_array_equal(exposure_labels(flags, ("click", "like")), [[1, 1], [1, 0], [0, 0], [0, 0]])


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw,match", [
    ({"tasks": ("like", "click")}, "must start with"),
    ({"backbone": "shared_bottom", "ektm": True}, "ektm needs"),
    ({"backbone": "single", "optimizer": "pub"}, "shared parameters"),
])
def test_bad_configs_fail(kw, match):
    with pytest.raises(ValueError, match=match):
        MultiTaskConfig(**kw)


# --------------------------------------------------------------------------- a small run that learns

T0 = dt.datetime(2022, 4, 25, tzinfo=dt.timezone.utc)


def planted_events(days=14, users=30, items=20, per_day=6, seed=0) -> pa.Table:
    """Clicks when user and item parity agree (90 %) or not (10 %); long view on 70 % of clicks of
    even items; likes on 40 % of clicks of items < 5, and a few likes without a click."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {f.name: [] for f in EVENTS.schema}
    k = 0
    for day in range(days):
        for u in range(users):
            for i in rng.choice(items, per_day, replace=False):
                ts = T0 + dt.timedelta(days=day, seconds=int(rng.integers(0, 86_000)))
                click = bool(rng.random() < (0.9 if i % 2 == u % 2 else 0.1))
                row = {"event_id": f"e{k:06d}", "source": "t", "user_id": f"u{u}", "item_id": f"i{i}", "event_ts": ts,
                       "event_date": ts.date(), "source_file": "log.csv", "source_line": k + 1, "is_click": click,
                       "is_long_view": click and i % 2 == 0 and rng.random() < 0.7,
                       "is_like": (click and i < 5 and rng.random() < 0.4) or rng.random() < 0.01,
                       "is_follow": False, "is_comment": False}
                for name in cols:
                    cols[name].append(row.get(name))
                k += 1
    return pa.table(cols, schema=EVENTS.schema)


@pytest.fixture
def mt_warehouse(warehouse):
    warehouse.write_arrow(EVENTS, planted_events())
    ids = [f"i{i}" for i in range(20)]
    warehouse.write_arrow(ITEMS, pa.table({"item_id": ids, "source": ["t"] * 20, "author_id": [f"a{i % 2}" for i in range(20)]}))
    return warehouse


def small(root, tmp_path, **kw) -> MultiTaskConfig:
    base = dict(warehouse=root, runs_root=str(tmp_path / "runs"), tasks=TASKS, embed_dim=4, bottom_dims=(8,),
                expert_dims=(8,), experts=2, tower_dims=(8,), epochs=4, patience=4, batch_size=64, lr=1e-2,
                progress=False, seed=3)
    base.update(kw)
    return MultiTaskConfig(**base)


def test_data_split_by_day_labels_on_exposures_and_missing_dimensions(mt_warehouse, tmp_path):
    cfg = small(mt_warehouse.uri, tmp_path)
    data = load_multitask_data(cfg.warehouse, cfg.split, TASKS)
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 9 * 180, "valid": 2 * 180, "test": 3 * 180}
    y = data.splits["train"].columns["y"]
    assert y.shape == (9 * 180, 3)
    assert (y[:, 1:] <= y[:, :1]).all()  # no conversion without a click
    assert [f.name for f in data.encoder.fields] == ["user_id", "item_id", "author_id"]  # no users table: left out
    assert set(data.tables) == {"events", "items"}


@pytest.mark.parametrize("kw", [dict(backbone="mmoe"), dict(backbone="ple", ektm=True, optimizer="pub")])
def test_training_learns_the_planted_tasks(mt_warehouse, tmp_path, kw, caplog):
    with caplog.at_level(logging.INFO, logger=TRAIN_LOGGER):
        result = train(small(mt_warehouse.uri, tmp_path, **kw))
    epochs = [r.epoch for r in caplog.records if r.name == TRAIN_LOGGER]  # one progress line per epoch
    assert epochs == [h["epoch"] for h in result.metrics["history"]] and epochs
    test = result.metrics["test"]
    assert test["auc_click"] > 0.8, test
    assert test["auc_long_view"] > 0.8, test
    assert test["auc_like"] > 0.75, test
    assert set(result.metrics["history"][0]["train_loss"]) == set(TASKS)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["test"]["auc_mean"] == pytest.approx(test["auc_mean"])
    if kw.get("optimizer") == "pub":
        assert sum(metrics["pub"]["solves"].values()) > 0
        assert all(w > 0 for w in metrics["pub"]["final_weights"].values())


def test_registered_with_its_tables():
    spec = get_model("multitask")
    assert spec.config_cls is MultiTaskConfig
    assert spec.tables(None) == ["events", "items", "users"]
    assert spec.select_metric == "auc_mean"
