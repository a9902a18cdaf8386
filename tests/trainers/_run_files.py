"""Reading a run directory's files in trainer tests."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(run_dir: str | Path, name: str) -> Any:
    """The parsed JSON file ``name`` of a run directory."""
    return json.loads((Path(run_dir) / name).read_text())
