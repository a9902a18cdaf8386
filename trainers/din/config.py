"""DIN settings (``training.models.din``) and the item side fields it can use."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from features.dimensions import ITEMS
from features.events import EVENTS
from trainers.config import TrainerConfig
from trainers.data import FieldSpec

MODEL_NAME = "din"
EVENTS_TABLE = EVENTS.name
ITEMS_TABLE = ITEMS.name

#: Item side fields DIN can concatenate to the item id (``items`` columns; ``tag_pop`` is the
#: most frequent tag of the training rows, as the watch-time models' field of that name).
ITEM_FIELDS: dict[str, FieldSpec] = {
    "author_id": FieldSpec("author_id", ITEMS_TABLE, "author_id"),
    "music_id": FieldSpec("music_id", ITEMS_TABLE, "music_id"),
    "tag_pop": FieldSpec("tag_pop", ITEMS_TABLE, "tag", "most_frequent_tag"),
    "video_type": FieldSpec("video_type", ITEMS_TABLE, "video_type"),
    "upload_type": FieldSpec("upload_type", ITEMS_TABLE, "upload_type"),
}
ItemField = Literal["author_id", "music_id", "tag_pop", "video_type", "upload_type"]

#: Metrics where lower is better (model selection minimises them).
LOWER_IS_BETTER = {"logloss"}


class DINConfig(TrainerConfig):
    """DIN settings (``training.models.din`` in ``recfeat.yaml``)."""

    max_len: Annotated[int, Field(ge=1, le=1_000)] = Field(50, description="history length (most recent behaviours)")
    history: Literal["clicks", "impressions"] = Field(
        "clicks", description="behaviours in the history: the user's earlier clicks, or all earlier impressions"
    )
    history_days: Annotated[int, Field(ge=0)] | None = Field(
        None, description="days before the training window the histories may draw on; null: every earlier day"
    )
    item_fields: tuple[ItemField, ...] = Field(
        ("author_id", "tag_pop"), description="item side fields concatenated to the item id embedding (from items)"
    )
    embed_dim: Annotated[int, Field(ge=1)] = Field(16, description="embedding size per field")
    attention_units: tuple[Annotated[int, Field(ge=1)], ...] = Field((64,), description="attention unit MLP hidden sizes")
    tower_units: tuple[Annotated[int, Field(ge=1)], ...] = Field((200, 80), description="tower MLP hidden sizes")
    activation: Literal["dice", "prelu"] = Field("dice", description="hidden activation of both MLPs")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="dropout after each tower hidden layer")
    cape: bool = Field(False, description="add CAPE contextual position logits to the target-attention scores")
    cape_dim: Annotated[int, Field(ge=1)] = Field(16, description="CAPE position dimension C (official grid: 16, 32, 64)")
    cape_masked_keys: Literal["ignore", "add"] = Field(
        "ignore", description="what pads add to CAPE's gate sums: ignore (nothing) or add (official: 0.5 each)"
    )
    select_metric: Literal["gauc", "auc", "logloss"] = Field("gauc", description="validation metric for early stopping")
    epochs: Annotated[int, Field(ge=1)] = 10
    patience: Annotated[int, Field(ge=1)] = Field(2, description="epochs without a validation gain before stopping")
    batch_size: Annotated[int, Field(ge=1)] = 1024
    eval_batch: Annotated[int, Field(ge=1)] = Field(4_096, description="impressions scored at once in evaluation")
