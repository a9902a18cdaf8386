"""Parameters of the look-alike family: the ``lookalike`` section of ``recfeat.yaml`` (docs/lookalike.md).

The vector fields and the ``lsh`` and ``hnsw`` sub-sections are named as the kernels'
:class:`VectorParams`, :class:`LshParams` and :class:`HnswParams` fields, so settings reach the
kernels without renaming. ``candidates`` picks the engine of ``lookalike_users``. The recall-stage
settings are the ``recall`` section (:mod:`pipelines.recall.params`).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from features.lookalike.kernels import HnswParams, LshParams, VectorParams
from features.timeutil import as_utc
from pipelines.config import StrictModel, moved_keys

DEFAULT_CUTOFF = dt.datetime(2022, 4, 18, tzinfo=dt.timezone.utc)

#: Keys of the earlier flat layout and where they live now.
MOVED = {
    **{f"lsh_{k}": f"lookalike.lsh.{k}" for k in (
        "bands", "bits_per_band", "window", "projection_dims", "recall_sample", "target_recall", "auto_bands", "max_bands")},
    **{k: f"recall.{k}" for k in (
        "window_days", "max_items_per_user", "min_co_users", "item_k", "swing_alpha", "swing_max_users_per_item",
        "history_items", "decay")},
    "item_similarity": "recall.similarity",
    "recall_size": "recall.size",
    "recall_fill": "recall.fill",
}


class LshSettings(StrictModel):
    """SimHash candidates of ``lookalike_users`` (the kernels' :class:`LshParams`)."""

    bands: Annotated[int, Field(ge=1, le=1024)] = Field(32, description="SimHash bands (orderings)")
    bits_per_band: Annotated[int, Field(ge=1, le=62)] = Field(16, description="hyperplanes (sign bits) per band")
    window: Annotated[int, Field(ge=1, le=10_000)] = Field(
        32, description="users compared on each side of a user in each band's order (2 * window >= k)"
    )
    projection_dims: Annotated[int, Field(ge=0, le=4096)] = Field(
        32, description="hash the centred vectors' leading principal directions (0 = hash the raw vectors)"
    )
    recall_sample: Annotated[int, Field(ge=0, le=100_000)] = Field(
        1000,
        description="users per sample whose exact top-k is brute-forced on every build: a selection sample "
        "(auto_bands) and a disjoint held-out one that estimates recall@k (0 = off; at most half the users each)",
    )
    target_recall: Annotated[float, Field(ge=0, le=1)] = Field(
        0.95, description="the lookalike_users_recall check warns when the held-out recall@k is below this"
    )
    auto_bands: bool = Field(
        True,
        description="double bands until the recall@k of a selection sample reaches target_recall (or "
        "max_bands); the recall reported is measured on a disjoint held-out sample",
    )
    max_bands: Annotated[int, Field(ge=1, le=1024)] = Field(256, description="cap on the bands auto_bands may reach")

    @model_validator(mode="after")
    def _consistent(self) -> "LshSettings":
        if self.auto_bands and self.recall_sample == 0:
            raise ValueError("auto_bands needs recall_sample > 0 (the bands are chosen on the sampled recall)")
        if self.auto_bands and self.max_bands < self.bands:
            raise ValueError("max_bands must be at least bands")
        return self


class HnswSettings(StrictModel):
    """HNSW candidates of ``lookalike_users`` (faiss ``IndexHNSWFlat``, inner product; the kernels' :class:`HnswParams`)."""

    m: Annotated[int, Field(ge=4, le=256)] = Field(
        32, description="graph links per node and layer (faiss M; 2 * m on the bottom layer): more = better recall, larger index"
    )
    ef_construction: Annotated[int, Field(ge=8, le=4096)] = Field(
        40, description="candidate list length while the graph is built (faiss efConstruction; its default)"
    )
    ef_search: Annotated[int, Field(ge=1, le=4096)] = Field(
        128,
        description="candidate list length of each query (faiss efSearch; at least k): the users whose exact cosine is "
        "computed, so more = better recall, slower",
    )
    threads: Annotated[int, Field(ge=1, le=256)] = Field(
        1,
        description="OpenMP threads that build the index in the driver; 1 (default) builds the same graph on every run, "
        "more is faster but the graph, and so a few neighbours, may vary between runs (queries run one thread per Spark task)",
    )
    recall_sample: Annotated[int, Field(ge=0, le=100_000)] = Field(
        1000,
        description="held-out users whose exact top-k is brute-forced on every build to estimate recall@k (the same "
        "sample as lsh's held-out one; 0 = off; at most half the users)",
    )
    target_recall: Annotated[float, Field(ge=0, le=1)] = Field(
        0.95, description="the lookalike_users_recall check warns when the held-out recall@k is below this; "
        "auto_ef_search raises ef_search towards it"
    )
    auto_ef_search: bool = Field(
        True,
        description="before the users are queried, double ef_search until a selection sample (recall_sample users, "
        "disjoint from the held-out ones) reaches target_recall or doubling would pass max_ef_search; queries then "
        "cost more where the vectors need it (false: ef_search as set)",
    )
    max_ef_search: Annotated[int, Field(ge=1, le=4096)] = Field(512, description="cap on the ef_search auto_ef_search may reach")

    @model_validator(mode="after")
    def _consistent(self) -> "HnswSettings":
        if self.auto_ef_search and self.recall_sample == 0:
            raise ValueError("auto_ef_search needs recall_sample > 0 (ef_search is chosen on a sampled recall)")
        if self.auto_ef_search and self.max_ef_search < self.ef_search:
            raise ValueError("max_ef_search must be at least ef_search")
        return self


class LookalikeSettings(StrictModel):
    """RAR look-alike users: ``user_vectors`` and ``lookalike_users`` as of ``cutoff_ts`` (docs/lookalike.md)."""

    cutoff_ts: dt.datetime = Field(
        DEFAULT_CUTOFF,
        description="UTC cutoff: only events strictly before it are used; examples after it may use the tables",
    )
    min_rating: float = Field(4.0, description="sources without clicks: a rating >= this is a positive event")
    profile_weight: Annotated[float, Field(ge=0)] = Field(1.0, description="weight of the profile block in user vectors")
    behaviour_weight: Annotated[float, Field(ge=0)] = Field(1.0, description="weight of the ALS behaviour block")
    profile_exclude: list[str] = Field(default_factory=lambda: ["zip_code"], description="user columns (glob) left out")
    categorical_columns: list[str] = Field(
        default_factory=lambda: ["onehot_feat*"], description="numeric user columns (glob) one-hot encoded as categories"
    )
    max_categories: Annotated[int, Field(ge=1, le=1000)] = Field(32, description="one-hot values kept per categorical column")
    als_rank: Annotated[int, Field(ge=1, le=512)] = Field(32, description="ALS factors (behaviour block width)")
    als_iterations: Annotated[int, Field(ge=1, le=100)] = Field(10, description="ALS iterations")
    als_reg: Annotated[float, Field(ge=0)] = Field(0.05, description="ALS regularisation")
    als_alpha: Annotated[float, Field(gt=0)] = Field(10.0, description="ALS implicit confidence: 1 + alpha * positives")
    als_engine: Literal["auto", "local", "spark"] = Field(
        "auto",
        description="who factorises the behaviour matrix: local (NumPy in the driver), spark (Spark ML ALS), or auto "
        "(local up to als_local_max_entries (user, item) pairs, spark above); same objective and hyperparameters",
    )
    als_local_max_entries: Annotated[int, Field(ge=0, le=100_000_000)] = Field(
        1_000_000,
        description="als_engine auto: the most positive (user, item) pairs factorised locally (the driver holds "
        "them: a few hundred bytes each)",
    )
    vectors_engine: Literal["auto", "local", "spark"] = Field(
        "auto",
        description="who builds user_vectors: local (Arrow and NumPy in the job's process, no Spark), spark (the "
        "Spark kernels), or auto (local up to vectors_local_max_events events read, spark above, or where the "
        "local engine cannot: a float32, timestamp or decimal categorical column, ALS pairs for Spark ML); the same rows",
    )
    vectors_local_max_events: Annotated[int, Field(ge=0, le=100_000_000)] = Field(
        2_000_000,
        description="vectors_engine auto: the most events read (the partitions up to the cutoff) built locally",
    )
    k: Annotated[int, Field(ge=1, le=1000)] = Field(50, description="look-alike users kept per user")
    candidates: Literal["hnsw", "simhash"] = Field(
        "hnsw",
        description="candidate engine of lookalike_users: hnsw (a faiss HNSW graph, the hnsw sub-section) or simhash "
        "(SimHash sorted windows as RAR describes, the lsh sub-section); both re-rank by exact cosine",
    )
    lsh: LshSettings = Field(default_factory=LshSettings, description="SimHash candidate generation (candidates: simhash)")
    hnsw: HnswSettings = Field(default_factory=HnswSettings, description="HNSW candidate generation (candidates: hnsw)")
    seed: int = Field(20220408, description="seed of the hyperplanes, the PCA sample, the recall sample and ALS")

    _moved = model_validator(mode="before")(classmethod(lambda cls, data: moved_keys(data, MOVED, "lookalike")))

    @field_validator("cutoff_ts")
    @classmethod
    def _utc(cls, v: dt.datetime) -> dt.datetime:
        return as_utc(v)

    @model_validator(mode="after")
    def _consistent(self) -> "LookalikeSettings":
        if self.profile_weight + self.behaviour_weight <= 0:
            raise ValueError("profile_weight and behaviour_weight must not both be 0")
        if self.candidates == "simhash" and 2 * self.lsh.window < self.k:
            raise ValueError("lsh.window must be at least k / 2 (every user needs k candidates)")
        if self.candidates == "hnsw" and self.hnsw.ef_search < self.k:
            raise ValueError(f"hnsw.ef_search ({self.hnsw.ef_search}) must be at least k ({self.k}): every user needs k candidates")
        return self

    def vector_params(self) -> VectorParams:
        """The kernels' :class:`VectorParams`: the fields of the same names (lists as tuples)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(VectorParams)}
        return VectorParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def lsh_params(self) -> LshParams:
        """The kernels' :class:`LshParams`: ``k``, ``seed`` and the ``lsh`` sub-section."""
        return LshParams(k=self.k, seed=self.seed, **self.lsh.model_dump())

    def hnsw_params(self) -> HnswParams:
        """The kernels' :class:`HnswParams`: ``k``, ``seed`` (the recall sample's) and the ``hnsw`` sub-section
        (``target_recall`` is the check's, not the kernel's)."""
        return HnswParams(k=self.k, seed=self.seed, **self.hnsw.model_dump())
