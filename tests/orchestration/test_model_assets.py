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


def _report(instance, table: str, version: int) -> None:
    """A materialization of ``table`` with data version ``v<version>``, as a table asset records it."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=table, tags={"dagster/data_version": f"v{version}"})
    )


def test_models_retrain_on_a_new_input_table_version_by_automation_condition(warehouse, tmp_path):
    """Real declarative-automation evaluations (``dg.evaluate_automation_conditions``) against a
    real instance: a model is requested once its tables exist, not again while their data
    versions stay the same (a run that committed nothing), and again after a new version."""
    from orchestration.models import AUTOMATION_SENSOR, MODELS_OWNER, RETRAIN_CONDITION

    write_tables(warehouse)
    ext = build(load_settings(_config(tmp_path, warehouse)))
    fm = next(a for a in ext.assets if a.key.to_user_string() == "watch_time_fm")
    assert fm.automation_conditions_by_key[fm.key] == RETRAIN_CONDITION
    assert fm.owners_by_key[fm.key] == [MODELS_OWNER] and fm.code_versions_by_key[fm.key]
    assert "pytorch" in fm.specs_by_key[fm.key].kinds
    sensors = {s.name: s for s in ext.sensors}
    assert isinstance(sensors[AUTOMATION_SENSOR], dg.AutomationConditionSensorDefinition)
    assert "retrain_after_feature_refresh" not in sensors  # the hand-polled sensor is gone
    defs = dg.Definitions(assets=[fm], resources={"settings": SettingsResource(config_file=str(tmp_path / "recfeat.yaml"))})
    tables = sorted(k.to_user_string() for k in fm.asset_deps[fm.key])
    with dg.instance_for_test() as instance:
        def tick(cursor):
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            return result.get_num_requested(fm.key), result.cursor

        requested, cursor = tick(None)
        assert requested == 0  # its tables were never materialized
        for t in tables:
            _report(instance, t, 1)
        requested, cursor = tick(cursor)
        assert requested == 1  # never trained, every table present
        requested, cursor = tick(cursor)
        assert requested == 0  # requested already: nothing new since
        for t in tables:
            _report(instance, t, 1)  # materialized again, nothing committed: same data version
        requested, cursor = tick(cursor)
        assert requested == 0
        _report(instance, tables[0], 2)  # a new committed version of one table
        requested, cursor = tick(cursor)
        assert requested == 1
        requested, _ = tick(cursor)
        assert requested == 0


def test_code_version_follows_the_model_config(warehouse, tmp_path):
    a = build(load_settings(_config(tmp_path, warehouse)))
    b = build(load_settings(_config(tmp_path, warehouse, "    watch_time_deepfm: {dropout: 0.3}\n")))

    def versions(ext):
        return {k.to_user_string(): v for asset in ext.assets for k, v in asset.code_versions_by_key.items()}

    va, vb = versions(a), versions(b)
    assert va["watch_time_fm"] == vb["watch_time_fm"]
    assert va["watch_time_deepfm"] != vb["watch_time_deepfm"]
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    assert versions(build(load_settings(_config(moved, warehouse)))) == va  # where runs go is not code


def test_training_log_lines_reach_the_dagster_run_log(warehouse, tmp_path, monkeypatch):
    """The trainer's ``recfeat.train`` lines (one per epoch) are forwarded to ``context.log``."""
    import dataclasses
    import logging

    import trainers.registry as registry

    write_tables(warehouse)
    cfg_file = _config(tmp_path, warehouse)
    real = registry.get_model

    def logging_spec(name):
        spec = real(name)

        def train(cfg):
            logging.getLogger("recfeat.train").info(f"{name}: epoch 1/1: train loss 0.5")
            logging.getLogger("recfeat.train").debug("not forwarded: below INFO")
            return spec.train(cfg)

        return dataclasses.replace(spec, train=train)

    ext = build(load_settings(cfg_file))
    fm = next(a for a in ext.assets if a.key.to_user_string() == "watch_time_fm")
    monkeypatch.setattr(registry, "get_model", logging_spec)
    with dg.instance_for_test() as instance:
        result = dg.materialize([fm], instance=instance, resources={"settings": SettingsResource(config_file=str(cfg_file))})
        assert result.success
        messages = [r.user_message for r in instance.all_logs(result.run_id)]
    assert "watch_time_fm: epoch 1/1: train loss 0.5" in messages
    assert "not forwarded: below INFO" not in messages
    assert not logging.getLogger("recfeat.train").handlers  # removed after training


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
