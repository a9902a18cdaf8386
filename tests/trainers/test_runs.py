"""Run records reproduce their run: pinned table versions, retention that keeps them, code and
environment records (trainers/runs.py, ``recfeat train --from-run``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from features.sequences import USER_SEQUENCES
from orchestration.cli import main
from pipelines.warehouse import Warehouse
from tests.trainers._run_files import read_json
from tests.trainers.test_sasrec import LOGS, loo_table
from trainers.runs import code_version

SASREC = "{epochs: 2, max_len: 4, hidden: 8, batch_size: 2}"


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "warehouse"
    wh = Warehouse(str(root), retention_days=0, keep_versions=2)
    wh.write_arrow(USER_SEQUENCES, loo_table(LOGS))  # version 1
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(
        f"warehouse: {{root: {root}, retention_days: 0, keep_versions: 2}}\n"
        f"training:\n  runs_root: {tmp_path / 'runs'}\n  models:\n    sasrec: {SASREC}\n"
    )
    return cfg, wh


def _train(cfg: Path, *extra: str) -> Path:
    assert main(["--config", str(cfg), "train", "sasrec", *extra]) == 0
    runs = sorted((cfg.parent / "runs" / "sasrec").iterdir())
    return runs[-1]


def _other_sequences():
    return loo_table({**LOGS, "u4": [("a", 0), ("d", 5), ("c", 9), ("b", 20), ("a", 30)]})


def test_from_run_reads_the_recorded_versions_not_the_current_ones(project, capsys):
    """Regression: ``--from-run`` reloaded the config but read the current table versions."""
    cfg, wh = project
    first = _train(cfg)
    assert read_json(first, "tables.json")["user_sequences"]["version"] == 1
    wh.write_arrow(USER_SEQUENCES, _other_sequences())  # version 2: other data
    again = _train(cfg, "--from-run", str(first))
    assert read_json(again, "tables.json")["user_sequences"]["version"] == 1
    assert read_json(again, "metrics.json")["test"] == read_json(first, "metrics.json")["test"]
    assert read_json(again, "config.json")["config"]["table_versions"] == {"user_sequences": 1}


def test_from_run_fails_in_one_line_naming_a_table_version_that_is_gone(project, capsys):
    cfg, wh = project
    first = _train(cfg)
    # The run's pin is what keeps version 1; without the run directory's pin, retention drops it.
    shutil.rmtree(Path(wh.root) / "user_sequences" / "_pins")
    for _ in range(3):
        wh.write_arrow(USER_SEQUENCES, _other_sequences())
    assert 1 not in wh.versions("user_sequences")
    capsys.readouterr()
    assert main(["--config", str(cfg), "train", "sasrec", "--from-run", str(first)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recfeat: error:")
    assert "user_sequences version 1" in err[0] and "no longer has" in err[0]


def test_retention_keeps_a_version_a_kept_run_read_until_the_run_is_deleted(project):
    """Regression: retention kept 5 versions by count and deleted a version a recorded run read."""
    cfg, wh = project
    first = _train(cfg)
    for _ in range(4):
        wh.write_arrow(USER_SEQUENCES, _other_sequences())
    assert wh.versions("user_sequences") == [1, 4, 5]
    assert wh.pins("user_sequences")[1] == [f"sasrec--{first.name}"]
    assert wh.read_arrow(USER_SEQUENCES.name, version=1).num_rows == loo_table(LOGS).num_rows
    shutil.rmtree(first)  # the run is gone: its versions are released at the next commit
    wh.write_arrow(USER_SEQUENCES, _other_sequences())
    assert wh.versions("user_sequences") == [5, 6]
    assert wh.last_removed["user_sequences"] == [1, 4]
    assert not (Path(wh.root) / "user_sequences" / "_pins" / f"sasrec--{first.name}.json").exists()


def test_retention_keeps_versions_pinned_in_the_configuration(tmp_path):
    wh = Warehouse(str(tmp_path / "w"), retention_days=0, keep_versions=1, pinned={"user_sequences": [2]})
    for _ in range(4):
        wh.write_arrow(USER_SEQUENCES, loo_table(LOGS))
    assert wh.versions("user_sequences") == [2, 4]
    assert wh.pins("user_sequences") == {2: ["config"]}


def test_the_settings_pin_the_configured_table_versions(tmp_path):
    from orchestration.resources import build_resources
    from pipelines.settings import load_settings

    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(f"warehouse: {{root: {tmp_path / 'w'}}}\ntraining:\n  models:\n"
                   "    sasrec: {table_versions: {user_sequences: 3}}\n    watch_time_fm: {table_versions: {users: 1}}\n")
    settings = load_settings(cfg)
    assert settings.training.pinned_versions() == {"user_sequences": [3], "users": [1]}
    assert build_resources(settings)["warehouse"].get().pinned == {"user_sequences": {3}, "users": {1}}


def test_run_records_code_version_and_the_environment_inside_the_deterministic_section(project):
    """Regression: environment.json was written after the determinism settings were restored."""
    import torch

    cfg, _ = project
    before = torch.are_deterministic_algorithms_enabled()
    run = _train(cfg)
    env = read_json(run, "environment.json")
    assert env["deterministic_algorithms"] is True and env["torch_threads"] == 1
    assert torch.are_deterministic_algorithms_enabled() == before
    code = env["code"]
    assert set(code) == {"commit", "dirty", "package_version"}
    here = code_version()
    assert code["commit"] == here["commit"]
    if here["commit"] is not None:
        assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool)


def test_code_version_outside_a_checkout(tmp_path):
    got = code_version(tmp_path)
    assert got["commit"] is None and got["dirty"] is None
    json.dumps(got)


def test_versions_read_stay_pinned_while_the_model_trains(project):
    """Regression: the pin was written only after training, so retention could remove the
    version a long run was reading."""
    from trainers.runs import pinned_while_training

    _, wh = project
    tables = {"user_sequences": {"version": 1}}
    with pinned_while_training(wh.uri, tables, "sasrec") as name:
        assert name.startswith("sasrec--training-")
        assert wh.pins("user_sequences") == {1: [name]}
        for _ in range(3):
            wh.write_arrow(USER_SEQUENCES, _other_sequences())
        assert 1 in wh.versions("user_sequences")
    assert wh.pins("user_sequences") == {}  # released at the end (the run directory pins it then)


def test_every_build_a_run_used_stays_pinned(project):
    """Regression: a run that read several builds of one table (RAR's look-alike builds, one per
    cutoff) pinned only the newest, so retention could remove the older ones it used."""
    from trainers.runs import pinned_while_training

    _, wh = project
    for _ in range(3):
        wh.write_arrow(USER_SEQUENCES, _other_sequences())  # versions 2..4
    tables = {"user_sequences": {"version": 4, "versions_used": [1, 3, 4]}}
    with pinned_while_training(wh.uri, tables, "rar") as name:
        assert wh.pins("user_sequences") == {1: [f"{name}.v1"], 3: [f"{name}.v3"], 4: [name]}
        for _ in range(3):
            wh.write_arrow(USER_SEQUENCES, _other_sequences())
        assert {1, 3} <= set(wh.versions("user_sequences"))
    assert wh.pins("user_sequences") == {}  # every pin of the run released at the end


def test_a_warehouse_the_trainer_cannot_write_to_does_not_fail_the_run(project, monkeypatch, caplog):
    import fsspec.implementations.local as local

    from trainers.runs import pin_tables

    _, wh = project

    def refuse(self, path, *a, **k):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(local.LocalFileSystem, "pipe_file", refuse)
    assert pin_tables(wh.uri, {"user_sequences": {"version": 1}}, "x") == ["user_sequences"]
    assert "cannot pin user_sequences version 1" in caplog.text


def test_unreadable_expired_and_foreign_pins(tmp_path, caplog):
    import datetime as dt

    from features.layout import pin_path, pin_record
    from pipelines.warehouse import pin_is_stale

    wh = Warehouse(str(tmp_path / "w"), retention_days=0, keep_versions=1)
    wh.write_arrow(USER_SEQUENCES, loo_table(LOGS))
    wh.pin("user_sequences", 1, "broken")
    Path(pin_path(wh.root, "user_sequences", "broken")).write_text("{not json")
    wh.write_arrow(USER_SEQUENCES, loo_table(LOGS))
    assert wh.versions("user_sequences") == [1, 2]  # a pin it cannot read might hold 1: nothing removed
    assert "unreadable pin files" in caplog.text
    Path(pin_path(wh.root, "user_sequences", "broken")).unlink()
    wh.write_arrow(USER_SEQUENCES, loo_table(LOGS))
    assert wh.versions("user_sequences") == [3]

    gone = str(tmp_path / "gone")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
    import json as _json
    assert pin_is_stale(_json.loads(pin_record(1, expires_in_s=10)), now=later)
    assert not pin_is_stale(_json.loads(pin_record(1, expires_in_s=10)))
    assert pin_is_stale(_json.loads(pin_record(1, run_dir=gone)))
    # a local run directory written on another machine is never judged from here
    assert not pin_is_stale({"version": 1, "run_dir": gone, "host": "another-host"})
    # a URI is checked through fsspec; an error while checking keeps the pin
    assert pin_is_stale({"version": 1, "run_dir": f"file://{gone}"})
    assert not pin_is_stale({"version": 1, "run_dir": "s3://bucket/run"}, exists=lambda _: 1 / 0)


def test_from_run_refuses_an_incomplete_run_in_one_line(project, capsys):
    """Regression: ``--from-run`` reproduced a run that had crashed before it finished (its
    checkpoint and records possibly partial)."""
    from trainers.runs import COMPLETE_MARKER

    cfg, _ = project
    first = _train(cfg)
    assert (first / COMPLETE_MARKER).is_file()  # what recfeat train writes last
    (first / COMPLETE_MARKER).unlink()  # as if the process had died before the end
    capsys.readouterr()
    assert main(["--config", str(cfg), "train", "sasrec", "--from-run", str(first)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"recfeat: error: {first}: incomplete run (no _COMPLETE marker)")
    assert len(list((cfg.parent / "runs" / "sasrec").iterdir())) == 1  # nothing was trained
