"""Parameters of the sequences family: the ``sequences`` section of ``recfeat.yaml`` (docs/sequences.md)."""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, model_validator

from features.events import FEEDBACK_FLAGS as FEEDBACK_FLAG_NAMES
from features.sequences.rote import CALENDAR_LEVELS
from features.sequences.splits import check_temporal_bounds
from pipelines.config import StrictModel


class KCoreSettings(StrictModel):
    """Iterative k-core filter applied to events before sequences are built (0 or 1 = off)."""

    min_user_events: Annotated[int, Field(ge=0)] = Field(0, description="drop users with fewer events (after item filtering)")
    min_item_events: Annotated[int, Field(ge=0)] = Field(0, description="drop items with fewer events (after user filtering)")
    max_iterations: Annotated[int, Field(ge=1)] = Field(50, description="passes before giving up on convergence")

    @property
    def enabled(self) -> bool:
        return self.min_user_events > 1 or self.min_item_events > 1


class SequenceSettings(StrictModel):
    """How ``user_sequences`` and ``rote_features`` are built (docs/sequences.md)."""

    max_len: Annotated[int, Field(ge=1, le=10_000)] = Field(50, description="history positions kept (the most recent)")
    split: Literal["leave_one_out", "temporal"] = Field("leave_one_out", description="split protocol")
    valid_from: dt.datetime | None = Field(None, description="temporal split: first valid target time (UTC)")
    test_from: dt.datetime | None = Field(None, description="temporal split: first test target time (UTC)")
    build: Literal["full", "incremental"] = Field(
        "full",
        description="full: rebuild every partition from all events; incremental: daily partitions, each built "
        "from its day's events plus the earlier partitions (needs the temporal split, no k-core)",
    )
    require_flags: list[Literal[FEEDBACK_FLAG_NAMES]] = Field(  # type: ignore[valid-type]  # the events flags
        default_factory=list,
        description="keep only events whose every named feedback flag is true (e.g. [is_click] for click "
        "sequences, as the official SASRec preprocessing of KuaiRand); applied before the k-core filter",
    )
    k_core: KCoreSettings = Field(default_factory=KCoreSettings, description="k-core filter (full builds)")
    rote_levels: list[Literal[CALENDAR_LEVELS]] = Field(  # type: ignore[valid-type]  # features.sequences.rote
        default_factory=lambda: ["year", "month", "day"],
        description="calendar levels of rote_features (the paper's three; hour, minute, second go finer)",
    )
    rote_storage: Literal["view", "table"] = Field(
        "view",
        description="view: the job stores only user_sequences and rote_features rows are derived on read from a "
        "user_sequences version (same kernel, schema and contract; no asset of its own); table: the job also "
        "commits rote_features as a table in the same pass",
    )
    partitions: Annotated[int, Field(ge=1)] | None = Field(
        None, description="user partitions of the sequence shuffle; default spark.shuffle_partitions"
    )

    @model_validator(mode="after")
    def _temporal_bounds(self) -> "SequenceSettings":
        if self.split == "temporal":
            check_temporal_bounds(self.valid_from, self.test_from)
        if self.build == "incremental":
            if self.split != "temporal":
                raise ValueError(
                    "build: incremental needs split: temporal (leave-one-out labels depend on each user's last event)"
                )
            if self.k_core.enabled:
                raise ValueError("build: incremental cannot apply k_core (it depends on every event); use build: full")
        if len(set(self.rote_levels)) != len(self.rote_levels):
            raise ValueError("rote_levels must not repeat a level")
        return self
