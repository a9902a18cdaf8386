"""Parameters of the item_codes family: the ``item_codes`` section of ``recfeat.yaml`` (docs/fair.md)."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, field_validator

from features.item_codes import EMBEDDINGS
from features.item_codes.kernels import CodeParams
from features.item_codes.quantize import BACKENDS
from features.timeutil import as_utc
from pipelines.config import StrictModel


class ItemCodeSettings(StrictModel):
    """Semantic IDs of items (``item_codes``) for the FAIR trainer."""

    cutoff_ts: dt.datetime | None = Field(
        None, description="UTC cutoff: the embedding uses only events strictly before it; null: lookalike.cutoff_ts"
    )
    fit_on: Literal["events", "user_sequences_train"] = Field(
        "events",
        description="events: every event before the cutoff; user_sequences_train: only the train rows of "
        "user_sequences (leave-one-out: no validation or test event enters the codes)",
    )
    embedding: Literal[EMBEDDINGS] = Field(  # type: ignore[valid-type]
        "cooccurrence", description="cooccurrence (PPMI of users in common), content (items attributes) or both"
    )
    dim: Annotated[int, Field(ge=1, le=1024)] = Field(32, description="co-occurrence embedding size")
    content_weight: Annotated[float, Field(ge=0)] = Field(1.0, description="both: weight of the content block")
    max_categories: Annotated[int, Field(ge=1, le=1000)] = Field(32, description="content: one-hot values kept per string attribute")
    levels: Annotated[int, Field(ge=1, le=16)] = Field(4, description="code tokens per item before the disambiguation token")
    codebook_size: Annotated[int, Field(ge=2, le=65_536)] = Field(256, description="centroids per level")
    kmeans_iterations: Annotated[int, Field(ge=1, le=1000)] = Field(25, description="Lloyd iterations per level")
    backend: Literal[BACKENDS] = Field(  # type: ignore[valid-type]
        "auto", description="k-means: auto (faiss when installed, else numpy), numpy or faiss"
    )
    max_disambiguation: Annotated[int, Field(ge=0)] = Field(
        255, description="largest disambiguation token the checks accept (items sharing all codes, minus one)"
    )
    seed: int = Field(20220408, description="seed of the k-means initialisation")

    @field_validator("cutoff_ts")
    @classmethod
    def _utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        return None if v is None else as_utc(v)

    def resolved(self, lookalike) -> "ItemCodeSettings":
        """These settings with a null cutoff taken from the ``lookalike`` section."""
        return self if self.cutoff_ts is not None else self.model_copy(update={"cutoff_ts": lookalike.cutoff_ts})

    def code_params(self) -> CodeParams:
        return CodeParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CodeParams)})

    def check_params(self) -> dict:
        """The bounds of the contract's expectations."""
        return {"max_code": self.codebook_size - 1, "max_disambiguation": self.max_disambiguation}
