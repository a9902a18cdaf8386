"""FAIR settings (``training.models.fair``): the SASRec backbone's defaults plus FAIR's own."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from trainers.config import TrainerConfig

MODEL_NAME = "fair"
KS = (5, 10)


class FAIRConfig(TrainerConfig):
    """FAIR: generative next-item prediction over semantic-ID code tokens with focused attention."""

    max_len: Annotated[int, Field(ge=1, le=1_000)] = Field(50, description="input positions (most recent events)")
    hidden: Annotated[int, Field(ge=2)] = Field(64, description="embedding and hidden size")
    blocks: Annotated[int, Field(ge=1)] = Field(2, description="attention blocks")
    heads: Annotated[int, Field(ge=1)] = Field(1, description="attention heads (hidden must divide by heads)")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.5, description="dropout rate (as SASRec's default)")
    beta2: Annotated[float, Field(gt=0, lt=1)] = Field(0.98, description="Adam beta2 (beta1 is 0.9)")
    attention: Literal["focused", "standard"] = Field(
        "focused", description="focused: differential attention (two softmax maps subtracted, learnable lambda, "
        "per-head RMS norm); standard: one softmax map (SASRec's)"
    )
    lambda_init: float | None = Field(
        None, description="focused: lambda's constant; null: 0.8 - 0.6 exp(-0.3 layer) per layer (0-based)"
    )
    noise_weight: Annotated[float, Field(ge=0)] = Field(0.1, description="weight of the noise-robustness (consistency) loss; 0 = off")
    noise_prob: Annotated[float, Field(ge=0, lt=1)] = Field(0.2, description="chance that each input code token is perturbed")
    noise_kind: Literal["substitute", "mask"] = Field(
        "substitute", description="substitute: a uniformly random code of the token's level; mask: the level's mask token"
    )
    mi_weight: Annotated[float, Field(ge=0)] = Field(0.1, description="weight of the InfoNCE mutual-information loss; 0 = off")
    mi_temperature: Annotated[float, Field(gt=0)] = Field(0.1, description="InfoNCE temperature")
    beam: Annotated[int, Field(ge=1)] = Field(50, description="beam width of constrained decoding (eval_decode: beam, serving)")
    eval_decode: Literal["full", "beam"] = Field(
        "full", description="full: score every valid code sequence (exact); beam: rank only what the constrained beam search returns"
    )
    epochs: Annotated[int, Field(ge=1)] = 200
    patience: Annotated[int, Field(ge=1)] = Field(20, description="epochs without a validation NDCG@10 gain before stopping")
    eval_interval: Annotated[int, Field(ge=1)] = Field(1, description="validate every this many epochs (and after the last)")
    eval_batch: Annotated[int, Field(ge=1)] = Field(1_024, description="users scored at once in full ranking")
    eval_users_max: Annotated[int, Field(ge=1)] | None = Field(
        10_000, description="evaluate a fixed random sample of this many users when there are more; null: all"
    )

    def model_post_init(self, _ctx) -> None:
        if self.hidden % self.heads:
            raise ValueError("hidden must divide by heads")
