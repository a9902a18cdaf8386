"""Tracked runs: a real training run indexed in a real MLflow store (trainers/tracking.py),
its training curves, ``recfeat runs``, and a store that fails without losing the run."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from orchestration.cli import main
from orchestration.models import build
from orchestration.resources import SettingsResource
from pipelines.settings import ConfigError as SettingsConfigError
from pipelines.settings import load_settings
from trainers.curves import CURVES_FILE, loss_series, plot_curves, select_key
from trainers.runs import is_complete, list_runs
from trainers.tracking import metric_key, run_metrics, target

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _watch_time_tables import write_tables  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(tmp_path, warehouse, tracking: str = "") -> Path:
    path = tmp_path / "recfeat.yaml"
    path.write_text(
        f"warehouse:\n  root: {warehouse.uri}\n"
        f"training:\n  runs_root: {tmp_path / 'runs'}\n{tracking}  models:\n"
        "    watch_time_fm: {epochs: 3, patience: 5}\n"
    )
    return path


def _materialize_fm(cfg_file: Path):
    ext = build(load_settings(cfg_file))
    fm = next(a for a in ext.assets if a.key.to_user_string() == "watch_time_fm")
    result = dg.materialize([fm], resources={"settings": SettingsResource(config_file=str(cfg_file))})
    assert result.success
    return result.get_asset_materialization_events()[0].materialization.metadata


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_training_run_is_tracked_in_mlflow_and_listed_by_recfeat_runs(warehouse, tmp_path, capsys):
    write_tables(warehouse, users=20, items=30)
    cfg_file = _config(tmp_path, warehouse)
    meta = _materialize_fm(cfg_file)  # the model asset: project settings, so tracking is on
    run_dir = Path(meta["run_dir"].value)
    assert is_complete(run_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    tables = json.loads((run_dir / "tables.json").read_text())
    history = saved["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]

    # The curves: a PNG in the run directory, listed in _COMPLETE, and in the materialization.
    curves = run_dir / CURVES_FILE
    assert curves.read_bytes()[:8] == PNG_MAGIC
    assert CURVES_FILE in json.loads((run_dir / "_COMPLETE").read_text())["files"]
    assert meta["figure_curves_path"].value == str(curves)
    assert meta["figure_curves"].value.startswith(f"![{CURVES_FILE}](data:image/png;base64,")

    # MLflow: the local default store beside the runs root, one run naming the run directory.
    tg = target({}, tmp_path / "runs")
    assert tg.uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tg.uri)
    exp = client.get_experiment_by_name("recfeat")
    assert exp.artifact_location == (tmp_path / "mlflow" / "artifacts").as_uri()
    (run,) = client.search_runs([exp.experiment_id])
    assert meta["mlflow_run_id"].value == run.info.run_id
    assert run.info.status == "FINISHED"
    tags, params = run.data.tags, run.data.params
    assert tags["recfeat.run_dir"] == str(run_dir.resolve()) and tags["recfeat.model"] == "watch_time_fm"
    assert tags["recfeat.run_id"] == run_dir.name and tags["recfeat.select_metric"] == "gauc"
    versions = {t: r["version"] for t, r in tables.items()}
    assert json.loads(tags["recfeat.tables"]) == versions
    assert {k[len("table_version."):]: int(v) for k, v in params.items() if k.startswith("table_version.")} == versions
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert params["epochs"] == "3" and params["lr"] == str(config["lr"]) and params["split.train_days"] == "9"
    assert params["label"] == config["label"]
    # per-epoch metrics, one step per epoch, the values of metrics.json's history
    for key, column in (("train_loss", "train_loss"), ("valid/gauc", "gauc"), ("valid/ndcg_at_3", "ndcg@3")):
        steps = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert [s for s, _ in steps] == [h["epoch"] for h in history], key
        assert [v for _, v in steps] == pytest.approx([h[column] for h in history]), key
    assert run.data.metrics["test/gauc"] == pytest.approx(saved["test"]["gauc"])
    assert run.data.metrics["best_valid/gauc"] == pytest.approx(saved["valid"]["gauc"])
    assert run.data.metrics["best_epoch"] == saved["best_epoch"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.pt", CURVES_FILE, "config.json", "tables.json", "metrics.json"} <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path / "dl")))
    assert local.read_bytes() == (run_dir / "model.pt").read_bytes()

    # recfeat runs: the run, read from MLflow, with its metric and table versions.
    capsys.readouterr()
    assert main(["--config", str(cfg_file), "runs"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if run_dir.name in row)
    assert line.split()[:4] == ["watch_time_fm", run_dir.name, "tracked", str(saved["best_epoch"])]
    assert f"gauc {saved['valid']['gauc']:.4f}" in line and f"gauc {saved['test']['gauc']:.4f}" in line
    for t, v in versions.items():
        assert f"{t} v{v}" in line
    assert tg.uri in out
    assert main(["--config", str(cfg_file), "runs", "watch_time_deepfm"]) == 0
    assert "no complete runs of watch_time_deepfm" in capsys.readouterr().out

    # A run whose directory is gone is flagged, not hidden.
    moved = tmp_path / "moved"
    run_dir.rename(moved)
    assert main(["--config", str(cfg_file), "runs"]) == 0
    assert f"watch_time_fm  {run_dir.name}  no-dir" in capsys.readouterr().out


def test_an_unreachable_tracking_server_loses_no_run(warehouse, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, no back-off
    write_tables(warehouse, users=20, items=30)
    bad = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    cfg_file = _config(tmp_path, warehouse, f"  tracking: {{uri: '{bad}'}}\n")
    with caplog.at_level(logging.WARNING, logger="recfeat.train.tracking"):
        assert main(["--config", str(cfg_file), "train", "watch_time_fm", "--set", "epochs=1"]) == 0
    (run_dir,) = list_runs(tmp_path / "runs", "watch_time_fm")
    assert is_complete(run_dir) and (run_dir / "model.pt").is_file() and (run_dir / CURVES_FILE).is_file()
    assert f"run directory: {run_dir}" in capsys.readouterr().out
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "recfeat.train.tracking"]
    assert f"run {run_dir} was not tracked in MLflow at {bad}" in warning and "the run directory is complete" in warning

    # recfeat runs with the store still unreachable: a warning, and the run from its directory.
    assert main(["--config", str(cfg_file), "runs"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"recfeat: warning: cannot read MLflow at {bad}")
    assert f"watch_time_fm  {run_dir.name}  unchecked" in captured.out
    # against a store that works but never saw it: untracked, its numbers from metrics.json
    good = _config(tmp_path, warehouse)
    assert main(["--config", str(good), "runs"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if run_dir.name in row)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert line.split()[2] == "untracked" and f"gauc {saved['test']['gauc']:.4f}" in line
    # once the store works, the run directory is logged after the fact and is then tracked
    assert main(["--config", str(good), "runs", "--track-untracked"]) == 0
    out = capsys.readouterr().out
    assert f"tracked {run_dir} as MLflow run " in out
    line = next(row for row in out.splitlines() if row.startswith("watch_time_fm ") and run_dir.name in row)
    assert line.split()[2] == "tracked" and f"gauc {saved['test']['gauc']:.4f}" in line


def test_a_broken_local_store_or_an_incomplete_run_is_a_warning_not_an_error(tmp_path, caplog):
    from trainers.runs import RunDir, track_run

    run = RunDir(tmp_path / "runs", "m", {"seed": 1, "tracking": {"enabled": True}})
    run.write_json("metrics.json", {"history": [{"epoch": 0, "train_loss": 1.0}]})
    with caplog.at_level(logging.WARNING, logger="recfeat.train.tracking"):
        assert track_run(run.path, {"enabled": True}) is None  # not complete yet: never indexed
        run.write_tables(str(tmp_path / "no-warehouse"), {})
        store = tmp_path / "mlflow"
        store.mkdir()
        (store / "mlflow.db").write_bytes(b"this is not an SQLite database\n" * 64)
        assert track_run(run.path, {"enabled": True}) is None
    assert track_run(run.path, {"enabled": False}) is None and track_run(run.path, None) is None  # off: no attempt
    first, second = [r.getMessage() for r in caplog.records if r.name == "recfeat.train.tracking"]
    assert "incomplete run" in first
    assert f"was not tracked in MLflow at sqlite:///{store / 'mlflow.db'}" in second
    assert is_complete(run.path)


def test_a_password_in_the_tracking_uri_is_refused(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("training:\n  tracking: {uri: 'http://me:secret@mlflow.example:5000'}\n")
    with pytest.raises(SettingsConfigError, match="training.tracking.uri.*MLFLOW_TRACKING_PASSWORD"):
        load_settings(p)


def test_metrics_of_a_multitask_history_and_mlflow_names():
    metrics = {
        "history": [
            {"epoch": 0, "train_loss": {"click": 0.5, "like": 0.25}, "auc_click": 0.6, "auc_mean": 0.55},
            {"epoch": 1, "train_loss": {"click": 0.4, "like": 0.2}, "auc_click": 0.7, "auc_mean": 0.65, "note": "x"},
        ],
        "valid": {"auc_mean": 0.65}, "test": {"ndcg@10": 0.3}, "best_epoch": 1, "epochs_run": 2,
    }
    got = {(k, s): v for k, v, s in run_metrics(metrics)}
    assert got[("train_loss", 0)] == 0.75 and got[("train_loss/click", 1)] == 0.4 and got[("train_loss/like", 0)] == 0.25
    assert got[("valid/auc_mean", 1)] == 0.65 and got[("best_valid/auc_mean", 1)] == 0.65
    assert got[("test/ndcg_at_10", 1)] == 0.3 and got[("best_epoch", 0)] == 1.0
    assert not any(k.startswith("valid/note") for k, _ in got)
    assert metric_key("ndcg@10") == "ndcg_at_10" and metric_key("a b/c:d-e.f") == "a b/c:d-e.f" and metric_key("x%y") == "x_y"
    series = loss_series(metrics["history"])
    assert series["sum"] == [(0, 0.75), (1, pytest.approx(0.6))] and series["click"] == [(0, 0.5), (1, 0.4)]
    assert select_key(metrics["history"], "auc_mean") == "auc_mean"
    assert select_key([{"epoch": 0, "valid_ndcg@10": 0.1}], "ndcg@10") == "valid_ndcg@10"


def test_curves_of_an_empty_history_are_still_a_png(tmp_path):
    out = tmp_path / "c.png"
    plot_curves([], out, title="none")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_importing_the_registry_and_the_cli_does_not_import_mlflow():
    code = ("import sys, trainers.registry, trainers.runs, orchestration.cli, orchestration.models; "
            "sys.exit(1 if 'mlflow' in sys.modules or 'matplotlib' in sys.modules else 0)")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_listing_runs_does_not_import_torch():
    # `recfeat runs` reads run directories and the store: no model is loaded, so no torch
    code = ("import sys, trainers.runs, trainers.tracking, orchestration.cli_runs; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]


SECRET_URI = "http://me:secret@mlflow.example:5000"


def test_a_password_or_a_blank_field_is_refused_on_every_route_to_a_config(tmp_path, warehouse, capsys):
    from orchestration.models import model_config
    from trainers.config import ConfigError, TrackingConfig, build_config
    from trainers.runs import RunDir
    from trainers.watch_time.trainer import WatchTimeConfig

    # the trainers' config itself (build_config in a script, --set, --model-config, --from-run all end here)
    with pytest.raises(ConfigError, match=r"tracking\.uri: .*holds a password.*MLFLOW_TRACKING_PASSWORD") as err:
        build_config(WatchTimeConfig, {"tracking": {"uri": SECRET_URI}})
    assert "secret" not in str(err.value)
    for field in ("experiment", "dir"):
        with pytest.raises(ConfigError, match=rf"tracking\.{field}: .*must not be empty"):
            build_config(WatchTimeConfig, {"tracking": {field: "  "}})
        with pytest.raises(SettingsConfigError, match=rf"training\.tracking\.{field}.*must not be empty"):
            p = tmp_path / f"blank-{field}.yaml"
            p.write_text(f"training:\n  tracking: {{{field}: ''}}\n")
            load_settings(p)
    assert TrackingConfig(uri="http://mlflow.example:5000").uri == "http://mlflow.example:5000"  # no password: fine
    # a dict that never went through TrackingConfig (an older config.json)
    with pytest.raises(ValueError, match="tracking.uri holds a password"):
        target({"uri": SECRET_URI})

    # training.models.<m>.tracking in the project settings
    p = tmp_path / "per-model.yaml"
    p.write_text(f"training:\n  models:\n    watch_time_fm: {{tracking: {{uri: '{SECRET_URI}'}}}}\n")
    with pytest.raises(ConfigError, match=r"training\.models\.watch_time_fm: tracking\.uri: .*holds a password"):
        model_config(load_settings(p), "watch_time_fm")

    # the CLI: --set, --model-config, --from-run; refused before any data is read, the password never printed
    cfg_file = _config(tmp_path, warehouse)
    model_file = tmp_path / "model.yaml"
    model_file.write_text(f"tracking: {{uri: '{SECRET_URI}'}}\n")
    earlier = RunDir(tmp_path / "earlier", "watch_time_fm", {"tracking": {"enabled": True, "uri": SECRET_URI}})
    earlier.write_tables(str(tmp_path / "no-warehouse"), {})
    for extra in (["--set", f"tracking.uri={SECRET_URI}"], ["--model-config", str(model_file)],
                  ["--from-run", str(earlier.path)]):
        capsys.readouterr()
        assert main(["--config", str(cfg_file), "train", "watch_time_fm", *extra]) == 1, extra
        err = capsys.readouterr().err
        assert "tracking.uri" in err and "holds a password" in err and "secret" not in err, (extra, err)
    assert list_runs(tmp_path / "runs", "watch_time_fm") == []


def test_uris_are_redacted_in_every_message_and_a_failure_keeps_its_traceback(tmp_path, caplog, capsys, monkeypatch):
    from features.uris import redact_uri, redact_uris_in
    from trainers.runs import RunDir
    from trainers.tracking import describe, log_run

    assert redact_uri("http://me:pw@h:5000/x?token=t#f") == "http://***@h:5000/x?***"
    assert redact_uri("http://token@h:5000") == "http://***@h:5000"
    assert redact_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"  # nothing to hide: unchanged
    assert redact_uri("http://h:5000") == "http://h:5000"
    assert redact_uris_in("request to 'http://u:p@h/api?k=v' failed") == "request to 'http://***@h/api?***' failed"

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = _free_port()  # nothing listens there
    uri = f"http://tok@127.0.0.1:{port}/?token=hunter2"
    tracking = {"enabled": True, "uri": uri, "dir": None, "experiment": "recfeat"}
    assert "hunter2" not in describe(tracking) and "tok@" not in describe(tracking)
    run = RunDir(tmp_path / "runs", "m", {"seed": 1, "tracking": tracking})
    run.write_json("metrics.json", {"history": [{"epoch": 0, "train_loss": 1.0}]})
    run.write_tables(str(tmp_path / "no-warehouse"), {})
    with caplog.at_level(logging.DEBUG, logger="recfeat.train.tracking"):
        assert log_run(run.path, tracking) is None
    records = [r for r in caplog.records if r.name == "recfeat.train.tracking"]
    (warning,) = [r for r in records if r.levelno == logging.WARNING]
    assert f"at http://***@127.0.0.1:{port}/?***" in warning.getMessage()
    debug = [r for r in records if r.levelno == logging.DEBUG and r.exc_info]
    assert debug and debug[0].exc_info[0] is not None  # the traceback, besides the one-line warning
    assert not any("hunter2" in r.getMessage() or "tok@" in r.getMessage() for r in records)

    # recfeat runs against the same server: a redacted warning, and the traceback at DEBUG
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(f"training:\n  runs_root: {tmp_path / 'runs'}\n  tracking: {{uri: '{uri}'}}\n")
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.DEBUG, logger="recfeat.cli.runs"):
        assert main(["--config", str(cfg), "runs"]) == 0
    out = capsys.readouterr()
    assert out.err.startswith(f"recfeat: warning: cannot read MLflow at http://***@127.0.0.1:{port}/?***")
    assert "hunter2" not in out.err + out.out and "tok@" not in out.err + out.out
    assert any(row.split()[:3] == ["m", run.path.name, "unchecked"] for row in out.out.splitlines())
    assert [r for r in caplog.records if r.name == "recfeat.cli.runs" and r.exc_info]


def test_save_run_tracks_beside_the_configured_runs_root_and_the_result_carries_the_mlflow_id(tmp_path, caplog):
    import shutil

    import torch

    from orchestration.models import run_metadata
    from trainers.runs import RunResult, save_run
    from trainers.tracking import tracked_runs

    real = tmp_path / "disk" / "runs"
    real.mkdir(parents=True)
    (tmp_path / "project").mkdir()
    root = tmp_path / "project" / "runs"
    root.symlink_to(real, target_is_directory=True)  # the configured runs root is a link
    model = "o'brien_fm"  # a quote in the model name: the MLflow filter must still hold it
    tracking = {"enabled": True, "uri": None, "dir": None, "experiment": "recfeat"}
    metrics = {"history": [{"epoch": 0, "train_loss": 1.0, "gauc": 0.6}], "valid": {"gauc": 0.6},
               "test": {"gauc": 0.5}, "select_metric": "gauc", "best_epoch": 0, "epochs_run": 1}
    run_dir = save_run(root, model, {"seed": 1, "tracking": tracking}, None, {}, {"w": torch.zeros(1)}, metrics,
                       str(tmp_path / "no-warehouse"), {})
    # the local store is beside the configured root, where recfeat runs (runs_root) looks, not beside its target
    assert (tmp_path / "project" / "mlflow" / "mlflow.db").is_file()
    assert not (tmp_path / "disk" / "mlflow").exists()
    (tracked,) = tracked_runs(tracking, root, model)
    assert tracked.run_id == run_dir.name and tracked.status == "FINISHED" and tracked.model == model
    assert tracked_runs(tracking, root, "o'brien") == []
    result = RunResult(model, run_dir, metrics, {})
    assert result.mlflow_run_id == tracked.mlflow_run_id
    # the asset's metadata takes the id from the result: MLflow is not asked again (here: it is gone)
    shutil.rmtree(tmp_path / "project" / "mlflow")
    with caplog.at_level(logging.DEBUG, logger="recfeat.train.tracking"):
        meta = run_metadata(result)
    assert meta["mlflow_run_id"] == tracked.mlflow_run_id
    assert not [r for r in caplog.records if r.name == "recfeat.train.tracking"]
    assert "mlflow_run_id" not in run_metadata(RunResult(model, run_dir, metrics, {}, mlflow_run_id=""))


def test_the_curves_pick_the_selection_metric_exactly():
    history = [{"epoch": 0, "train_loss": 1.0, "gauc": 0.6, "xauc": 0.7}]
    assert select_key(history, "auc") is None  # not gauc, nor xauc
    assert select_key(history, "gauc") == "gauc"
    assert select_key([{"epoch": 0, "valid/ndcg_at_10": 0.2, "valid/ndcg_at_100": 0.3}], "ndcg@10") == "valid/ndcg_at_10"
    assert select_key([{"epoch": 0, "valid_ndcg@10": 0.2}], "ndcg@10") == "valid_ndcg@10"
    assert select_key(history, None) == "gauc"


PRELOAD_SCRIPT = r"""
import sys, threading, time
from pathlib import Path
import torch
from trainers import tracking
from trainers.runs import save_run
from trainers.tracking import tracked_runs

