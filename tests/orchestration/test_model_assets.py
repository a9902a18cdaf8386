"""Model assets: a real Dagster materialization trains a model and reports metrics and versions."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import pytest

from orchestration.models import build, model_config
from orchestration.resources import SettingsResource
from pipelines.settings import ConfigError as SettingsConfigError
from pipelines.settings import load_settings
from trainers.config import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainers"))
from _watch_time_tables import write_tables  # noqa: E402
from test_din import write_click_tables  # noqa: E402


def _config(tmp_path, warehouse, extra: str = "") -> Path:
    path = tmp_path / "recfeat.yaml"
    path.write_text(
        f"warehouse:\n  root: {warehouse.uri}\n"
        f"training:\n  runs_root: {tmp_path / 'runs'}\n  models:\n"
        "    watch_time_fm: {epochs: 2, label: d2co}\n" + extra
    )
    return path


def test_model_asset_materializes_with_metrics(warehouse, tmp_path):
    write_tables(warehouse)
    cfg_file = _config(tmp_path, warehouse)
    settings = load_settings(cfg_file)
    ext = build(settings)
    names = {a.key.to_user_string() for a in ext.assets}
    assert {"watch_time_fm", "watch_time_deepfm"} <= names
    fm = next(a for a in ext.assets if a.key.to_user_string() == "watch_time_fm")
    deps = {k.to_user_string() for k in fm.asset_deps[fm.key]}
    assert deps == {"watch_time_labels", "duration_stats", "items", "users"}
    result = dg.materialize([fm], resources={"settings": SettingsResource(config_file=str(cfg_file))})
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert 0.0 <= meta["test/gauc"].value <= 1.0 and meta["valid/mae"].value >= 0
    versions = meta["table_versions"].value
    assert versions["watch_time_labels"] == warehouse.current_version("watch_time_labels")
    run_dir = Path(meta["run_dir"].value)
    assert json.loads((run_dir / "tables.json").read_text())["duration_stats"]["version"] == versions["duration_stats"]


def test_bad_model_override_fails_at_load_naming_the_field(warehouse, tmp_path):
    settings = load_settings(_config(tmp_path, warehouse, "    watch_time_deepfm: {dropout: 2}\n"))
    with pytest.raises(ConfigError, match="training.models.watch_time_deepfm: dropout"):
        build(settings)
    with pytest.raises(SettingsConfigError, match="training.split.train_days"):
        p = tmp_path / "bad.yaml"
        p.write_text("training:\n  split: {train_days: 0}\n")
        load_settings(p)


def test_sensor_requests_retraining_when_an_input_table_changes(warehouse, tmp_path):
    write_tables(warehouse)
    settings = load_settings(_config(tmp_path, warehouse))
    ext = build(settings)
    sensor = ext.sensors[0]
    res = {"settings": SettingsResource(config_file=str(tmp_path / "recfeat.yaml"))}
    with dg.build_sensor_context(resources=res) as ctx:
        first = sensor(ctx)
        assert isinstance(first, dg.RunRequest)
        cursor = ctx.cursor
    with dg.build_sensor_context(cursor=cursor, resources=res) as ctx:
        assert isinstance(sensor(ctx), dg.SkipReason)
    write_tables(warehouse, seed=1)  # new versions of every input table
    with dg.build_sensor_context(cursor=cursor, resources=res) as ctx:
        again = sensor(ctx)
        assert isinstance(again, dg.RunRequest)
        assert {k.to_user_string() for k in again.asset_selection} == {"watch_time_fm", "watch_time_deepfm"}


def test_model_config_layers(warehouse, tmp_path):
    settings = load_settings(_config(tmp_path, warehouse))
    cfg = model_config(settings, "watch_time_fm", {"seed": 3})
    assert cfg.epochs == 2 and cfg.seed == 3 and cfg.warehouse == warehouse.uri


def test_din_asset_materializes_with_click_metrics(warehouse, tmp_path):
    write_click_tables(warehouse)
    small = "    din: {epochs: 2, max_len: 6, embed_dim: 4, attention_units: [8], tower_units: [8], cape: true}\n"
    cfg_file = _config(tmp_path, warehouse, small)
    ext = build(load_settings(cfg_file))
    din = next(a for a in ext.assets if a.key.to_user_string() == "din")
    assert {k.to_user_string() for k in din.asset_deps[din.key]} == {"events", "items"}
    result = dg.materialize([din], resources={"settings": SettingsResource(config_file=str(cfg_file))})
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert 0.0 <= meta["test/gauc"].value <= 1.0 and 0.0 <= meta["test/auc"].value <= 1.0
    assert meta["valid/logloss"].value > 0 and meta["select_metric"].value == "gauc"
    versions = meta["table_versions"].value
    assert versions == {"events": warehouse.current_version("events"), "items": warehouse.current_version("items")}
    run_dir = Path(meta["run_dir"].value)
    assert json.loads((run_dir / "config.json").read_text())["config"]["cape"] is True
    assert json.loads((run_dir / "tables.json").read_text())["events"]["version"] == versions["events"]
