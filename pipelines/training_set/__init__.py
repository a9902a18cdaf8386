"""Point-in-time training sets for a spine of examples (docs/python-api.md).

``training_set(spark, warehouse, spine, features, ...)`` (:mod:`.build`) gives each spine row the
features asked for (:mod:`.spec`) as of its example time: the user's history strictly before it
(:mod:`.history`), user and item attributes, and the builds of look-alike users, recall items,
labels and duration statistics whose cutoff or fit window ends at or before it (:mod:`.builds`).
"""
from __future__ import annotations

from pipelines.training_set.build import TrainingSet, code_version, training_set
from pipelines.training_set.io import METADATA_KEY, SIDECAR, load_spine, read_metadata, read_output, spine_hash
from pipelines.training_set.spec import GROUPS, FeatureError, FeatureSpec, parse_features, parse_ttl

__all__ = [
    "GROUPS", "METADATA_KEY", "SIDECAR", "FeatureError", "FeatureSpec", "TrainingSet", "code_version", "load_spine",
    "parse_features", "parse_ttl", "read_metadata", "read_output", "spine_hash", "training_set",
]  # fmt: skip
