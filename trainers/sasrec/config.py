"""SASRec settings (``training.models.sasrec``): defaults from the RoTE code's SASRec config."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from trainers.config import TrainerConfig

MODEL_NAME = "sasrec"
KS = (5, 10)


class SASRecConfig(TrainerConfig):
    """SASRec / RoTE-SASRec settings (``training.models.sasrec`` in ``recfeat.yaml``)."""

    max_len: Annotated[int, Field(ge=1, le=1_000)] = Field(50, description="input positions (most recent events)")
    hidden: Annotated[int, Field(ge=2)] = Field(64, description="embedding and hidden size")
    blocks: Annotated[int, Field(ge=1)] = Field(2, description="self-attention blocks")
    heads: Annotated[int, Field(ge=1)] = Field(1, description="attention heads (hidden must divide by heads)")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.5, description="dropout rate")
    norm_first: bool = Field(False, description="pre-LN blocks (False: post-LN, the RoTE code's default)")
    beta2: Annotated[float, Field(gt=0, lt=1)] = Field(0.98, description="Adam beta2 (beta1 is 0.9)")
    rote: bool = Field(False, description="rotate Q and K by RoTE time levels; drops the position embedding")
    rote_levels: Literal["paper", "finer"] = Field(
        "paper", description="paper: year, month, day; finer: also whole hours (ours, beyond the paper)"
    )
    cape: bool = Field(False, description="add CAPE contextual position logits in every layer; drops the position embedding")
    cape_dim: Annotated[int, Field(ge=1)] = Field(16, description="CAPE position dimension C (official grid: 16, 32, 64)")
    cape_masked_keys: Literal["ignore", "add"] = Field(
        "ignore", description="what masked keys add to CAPE's gate sums: ignore (ours: nothing) or add (official)"
    )
    epochs: Annotated[int, Field(ge=1)] = 200
    patience: Annotated[int, Field(ge=1)] = Field(20, description="epochs without a validation NDCG@10 gain before stopping")
    eval_interval: Annotated[int, Field(ge=1)] = Field(
        1, description="validate every this many epochs (and after the last); the official protocol: 20"
    )
    eval_batch: Annotated[int, Field(ge=1)] = Field(1_024, description="users scored at once in full ranking")
    eval_users_max: Annotated[int, Field(ge=1)] | None = Field(
        10_000, description="evaluate a fixed random sample of this many users when there are more (official: 10,000); null: all"
    )

    def model_post_init(self, _ctx) -> None:
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ValueError("hidden / heads must be an even integer (rotary pairs)")
