"""trainers.loop: determinism, early stopping, best-state restore; trainers.runs: run directories."""
from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import pytest
import torch

from tests.trainers._run_files import read_json
from trainers.loop import deterministic, fit
from trainers.runs import COMPLETE_MARKER, RunDir, RunRecordError, load_state


def _problem(seed=0, n=256):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32))
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) > 0).float()
    return x, y


def _run(seed, epochs=5, patience=5, scores=None, eval_interval=1):
    x, y = _problem()
    with deterministic(seed):
        model = torch.nn.Linear(4, 1)

        def batches(epoch):
            g = torch.Generator().manual_seed(seed * 1000 + epoch)
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), 32):
                idx = perm[i : i + 32]
                yield x[idx], y[idx]

        calls = iter(scores) if scores is not None else None

        def evaluate(m):
            if calls is not None:
                return {"score": next(calls)}
            with torch.no_grad():
                return {"score": -float(torch.nn.functional.binary_cross_entropy_with_logits(m(x).squeeze(1), y))}

        res = fit(
            model, lambda m, b: torch.nn.functional.binary_cross_entropy_with_logits(m(b[0]).squeeze(1), b[1]),
            batches, evaluate, "score", epochs=epochs, patience=patience, lr=0.05, progress=False,
            eval_interval=eval_interval,
        )
    return model, res


def test_same_seed_same_weights_and_metrics():
    m1, r1 = _run(3)
    m2, r2 = _run(3)
    assert r1.history == [{**h} for h in r2.history]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    _, r3 = _run(4)
    assert r3.history != r1.history


def test_eval_interval_validates_every_nth_epoch_and_the_last():
    # 7 epochs, every 3rd: evaluations after epochs 2, 5 and 6 (the last)
    _, res = _run(0, epochs=7, patience=100, scores=[0.1, 0.5, 0.4], eval_interval=3)
    assert [h["epoch"] for h in res.history] == [2, 5, 6]
    assert res.best_epoch == 5 and res.epochs_run == 7 and not res.stopped_early
    # patience counts epochs: best at epoch 2, no gain at 5 (3 epochs) -> stop with patience 3
    _, res = _run(0, epochs=20, patience=3, scores=[0.5, 0.4, 0.3], eval_interval=3)
    assert [h["epoch"] for h in res.history] == [2, 5] and res.stopped_early and res.best_epoch == 2
    with pytest.raises(ValueError, match="eval_interval"):
        _run(0, epochs=2, eval_interval=0)


def test_early_stopping_and_best_state_hand():
    # validation scores peak at epoch 1, then 2 epochs without gain -> stop after epoch 3 (patience 2)
    _, res = _run(0, epochs=10, patience=2, scores=[0.1, 0.5, 0.4, 0.3, 0.9])
    assert res.best_epoch == 1 and res.epochs_run == 4 and res.stopped_early
    assert res.best_score == 0.5


def test_non_finite_loss_fails_naming_the_step():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(FloatingPointError, match="epoch 0, step 0"):
        fit(model, lambda m, b: torch.tensor(math.nan, requires_grad=True), lambda e: iter([(torch.zeros(1, 1),)]),
            lambda m: {"s": 0.0}, "s", progress=False)


def test_run_dir_round_trip(tmp_path):
    run = RunDir(tmp_path, "m", {"seed": 1})
    sd = torch.nn.Linear(2, 1).state_dict()
    run.save_state(sd)
    run.write_json("metrics.json", {"auc": np.float64(0.5)})
    assert not run.is_complete
    run.write_tables(str(tmp_path / "no-warehouse"), {})
    assert run.is_complete
    loaded = load_state(run.path)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert read_json(run.path, "metrics.json") == {"auc": 0.5}
    assert read_json(run.path, "config.json") == {"model": "m", "config": {"seed": 1}}
    marker = read_json(run.path, COMPLETE_MARKER)
    assert set(marker["files"]) == {"config.json", "environment.json", "metrics.json", "model.pt", "tables.json"}
    assert marker["files"]["model.pt"] == (run.path / "model.pt").stat().st_size
    assert sorted(p.name for p in run.path.iterdir()) == sorted([*marker["files"], COMPLETE_MARKER])  # no temporary files
    assert RunDir(tmp_path, "m", {"seed": 1}).path != run.path  # a rerun gets its own directory


