"""The column tables of ``docs/tables.md``, generated from the contracts (one source of truth).

Each table's section of ``docs/tables.md`` holds hand-written prose and one generated block
between ``<!-- columns: <table> ... -->`` and ``<!-- end columns -->``: its columns (name, type,
meaning with the unit) and its quality expectations. Regenerate after changing a contract::

    python -m pipelines.quality.docs            # rewrite docs/tables.md
    python -m pipelines.quality.docs --check    # exit 1 when docs/tables.md is stale

``tests/test_docs.py`` checks that the committed file equals the generated one.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pyarrow as pa

from features.contracts import WARNING, TableContract
from pipelines.quality.tables import all_contracts

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "tables.md"
COMMAND = "python -m pipelines.quality.docs"
BEGIN = "<!-- columns: {name} (generated from the contract by `" + COMMAND + "`; edit the contract, not this table) -->"
END = "<!-- end columns -->"
_BLOCK = re.compile(r"<!-- columns: ([a-z_0-9]+) .*?-->\n.*?<!-- end columns -->", re.S)


def type_name(t: pa.DataType) -> str:
    """The documented name of an Arrow type (``timestamp[us, UTC]``, ``list<string>``, ``float64``)."""
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}, {t.tz}]" if t.tz else f"timestamp[{t.unit}]"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{type_name(t.value_type)}>"
    if pa.types.is_date32(t):
        return "date32"
    if pa.types.is_float64(t):
        return "float64"
    if pa.types.is_float32(t):
        return "float32"
    if pa.types.is_large_string(t):
        return "string"
    return str(t)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def column_block(contract: TableContract) -> str:
    """The generated block of one table: column table and expectations."""
    lines = [BEGIN.format(name=contract.name), "", "| column | type | unit / meaning |", "|---|---|---|"]
    for f in contract.schema:
        kind = type_name(f.type) + (", nullable" if f.nullable else "")
        lines.append(f"| `{f.name}` | {kind} | {_cell(contract.column_description(f.name))} |")
    for pattern in contract.column_patterns:
        kind = contract.open_column_types.get(pattern, "")
        lines.append(f"| `{pattern}` | {kind} | {_cell(contract.column_docs[pattern])} |")
    key = ", ".join(f"`{k}`" for k in contract.key)
    rules = [f"key ({key}) not null and unique", "non-nullable columns not null"]
    for e in contract.expectations:
        rules.append(e.describe() + (" (warning)" if e.severity == WARNING else ""))
    lines += ["", "**Quality expectations** (errors block, warnings report; docs/quality.md): " + "; ".join(rules) + ".", "", END]
    return "\n".join(lines)


def render(text: str, contracts: list[TableContract] | None = None) -> str:
    """``text`` with every generated block replaced by the block of its contract.

    Raises ``ValueError`` when a contract has no section (``## `<table>```) or no block, or a
    block names an unknown table.
    """
    by_name = {c.name: c for c in (contracts or all_contracts())}
    for name in by_name:
        if f"## `{name}`" not in text:
            raise ValueError(f"docs/tables.md has no section ## `{name}`")
    found: set[str] = set()

    def replace(m: re.Match) -> str:
        name = m.group(1)
        if name not in by_name:
            raise ValueError(f"docs/tables.md has a column block for {name!r}, which has no contract")
        found.add(name)
        return column_block(by_name[name])

    out = _BLOCK.sub(replace, text)
    missing = sorted(set(by_name) - found)
    if missing:
        raise ValueError(f"docs/tables.md has no generated column block for {missing}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description="generate the column tables of docs/tables.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from the generated one")
    parser.add_argument("--path", default=str(DOC_PATH), help="the tables document (default docs/tables.md)")
    args = parser.parse_args(argv)
    path = Path(args.path)
    text = path.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{path} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