root = Path(sys.argv[1]) / "runs"
on = {"enabled": True, "uri": None, "dir": None, "experiment": "recfeat"}
assert not tracking.preload({**on, "enabled": False}, root)  # tracking off: nothing started
assert "mlflow" not in sys.modules
assert tracking.preload(on, root) and not tracking.preload(on, root)  # once per process
# Track a run at once, while the preload may still hold the store's lock: no deadlock, one run.
metrics = {"history": [{"epoch": 0, "train_loss": 1.0, "gauc": 0.6}], "valid": {"gauc": 0.6},
           "test": {"gauc": 0.5}, "select_metric": "gauc", "best_epoch": 0, "epochs_run": 1}
done = []
worker = threading.Thread(target=lambda: done.append(save_run(root, "m", {"seed": 1, "tracking": on}, None, {},
                          {"w": torch.zeros(1)}, metrics, sys.argv[1], {})), daemon=True)
worker.start()
worker.join(120)
assert done, "tracking a run during the preload hung"
assert tracking._PRELOAD is not None and not tracking._PRELOAD.is_alive()
assert (Path(sys.argv[1]) / "mlflow" / "mlflow.db").is_file()
(run,) = tracked_runs(on, root, "m")
assert run.run_id == done[0].name and run.status == "FINISHED"
print("ok")
"""


def test_the_mlflow_preload_opens_the_store_once_and_a_run_tracked_meanwhile_is_logged(tmp_path):
    """``preload`` imports MLflow and creates the local store in a thread; a run tracked while it
    works waits for it (outside the store's lock file) and is logged once. Fresh interpreter:
    the preload is once per process."""
    proc = subprocess.run([sys.executable, "-c", PRELOAD_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=dict(os.environ), cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