def test_a_crash_while_saving_the_model_leaves_no_partial_model_pt(tmp_path, monkeypatch):
    """Regression: model.pt was written in place, so a crash mid-write left a truncated
    checkpoint that looked like a finished run's."""
    run = RunDir(tmp_path, "m", {"seed": 1})
    sd = torch.nn.Linear(2, 1).state_dict()
    real_save = torch.save

    def crash_midway(obj, f, *a, **k):
        with open(f, "wb") if isinstance(f, (str, os.PathLike)) else contextlib.nullcontext(f) as out:
            out.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="No space left"):
        run.save_state(sd)
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "environment.json"]
    monkeypatch.setattr(torch, "save", real_save)
    run.save_state(sd)  # the retry writes a whole file
    with pytest.raises(RunRecordError, match="incomplete run .*no _COMPLETE marker"):
        load_state(run.path)  # not marked complete yet
    assert torch.equal(load_state(run.path, allow_incomplete=True)["weight"], sd["weight"])


def test_incomplete_runs_are_refused_or_skipped_by_every_reader(tmp_path):
    from trainers.runs import RunResult, is_complete, list_runs, read_run_config, recorded_versions, require_complete

    crashed = RunDir(tmp_path, "m", {"seed": 1})
    crashed.save_state(torch.nn.Linear(2, 1).state_dict())  # died before metrics and tables
    done = RunDir(tmp_path, "m", {"seed": 2})
    done.write_tables(str(tmp_path / "no-warehouse"), {"events": {"version": 3}})
    assert not is_complete(crashed.path) and is_complete(done.path)
    assert list_runs(tmp_path, "m") == [done.path]
    assert list_runs(tmp_path) == [done.path]
    assert list_runs(tmp_path, include_incomplete=True) == sorted([crashed.path, done.path])
    for read in (require_complete, read_run_config, recorded_versions, load_state):
        with pytest.raises(RunRecordError, match=f"{crashed.path}: incomplete run"):
            read(crashed.path)
    assert read_run_config(done.path) == {"model": "m", "config": {"seed": 2}}
    assert recorded_versions(done.path) == {"events": 3}
    with pytest.raises(RunRecordError, match="incomplete run"):
        RunResult("m", crashed.path, {}, {})  # what a model asset reports must be a finished run
    assert RunResult("m", done.path, {}, {}).run_dir == done.path
    with pytest.raises(RuntimeError, match="before write_tables"):
        done.write_json("metrics.json", {})  # a complete run is never rewritten


def test_stale_temporary_files_are_cleaned_by_the_next_run(tmp_path):
    import os
    import time

    from trainers.runs import STALE_TMP_S, clean_stale_tmp

    crashed = RunDir(tmp_path, "m", {"seed": 1})
    old = crashed.path / ".model.pt.tmp-0badc0de"
    young = crashed.path / ".metrics.json.tmp-12345678"
    legacy = crashed.path / "metrics.tmp"  # what earlier versions' write_json left
    for p in (old, young, legacy):
        p.write_bytes(b"partial")
    then = time.time() - STALE_TMP_S - 60
    os.utime(old, (then, then))
    os.utime(legacy, (then, then))
    assert clean_stale_tmp(tmp_path / "other-model") == []
    RunDir(tmp_path, "m", {"seed": 2})  # a new run of the model sweeps the old leftovers
    assert not old.exists() and not legacy.exists()
    assert young.exists()  # may belong to a run still writing
    assert (crashed.path / "config.json").exists()


def test_betas_reach_adam(monkeypatch):
    seen = []
    real_adam = torch.optim.Adam

    def spy(params, **kw):
        opt = real_adam(params, **kw)
        seen.append(opt.param_groups[0]["betas"])
        return opt

    monkeypatch.setattr(torch.optim, "Adam", spy)
    args = (lambda m, b: m(b[0]).sum(), lambda e: iter([(torch.ones(2, 1),)]), lambda m: {"s": 0.0}, "s")
    fit(torch.nn.Linear(1, 1), *args, epochs=1, progress=False)
    fit(torch.nn.Linear(1, 1), *args, epochs=1, progress=False, betas=(0.9, 0.98))
    assert seen == [(0.9, 0.999), (0.9, 0.98)]


def test_sasrec_passes_its_betas():
    import inspect

    from trainers.sasrec import SASRecConfig, fit_kwargs

    kwargs = fit_kwargs(SASRecConfig(beta2=0.97))
    assert kwargs["betas"] == (0.9, 0.97)
    assert set(kwargs) <= set(inspect.signature(fit).parameters)
