"""The sequences family: point-in-time user histories and their RoTE time features.

``contracts`` holds the tables; ``histories`` the history and split kernels; ``rote`` the
multi-granular time features (docs/sequences.md).
"""
from features.sequences.contracts import ROTE_FEATURES, USER_SEQUENCES
from features.sequences.histories import (
    LOO_MIN_EVENTS,
    ORDER_COLUMNS,
    SPLIT_MODES,
    SPLITS,
    IncrementalPlan,
    build_user_sequences,
    check_split_args,
    histories_from_sorted,
    histories_of_complete_users,
    kcore_filter,
    plan_incremental,
    seed_events,
    seeds_from_sequences,
    sequence_schema,
    sorted_for_histories,
    split_labels,
)

__all__ = [
    "LOO_MIN_EVENTS", "ORDER_COLUMNS", "ROTE_FEATURES", "SPLITS", "SPLIT_MODES", "USER_SEQUENCES", "IncrementalPlan",
    "build_user_sequences", "check_split_args", "histories_from_sorted", "histories_of_complete_users", "kcore_filter",
    "plan_incremental", "seed_events", "seeds_from_sequences", "sequence_schema", "sorted_for_histories", "split_labels",
]
