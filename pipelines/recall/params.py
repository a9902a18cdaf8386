"""Parameters of the recall family: the ``recall`` section of ``recfeat.yaml`` (docs/lookalike.md).

Field names are the kernels' :class:`RecallParams` fields, so settings reach them unrenamed.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, field_validator

from features.recall.kernels import FILLS, SIMILARITIES, RecallParams
from features.recall.local import ENGINES
from features.timeutil import as_utc
from pipelines.config import StrictModel


class RecallSettings(StrictModel):
    """RAR recall items: ``item_neighbors`` and ``recall_items`` as of ``cutoff_ts``."""

    cutoff_ts: dt.datetime | None = Field(
        None,
        description="UTC cutoff: only events strictly before it are used; null (the default): lookalike.cutoff_ts",
    )
    min_rating: float | None = Field(
        None, description="sources without clicks: a rating >= this is a positive event; null: lookalike.min_rating"
    )
    window_days: Annotated[int, Field(ge=1, le=366)] = Field(7, description="item_neighbors: days of positives before the cutoff")
    max_items_per_user: Annotated[int, Field(ge=2, le=10_000)] = Field(
        100, description="item_neighbors: a user's most recent distinct positive items counted"
    )
    min_co_users: Annotated[int, Field(ge=1)] = Field(2, description="item_neighbors: fewest co-occurring users of a pair")
    item_k: Annotated[int, Field(ge=1, le=1000)] = Field(50, description="item_neighbors: neighbours kept per item")
    similarity: Literal[SIMILARITIES] = Field(  # type: ignore[valid-type]
        "swing", description="item_neighbors: co-occurrence cosine, or Swing with user weights (docs/lookalike.md)"
    )
    swing_alpha: Annotated[float, Field(gt=0)] = Field(1.0, description="item_neighbors (swing): alpha in 1 / (alpha + |I_u ∩ I_v|)")
    swing_max_users_per_item: Annotated[int, Field(ge=2, le=100_000)] = Field(
        200, description="item_neighbors (swing): an item's most recent users paired (bounds the work per item)"
    )
    history_items: Annotated[int, Field(ge=1, le=1000)] = Field(20, description="recall_items: recent positive items that vote")
    decay: Annotated[float, Field(gt=0, le=1)] = Field(0.9, description="recall_items: vote weight decay^position (0 = most recent)")
    size: Annotated[int, Field(ge=1, le=10_000)] = Field(100, description="recall_items: pool size N per user")
    fill: Literal[FILLS] = Field(  # type: ignore[valid-type]
        "none", description="recall_items: top up short pools with the window's popular unseen items (source 'popular')"
    )
    engine: Literal[ENGINES] = Field(  # type: ignore[valid-type]
        "auto",
        description="who computes item_neighbors and recall_items: local (NumPy and SciPy in the job's process, "
        "no Spark), spark (the Spark kernels), or auto (local up to local_max_events events read, spark above); "
        "the same rows (docs/lookalike.md)",
    )
    local_max_events: Annotated[int, Field(ge=0, le=100_000_000)] = Field(
        2_000_000,
        description="engine auto: the most events a job reads (item_neighbors: its window's partitions; "
        "recall_items: the partitions up to the cutoff) and still computes locally (about 1.3 KB each at peak)",
    )

    @field_validator("cutoff_ts")
    @classmethod
    def _utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        return None if v is None else as_utc(v)

    def resolved(self, lookalike) -> "RecallSettings":
        """These settings with the fields left null taken from the ``lookalike`` section."""
        fill = {k: getattr(lookalike, k) for k in ("cutoff_ts", "min_rating") if getattr(self, k) is None}
        return self.model_copy(update=fill) if fill else self

    def params(self) -> RecallParams:
        """The kernels' :class:`RecallParams`: the fields of the same names."""
        if self.cutoff_ts is None or self.min_rating is None:
            raise ValueError("recall settings are not resolved: call resolved(settings.lookalike) first")
        return RecallParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RecallParams)})
