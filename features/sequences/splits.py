"""The split protocols of ``user_sequences``: leave-one-out and temporal, each checked in one place.

* ``leave_one_out`` (RoTE, SASRec): per user, the last event in the order is ``test``, the
  second to last ``valid``, the rest ``train``; users with fewer than :data:`LOO_MIN_EVENTS`
  events are all ``train``.
* ``temporal``: ``train`` before ``valid_from``, ``valid`` in ``[valid_from, test_from)``,
  ``test`` from ``test_from``. Bounds are instants; a naive one is read as UTC
  (:mod:`features.timeutil`).

:func:`check_temporal_bounds` is the one validation of a temporal split's bounds: the settings
model (``sequences.valid_from`` / ``test_from``), the build (:func:`check_split_args`) and the
Arrow kernel (:func:`split_labels`) all call it, so they accept and refuse the same bounds
with the same message.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from features.timeutil import as_utc, to_micros

SPLITS = ("train", "valid", "test")
SPLIT_MODES = ("leave_one_out", "temporal")
#: Users with fewer events than this are all ``train`` under leave-one-out (RoTE, SASRec).
LOO_MIN_EVENTS = 4


def check_temporal_bounds(valid_from: dt.datetime | None, test_from: dt.datetime | None) -> None:
    """Raise ``ValueError`` unless both bounds are set and ``test_from`` is not before ``valid_from``."""
    if valid_from is None or test_from is None:
        raise ValueError("a temporal split needs valid_from and test_from")
    if as_utc(test_from) < as_utc(valid_from):
        raise ValueError("test_from must not be before valid_from")


def check_split_args(split: str, valid_from, test_from, seeded: bool) -> None:
    """Fail fast on a split mode the build cannot honour."""
    if split not in SPLIT_MODES:
        raise ValueError(f"unknown split mode {split!r}; choose from {SPLIT_MODES}")
    if split == "temporal":
        check_temporal_bounds(valid_from, test_from)
    if seeded and split == "leave_one_out":
        raise ValueError("seeded (incremental) builds need a temporal split: leave-one-out depends on a user's last event")


def split_labels(
    seq_pos: np.ndarray,
    user_events: np.ndarray | None,
    target_us: np.ndarray,
    mode: str,
    valid_from: dt.datetime | None = None,
    test_from: dt.datetime | None = None,
) -> pa.Array:
    """``train`` / ``valid`` / ``test`` per row (see the module docstring).

    ``user_events`` (leave-one-out only) is the user's total number of events on each row;
    ``target_us`` the target time in microseconds since the epoch (UTC).
    """
    labels = np.full(len(seq_pos), "train", dtype=object)
    if mode == "leave_one_out":
        if user_events is None:
            raise ValueError("leave_one_out needs every user's total number of events")
        full = user_events >= LOO_MIN_EVENTS
        labels[full & (seq_pos == user_events - 2)] = "valid"
        labels[full & (seq_pos == user_events - 1)] = "test"
    elif mode == "temporal":
        check_temporal_bounds(valid_from, test_from)
        labels[target_us >= to_micros(valid_from)] = "valid"
        labels[target_us >= to_micros(test_from)] = "test"
    else:
        raise ValueError(f"unknown split mode {mode!r}; choose from {SPLIT_MODES}")
    return pa.array(labels, pa.string())
