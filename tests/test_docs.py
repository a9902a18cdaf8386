"""docs/tables.md documents every column of every table contract, generated from the contracts."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.quality.docs import render, type_name
from pipelines.quality.tables import all_contracts

DOC = (Path(__file__).resolve().parents[1] / "docs" / "tables.md").read_text()


def test_tables_doc_is_what_the_contracts_generate():
    assert render(DOC) == DOC, "docs/tables.md is stale: run `python -m pipelines.quality.docs`"


@pytest.mark.parametrize("contract", all_contracts(), ids=lambda c: c.name)
def test_every_contract_column_is_documented(contract):
    assert f"## `{contract.name}`" in DOC
    section = DOC.split(f"## `{contract.name}`", 1)[1].split("\n## ", 1)[0]
    for f in contract.schema:
        row = f"| `{f.name}` | {type_name(f.type)}"
        assert row in section, f"docs/tables.md, section {contract.name}: column {f.name} undocumented"
        assert contract.column_description(f.name) in section
