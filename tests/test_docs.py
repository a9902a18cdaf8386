"""docs/tables.md documents every column of every table contract."""
from __future__ import annotations

from pathlib import Path

import pytest

from features.contracts import all_contracts

DOC = (Path(__file__).resolve().parents[1] / "docs" / "tables.md").read_text()


@pytest.mark.parametrize("contract", all_contracts(), ids=lambda c: c.name)
def test_every_contract_column_is_documented(contract):
    assert f"## `{contract.name}`" in DOC
    section = DOC.split(f"## `{contract.name}`", 1)[1].split("\n## ", 1)[0]
    missing = [c for c in contract.columns if f"`{c}`" not in section]
    assert not missing, f"docs/tables.md, section {contract.name}: columns {missing} undocumented"
