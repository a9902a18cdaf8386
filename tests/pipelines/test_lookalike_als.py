"""The ``lookalike.als_engine`` / ``als_local_max_entries`` settings: validated at load, reach the kernels."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.lookalike import LookalikeSettings


def test_defaults_reach_the_kernels():
    s = LookalikeSettings()
    assert (s.als_engine, s.als_local_max_entries) == ("auto", 1_000_000)
    p = LookalikeSettings(als_engine="spark", als_local_max_entries=5).vector_params()
    assert (p.als_engine, p.als_local_max_entries) == ("spark", 5)


@pytest.mark.parametrize("field, value", [("als_engine", "gpu"), ("als_local_max_entries", -1),
                                          ("als_local_max_entries", 10**9)])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        LookalikeSettings(**{field: value})
