"""The reduced chaos scenarios of benchmarks/chaos.py (the 20-kill run is by hand; docs/reliability.md)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos.py"


def _chaos():
    spec = importlib.util.spec_from_file_location("recfeat_chaos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_three_sigkills_lose_nothing(capsys):
    assert _chaos().main(["--kills", "3", "--events", "2000", "--days", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("all its files: yes") == 3 and "tables equal the clean run's: yes" in out
    assert "leftover staging/temporary files: 0" in out and "CHAOS PASSED" in out


@pytest.mark.slow
def test_two_materialize_runs_at_once_lose_nothing(capsys):
    assert _chaos().main(["--concurrent", "--events", "2000", "--days", "2",
                          "--assets", "events,rejected_events,users,items,user_sequences"]) == 0
    out = capsys.readouterr().out
    assert "after a retry the tables equal the clean run's: yes" in out and "RACE PASSED" in out
