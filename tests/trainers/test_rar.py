"""trainers.rar: the config's errors, the co-interaction by hand and its pads, the backbones
unchanged without RAR, the data's point-in-time sets, and real training of DeepFM and DIN with
and without RAR on a tiny warehouse (``events``, ``items`` and two builds of ``lookalike_users``
and ``recall_items``)."""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from features.dimensions import ITEMS
from features.events import EVENTS
from features.lookalike import LOOKALIKE_USERS
from features.recall import RECALL_ITEMS
from trainers.config import ConfigError, build_config
from trainers.rar import (
    RAR,
    CoInteraction,
    RARConfig,
    RARDeepFM,
    batch_tensors,
    load_rar_data,
    masked_softmax,
    target_pool,
    train,
)
from trainers.registry import get_model
from trainers.watch_time.models import DeepFM

UTC = dt.timezone.utc
T0 = dt.datetime(2022, 4, 25, tzinfo=UTC)
CUTOFFS = (T0 + dt.timedelta(days=3), T0 + dt.timedelta(days=9))
N_USERS, N_ITEMS = 40, 20


# --------------------------------------------------------------------------- a tiny warehouse


def taste_events(days=14, per_day=4, seed=0) -> list[dict]:
    """Users of taste ``u % 2`` click items of group ``i % 2`` (85 %), others rarely (10 %)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        for day in range(days):
            secs = np.sort(rng.integers(0, 86_000, per_day))
            for j, i in enumerate(rng.choice(N_ITEMS, per_day, replace=False)):
                click = bool(rng.random() < (0.85 if i % 2 == u % 2 else 0.1))
                rows.append({"user_id": f"u{u}", "item_id": f"i{i}",
                             "event_ts": T0 + dt.timedelta(days=day, seconds=int(secs[j])), "is_click": click})
    return rows


def events_table(rows: list[dict]) -> pa.Table:
    cols: dict[str, list] = {f.name: [] for f in EVENTS.schema}
    for k, r in enumerate(rows):
        full = {"event_id": f"e{k:06d}", "source": "t", "source_file": "log.csv", "source_line": k + 1,
                "event_date": r["event_ts"].date(), **r}
        for name in cols:
            cols[name].append(full.get(name))
    return pa.table(cols, schema=EVENTS.schema)


def write_tiny_warehouse(warehouse, seed=0) -> None:
    warehouse.write_arrow(EVENTS, events_table(taste_events(seed=seed)))
    ids = [f"i{i}" for i in range(N_ITEMS)]
    warehouse.write_arrow(ITEMS, pa.table({"item_id": ids, "source": ["t"] * N_ITEMS,
                                           "author_id": [f"a{i % 4}" for i in range(N_ITEMS)],
                                           "tag": [f"{i % 3}" for i in range(N_ITEMS)]}))
    ts_type = LOOKALIKE_USERS.schema.field("cutoff_ts").type
    for n, cutoff in enumerate(CUTOFFS):
        # look-alikes: users of the same taste (the first build a little noisier); pools: the taste's items
        la = [(f"u{u}", r + 1, f"u{(u + 2 * (r + 1) + n) % N_USERS}", 0.9 - r / 20, cutoff)
              for u in range(N_USERS) for r in range(6)]
        warehouse.write_arrow(LOOKALIKE_USERS, pa.table([pa.array(c) for c in list(zip(*la))[:4]]
                                                        + [pa.array(list(zip(*la))[4], ts_type)], schema=LOOKALIKE_USERS.schema),
                              producer={"cutoff_ts": cutoff.isoformat()})
        rc = [(f"u{u}", r + 1, f"i{(u % 2 + 2 * r) % N_ITEMS}", 1.0 / (r + 1), "i2i", cutoff)
              for u in range(N_USERS) for r in range(8)]
        warehouse.write_arrow(RECALL_ITEMS, pa.table([pa.array(c) for c in list(zip(*rc))[:5]]
                                                     + [pa.array(list(zip(*rc))[5], ts_type)], schema=RECALL_ITEMS.schema),
                              producer={"cutoff_ts": cutoff.isoformat()})


@pytest.fixture
def tiny(warehouse):
    write_tiny_warehouse(warehouse)
    return warehouse


def small(root: str, tmp_path: Path, **kw) -> RARConfig:
    base = dict(warehouse=root, runs_root=str(tmp_path / "runs"), embed_dim=4, rar_dim=8, mlp_dims=(16,), max_len=6,
                attention_units=(8,), tower_units=(16,), k_users=4, k_items=3, pool_size=8, epochs=4, patience=4,
                batch_size=128, lr=1e-2, progress=False, seed=5, item_fields=("author_id",), simhash_groups=2,
                simhash_bits=8)
    base.update(kw)
    return RARConfig(**base)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(("override", "message"), [
    ({"sources": ["u2u", "u2u"]}, "sources must not repeat"),
    ({"sources": ["x2x"]}, "sources"),
    ({"k_items": 30, "pool_size": 20}, "k_items .* pool_size"),
    ({"simhash_groups": 100}, "simhash_groups"),
    ({"recall_loss_weight": -1}, "recall_loss_weight"),
    ({"backbone": "fm"}, "backbone"),
    ({"bogus": 1}, "bogus: unknown key"),
])
def test_bad_config_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config(RARConfig, override, origin="training.models.rar")


def test_registered_with_its_tables():
    spec = get_model("rar")
    assert spec.config_cls is RARConfig and spec.select_metric == "gauc"
    assert spec.tables(RARConfig()) == ["events", "items", "lookalike_users", "recall_items"]
    assert spec.tables(RARConfig(sources=(), item_fields=())) == ["events"]
    assert spec.tables(RARConfig(sources=("i2i",))) == ["events", "items", "recall_items"]


# --------------------------------------------------------------------------- the module by hand


def test_masked_softmax_and_target_pool_by_hand():
    w = masked_softmax(torch.tensor([[0.0, math.log(3.0), 5.0]]), torch.tensor([[True, True, False]]))
    assert torch.allclose(w, torch.tensor([[0.25, 0.75, 0.0]]))
    assert masked_softmax(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool)).eq(0).all()  # no real key: zeros
    t = torch.tensor([[2.0, 0.0, 0.0, 0.0]])  # sqrt(d) = 2: scores = e_j[0]
    e = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]])
    got = target_pool(t, e, torch.tensor([[True, True, False]]))
    assert torch.allclose(got, 0.25 * e[0, 0] + 0.75 * e[0, 1])


@pytest.mark.parametrize("sources", [("u2u",), ("i2i",), ("u2u", "i2i")])
def test_pads_change_the_co_interaction_by_nothing(sources):
    torch.manual_seed(0)
    co = CoInteraction(6, 5, 4, sources).eval()
    t = torch.randn(3, 5)
    u, i = torch.randn(3, 2, 6), torch.randn(3, 3, 5)
    um, im = torch.tensor([[True, False], [True, True], [False, False]]), torch.tensor([[True, True, False]] * 3)
    r1, a1 = co(t, u if "u2u" in sources else None, um, i if "i2i" in sources else None, im)
    # pads with junk values, and extra pads appended
    u2, i2 = u.clone(), i.clone()
    u2[~um], i2[~im] = 100.0, -50.0
    u2, i2 = torch.cat([u2, torch.full((3, 2, 6), 7.0)], 1), torch.cat([i2, torch.full((3, 1, 5), 3.0)], 1)
    um2, im2 = torch.cat([um, torch.zeros(3, 2, dtype=torch.bool)], 1), torch.cat([im, torch.zeros(3, 1, dtype=torch.bool)], 1)
    r2, a2 = co(t, u2 if "u2u" in sources else None, um2, i2 if "i2i" in sources else None, im2)
    assert torch.allclose(r1, r2, atol=1e-6)
    assert r1.shape == (3, 4 * len(sources)) and (a1 is None) == ("i2i" not in sources)
    if a1 is not None:
        assert torch.allclose(a1, a2, atol=1e-6)
    if sources == ("u2u",):
        assert r1[2].eq(0).all()  # a user set with no real element pools to zeros


def test_without_sources_the_backbone_is_unchanged():
    torch.manual_seed(1)
    plain = DeepFM([5, 7, 3], 4, (8,), 0.0).eval()
    ours = RARDeepFM([5, 7, 3], 4, (8,), 0.0).eval()
    ours.load_state_dict(plain.state_dict())
    x = torch.tensor([[1, 2, 0], [4, 6, 2]])
    assert torch.equal(plain(x), ours(x))
    cfg = RARConfig(sources=(), embed_dim=4, mlp_dims=(8,), item_fields=())
    model = RAR([7], 5, cfg)
    assert model.co is None and not hasattr(model, "user_emb")


# --------------------------------------------------------------------------- data


def test_examples_get_the_sets_of_the_build_valid_at_their_time(tiny, tmp_path):
    cfg = small(tiny.uri, tmp_path, k_users=2, pool_size=3)
    data = load_rar_data(cfg)
    la_v = [v for v in tiny.versions("lookalike_users")]
    rc_v = [v for v in tiny.versions("recall_items")]
    for name, split in data.splits.items():
        sets = data.sets[name]
        ts = split.ts_us
        first, second = (int((c - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1)) for c in CUTOFFS)
        want = np.where(ts >= second, la_v[1], np.where(ts >= first, la_v[0], -1))
        assert np.array_equal(sets.lookalike_build, want)
        assert np.array_equal(sets.recall_build, np.where(ts >= second, rc_v[1], np.where(ts >= first, rc_v[0], -1)))
        before = ts < first
        assert (sets.lookalikes[before] == 0).all() and (sets.pool[before] == 0).all()
        # a user's look-alikes at rank 1 are u + 2 + n (build n); codes are 1-based positions of sorted ids
        ids = np.array(data.user_ids, dtype=str)
        users = data.din.user_ids[split.users]
        rows = np.flatnonzero(ts >= second)[:20]
        for r in rows:
            u = int(users[r][1:])
            assert ids[sets.lookalikes[r, 0] - 1] == f"u{(u + 2 + 1) % N_USERS}"
    assert data.selection_stats["train"]["lookalike_before_first_cutoff"] > 0  # counted, not dropped
    assert data.tables["lookalike_users"]["versions_used"] == la_v
    assert [b["cutoff_ts"] for b in data.tables["recall_items"]["builds"]] == [c.isoformat() for c in CUTOFFS]


def test_a_missing_source_table_names_the_source(warehouse, tmp_path):
    warehouse.write_arrow(EVENTS, events_table(taste_events(days=14, per_day=2)))
    with pytest.raises(ValueError, match="sources includes u2u, which needs the lookalike_users table"):
        load_rar_data(small(warehouse.uri, tmp_path, item_fields=(), sources=("u2u",)))


def test_the_chosen_recall_items_are_the_most_similar_pool_items(tiny, tmp_path):
    cfg = small(tiny.uri, tmp_path, selection="exact", k_items=2)
    data = load_rar_data(cfg)
    torch.manual_seed(0)
    model = RAR([data.din.encoder.encoders[f].cardinality for f in data.fields], data.n_users, cfg)
    rows = np.flatnonzero(data.sets["test"].pool.any(1))[:16]
    batch = batch_tensors(data, cfg, "test", rows)
    codes, mask = model.select_items(model.item_vectors(batch["target"]), batch["pool"])
    with torch.no_grad():
        t = torch.nn.functional.normalize(model.item_vectors(batch["target"]), dim=-1)
        pv = torch.nn.functional.normalize(model.item_vectors(batch["pool"]), dim=-1)
        cos = (pv * t[:, None]).sum(-1).masked_fill(~batch["pool"].any(-1), -9)
        best = torch.topk(cos, 2, dim=1).indices
    want = torch.gather(batch["pool"], 1, best[..., None].expand(-1, -1, batch["pool"].shape[-1]))
    assert torch.equal(codes, want) and mask.all()


# --------------------------------------------------------------------------- real training


@pytest.mark.parametrize("backbone", ["deepfm", "din"])
@pytest.mark.parametrize("sources", [(), ("u2u", "i2i")])
def test_training_learns_with_and_without_rar(tiny, tmp_path, backbone, sources):
    cfg = small(tiny.uri, tmp_path, backbone=backbone, sources=sources)
    r = train(cfg)
    m = r.metrics
    losses = [h["train_loss"] for h in m["history"]]
    assert losses[-1] < losses[0]  # the loss falls
    assert m["test"]["auc"] > 0.7  # the planted taste is learnt
    assert all(math.isfinite(h["logloss"]) for h in m["history"])
    run = Path(r.run_dir)
    tables = json.loads((run / "tables.json").read_text())
    assert tables["events"]["version"] == tiny.current_version("events")
    if sources:
        assert tables["lookalike_users"]["versions_used"] == tiny.versions("lookalike_users")
        assert len(tables["recall_items"]["builds"]) == 2
    else:
        assert "lookalike_users" not in tables
    assert json.loads((run / "config.json").read_text())["model"] == "rar"


def test_rar_changes_the_scores_and_reruns_identically(tiny, tmp_path):
    cfg = small(tiny.uri, tmp_path, epochs=2, patience=2)
    r1, r2 = train(cfg), train(cfg)
    assert r1.metrics["test"] == r2.metrics["test"] and r1.metrics["history"] == r2.metrics["history"]
    bare = train(small(tiny.uri, tmp_path, epochs=2, patience=2, sources=()))
    assert bare.metrics["test"]["logloss"] != r1.metrics["test"]["logloss"]
    i2i_only = train(small(tiny.uri, tmp_path, epochs=2, patience=2, sources=("i2i",), recall_loss_weight=0.0))
    with_aux = train(small(tiny.uri, tmp_path, epochs=2, patience=2, sources=("i2i",), recall_loss_weight=1.0))
    assert i2i_only.metrics["history"][0]["train_loss"] != with_aux.metrics["history"][0]["train_loss"]


# --------------------------------------------------------------------------- the synthetic default, end to end


@pytest.mark.slow
def test_trains_on_a_tiny_synthetic_warehouse_with_two_builds(spark, tmp_path):
    """The generator's KuaiRand files, ingested; two look-alike and recall builds through the
    pipeline jobs (cutoffs 2022-04-12 and 04-15); RAR on DeepFM and DIN for one epoch."""
    from pipelines.ingest import ingest_dimension, ingest_with_settings
    from pipelines.lookalike import LookalikeSettings, build_lookalike_table, build_user_vectors_table
    from pipelines.recall import RecallSettings, build_item_neighbors_table, build_recall_table
    from pipelines.settings import load_settings
    from pipelines.sources import adapter_for
    from pipelines.synthetic import generate
    from pipelines.warehouse import Warehouse

    config = tmp_path / "recfeat.yaml"
    config.write_text(f"warehouse: {{root: {tmp_path}/warehouse}}\nspark: {{master: \"local[2]\", shuffle_partitions: 2}}\n"
                      f"sources: {{synthetic: {{kind: synthetic, path: {tmp_path}/sources/synthetic}}}}\n"
                      "synthetic: {events: 4000, days: 10, seed: 3}\npartitions: {start_date: 2022-04-08, end_date: 2022-04-18}\n"
                      "ingest: {settle_s: 0}\n")
    project = load_settings(config)
    generate(project.source.path, project.synthetic)
    wh = Warehouse(project.warehouse.root)
    adapter = adapter_for("synthetic", project.source)
    ingest_with_settings(spark, wh, adapter, project)
    for table in ("users", "items"):
        ingest_dimension(wh, adapter, table)
    for cutoff in ("2022-04-12T00:00:00Z", "2022-04-15T00:00:00Z"):
        look = LookalikeSettings.model_validate({**project.lookalike.model_dump(), "cutoff_ts": cutoff, "k": 10,
                                                 "lsh": {**project.lookalike.lsh.model_dump(), "auto_bands": False, "bands": 8}})
        rec = RecallSettings.model_validate({**project.recall.model_dump(), "cutoff_ts": cutoff, "size": 20}).resolved(look)
        build_user_vectors_table(spark, wh, look)
        build_lookalike_table(spark, wh, look)
        build_item_neighbors_table(spark, wh, rec)
        build_recall_table(spark, wh, rec)
    for backbone in ("deepfm", "din"):
        cfg = RARConfig(warehouse=wh.uri, runs_root=str(tmp_path / "runs"), backbone=backbone, epochs=1, progress=False,
                        split={"train_days": 6, "valid_days": 2, "test_days": 2})
        r = train(cfg)
        stats = r.metrics["selection"]["train"]
        assert stats["lookalike_before_first_cutoff"] > 0 and stats["with_lookalikes"] > 0 and stats["with_pool"] > 0
        assert len(r.tables["lookalike_users"]["versions_used"]) == 2
        assert math.isfinite(r.metrics["test"]["logloss"]) and 0 <= r.metrics["test"]["auc"] <= 1


def test_a_user_set_without_look_alikes_and_narrower_sets_than_loaded(tiny, tmp_path):
    data = load_rar_data(small(tiny.uri, tmp_path))  # k_users 4, pool_size 8
    from trainers.rar import train_on_data

    narrow = small(tiny.uri, tmp_path, k_users=0, pool_size=4, epochs=1)
    batch = batch_tensors(data, narrow, "test", np.arange(5))
    assert batch["lookalikes"].shape == (5, 0) and batch["pool"].shape[1] == 4
    assert math.isfinite(train_on_data(narrow, data, write_run=False).metrics["test"]["logloss"])
    with pytest.raises(ValueError, match="exceed the loaded sets"):
        train_on_data(small(tiny.uri, tmp_path, pool_size=12), data, write_run=False)
