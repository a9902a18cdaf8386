"""A model trained in a child process (a model asset that shares its run's process) is the
model the same config trains in process: same weights, same metrics; its log lines and its
errors come back to the step."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from orchestration.models import model_config
from orchestration.training_process import train_in_child
from pipelines.settings import load_settings
from trainers.registry import get_model
from trainers.runs import load_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainers"))
from _watch_time_tables import write_tables  # noqa: E402


@pytest.fixture
def fm_config(warehouse, tmp_path):
    write_tables(warehouse)
    path = tmp_path / "recfeat.yaml"
    path.write_text(f"warehouse:\n  root: {warehouse.uri}\ntraining:\n  runs_root: {tmp_path / 'runs'}\n"
                    "  models:\n    watch_time_fm: {epochs: 2, label: d2co, threads: 1}\n")
    return lambda **extra: model_config(load_settings(path), "watch_time_fm", {"progress": False, **extra})


def test_the_child_trains_the_same_model_as_the_process_and_forwards_its_lines(fm_config):
    lines: list[str] = []
    child = train_in_child("watch_time_fm", fm_config(), lines.append)
    here = get_model("watch_time_fm").train(fm_config())
    assert child.run_dir != here.run_dir
    a, b = load_state(child.run_dir), load_state(here.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert child.metrics["test"] == here.metrics["test"]
    assert any("watch_time_fm" in line and "epoch" in line for line in lines), lines


def test_an_error_in_the_child_is_raised_with_its_type_and_traceback(fm_config, tmp_path):
    cfg = fm_config(warehouse=str(tmp_path / "no-such-warehouse"))
    with pytest.raises(Exception) as info:
        train_in_child("watch_time_fm", cfg, lambda line: None)
    with pytest.raises(type(info.value)):  # the same failure, in process
        get_model("watch_time_fm").train(cfg)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "in the training process of watch_time_fm" in notes and "Traceback" in notes
