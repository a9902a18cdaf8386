"""The scorer and rewriter named by the settings: a built-in, or ``package.module:attr``.

``attr`` is a class or a factory; it is called with the section's ``scorer_options`` (or
``rewriter_options``) as keyword arguments and must return an object with ``name``, ``version``
(and, for a scorer, ``prompt_version``) and the protocol's method (``score`` / ``rewrite``).
Loading happens where the work runs (in each Spark task), so the object need not pickle; only
the spec string and the options travel.
"""
from __future__ import annotations

import importlib
from typing import Any

from features.dialogues.pairing import Rewriter, TemplateRewriter
from features.dialogues.scoring import RuleParams, RuleScorer, Scorer


class PluginError(ValueError):
    """A plugin spec that cannot be loaded, or whose object lacks the protocol."""


def _load(spec: str, options: dict[str, Any], what: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"dialogues.{what}: cannot import {module_name!r}: {exc}") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise PluginError(f"dialogues.{what}: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise PluginError(f"dialogues.{what}: {spec!r} is not a class or a factory")
    return target(**options)


def load_scorer(spec: str, options: dict[str, Any] | None = None, rules: RuleParams = RuleParams()) -> Scorer:
    if spec == "rules":
        return RuleScorer(rules)
    scorer = _load(spec, dict(options or {}), "scorer")
    missing = [a for a in ("name", "version", "prompt_version", "score") if not hasattr(scorer, a)]
    if missing:
        raise PluginError(f"dialogues.scorer: {spec!r} returned an object without {', '.join(missing)}")
    return scorer


def load_rewriter(spec: str, options: dict[str, Any] | None = None) -> Rewriter:
    if spec == "template":
        return TemplateRewriter()
    rewriter = _load(spec, dict(options or {}), "rewriter")
    missing = [a for a in ("name", "version", "rewrite") if not hasattr(rewriter, a)]
    if missing:
        raise PluginError(f"dialogues.rewriter: {spec!r} returned an object without {', '.join(missing)}")
    return rewriter
