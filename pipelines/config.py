"""The base of every settings model: strict (unknown keys fail), frozen, defaults validated.

Families define their own section model on :class:`StrictModel` in ``pipelines/<family>/params.py``;
``pipelines.settings`` composes the core sections and every catalogued family's section into
one ``Settings`` model. Nothing here imports a family or the settings module.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the field."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``s3://...``, ``file://...``) rather than a local path."""
    return "://" in path


def moved_keys(data, moves: dict[str, str], section: str):
    """Refuse keys of an earlier layout with a one-line error naming the new place.

    ``moves`` maps an old key of ``section`` to its new dotted location, e.g.
    ``{"recall_size": "recall.size"}``; used as a ``model_validator(mode="before")``.
    """
    if isinstance(data, dict):
        old = [k for k in data if k in moves]
        if old:
            where = ", ".join(f"{section}.{k} is now {moves[k]}" for k in old)
            raise ValueError(f"moved settings: {where} (docs/configuration.md)")
    return data
