"""RAR settings (``training.models.rar``): the backbone, the sources, the selection, the joint loss."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from features.dimensions import ITEMS
from features.events import EVENTS
from features.lookalike import LOOKALIKE_USERS
from features.recall import RECALL_ITEMS
from trainers.config import TrainerConfig
from trainers.din.config import ItemField

MODEL_NAME = "rar"
EVENTS_TABLE = EVENTS.name
ITEMS_TABLE = ITEMS.name
LOOKALIKE_TABLE = LOOKALIKE_USERS.name
RECALL_TABLE = RECALL_ITEMS.name

#: Metrics where lower is better (model selection minimises them).
LOWER_IS_BETTER = {"logloss"}


class RARConfig(TrainerConfig):
    """RAR settings (``training.models.rar`` in ``recfeat.yaml``).

    The defaults are small (a demo budget): a DeepFM backbone of 8-wide embeddings, 5 look-alike
    users and 5 recall items of a 20-item pool, a 16-wide co-interaction.
    """

    backbone: Literal["deepfm", "din"] = Field("deepfm", description="the CTR model RAR is plugged into")
    sources: tuple[Literal["u2u", "i2i"], ...] = Field(
        ("u2u", "i2i"), description="RAR's sources: look-alike users (u2u), recall items (i2i); [] is the bare backbone"
    )
    k_users: Annotated[int, Field(ge=0, le=1_000)] = Field(
        5, description="look-alike users per example (ranks 1..k of lookalike_users); 0: the user set is the user alone (an ablation)"
    )
    k_items: Annotated[int, Field(ge=1, le=1_000)] = Field(5, description="recall items per example, the most similar to the target")
    pool_size: Annotated[int, Field(ge=1, le=10_000)] = Field(20, description="recall_items ranks read per user (the pool k_items are chosen from)")
    selection: Literal["simhash", "exact"] = Field(
        "simhash", description="similarity of the target to the pool items: SimHash bits (as RAR) or the exact cosine"
    )
    simhash_groups: Annotated[int, Field(ge=1)] = Field(4, description="SimHash: slices of the item embedding, each hashed on its own")
    simhash_bits: Annotated[int, Field(ge=1, le=64)] = Field(16, description="SimHash: random hyperplanes (sign bits) per slice")
    rar_dim: Annotated[int, Field(ge=1)] = Field(16, description="width of the co-interaction (set elements are projected to it)")
    recall_loss_weight: Annotated[float, Field(ge=0)] = Field(
        0.1, description="weight of the recall-item supervision term in the joint loss (used with i2i only)"
    )
    embed_dim: Annotated[int, Field(ge=1)] = Field(8, description="embedding size per field (both backbones)")
    item_fields: tuple[ItemField, ...] = Field(
        ("author_id", "tag_pop"), description="item side fields next to the item id (from items)"
    )
    mlp_dims: tuple[Annotated[int, Field(ge=1)], ...] = Field((64, 32), description="DeepFM: MLP hidden sizes")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.1, description="DeepFM MLP / DIN tower dropout")
    max_len: Annotated[int, Field(ge=1, le=1_000)] = Field(20, description="DIN: history length (most recent clicks)")
    history_days: Annotated[int, Field(ge=0)] | None = Field(
        None, description="DIN: days before the training window the histories may draw on; null: every earlier day"
    )
    attention_units: tuple[Annotated[int, Field(ge=1)], ...] = Field((32,), description="DIN: attention unit MLP hidden sizes")
    tower_units: tuple[Annotated[int, Field(ge=1)], ...] = Field((64, 32), description="DIN: tower MLP hidden sizes")
    activation: Literal["dice", "prelu"] = Field("dice", description="DIN: hidden activation of both MLPs")
    select_metric: Literal["gauc", "auc", "logloss"] = Field("gauc", description="validation metric for early stopping")
    epochs: Annotated[int, Field(ge=1)] = 3
    patience: Annotated[int, Field(ge=1)] = Field(1, description="epochs without a validation gain before stopping")
    batch_size: Annotated[int, Field(ge=1)] = 1024
    eval_batch: Annotated[int, Field(ge=1)] = Field(4_096, description="impressions scored at once in evaluation")

    @model_validator(mode="after")
    def _check(self) -> "RARConfig":
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources must not repeat a source, got {list(self.sources)}")
        if "i2i" in self.sources and self.k_items > self.pool_size:
            raise ValueError(f"k_items ({self.k_items}) must be <= pool_size ({self.pool_size}): the items are chosen from the pool")
        item_dim = self.embed_dim * (1 + len(self.item_fields))
        if "i2i" in self.sources and self.selection == "simhash" and self.simhash_groups > item_dim:
            raise ValueError(
                f"simhash_groups ({self.simhash_groups}) must be <= the item embedding width "
                f"embed_dim x (1 + len(item_fields)) = {item_dim}"
            )
        return self

    @property
    def uses_u2u(self) -> bool:
        return "u2u" in self.sources

    @property
    def uses_i2i(self) -> bool:
        return "i2i" in self.sources
