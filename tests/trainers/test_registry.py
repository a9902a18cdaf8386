"""The explicit model registry: every model module's spec listed, names unique, a missing module
an ImportError."""
from __future__ import annotations

import subprocess
import sys

import pytest

from trainers import din, fair, registry, sasrec
from trainers.multitask import trainer as multitask
from trainers.rar import trainer as rar
from trainers.watch_time import trainer as watch_time


def test_lists_every_model_modules_spec():
    assert registry.MODELS == (*watch_time.SPECS, sasrec.SPEC, din.SPEC, multitask.SPEC, fair.SPEC, rar.SPEC)
    assert registry.model_names() == ["din", "fair", "multitask", "rar", "sasrec", "watch_time_deepfm", "watch_time_fm"]
    for spec in registry.MODELS:
        assert registry.get_model(spec.name) is spec


def test_an_unknown_model_names_the_known_ones():
    with pytest.raises(KeyError, match=r"no model named 'nope'; known: \['din', 'fair', 'multitask'"):
        registry.get_model("nope")


def test_two_models_with_one_name_are_refused():
    with pytest.raises(ValueError, match="two models are named 'din'"):
        registry.index((din.SPEC, sasrec.SPEC, din.SPEC))


@pytest.mark.parametrize("module", ["trainers.din", "trainers.multitask.trainer"])
def test_a_missing_model_module_is_an_import_error(module):
    """The registry imports its model modules explicitly: one that cannot be imported fails the
    registry's import instead of the model silently disappearing."""
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None  # the import system's own way to make a module missing\n"
        "try:\n"
        "    import trainers.registry\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
        "    raise SystemExit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3, out.stdout + out.stderr
    assert module in out.stdout
