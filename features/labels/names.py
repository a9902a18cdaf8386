"""The names of the watch-time labels, defined once (docs/labels.md).

``TRAINING_LABELS`` are the targets a watch-time model trains on (``trainers/watch_time``):
the columns of ``watch_time_labels`` (``watch_time`` is ``watch_time_s``). ``UNIT_LABELS`` are
the label columns whose values lie in ``[0, 1]`` (checked on every ``watch_time_labels``
version). ``RELEVANCE_LABELS`` name the long-view labels ranked against
(``is_long_view_<name>``).
"""
from __future__ import annotations

TRAINING_LABELS = ("pcr", "wtg", "d2q", "d2co", "watch_time", "cwm")
UNIT_LABELS = ("pcr", "wtg", "d2q", "d2q_dense", "d2co")
RELEVANCE_LABELS = ("d2co", "cwm")
