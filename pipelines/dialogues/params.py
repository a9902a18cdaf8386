"""Parameters of the dialogues family: the ``dialogues`` section of ``recfeat.yaml`` (docs/ecpo.md)."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from features.dialogues.scoring import RuleParams
from pipelines.config import StrictModel


def _check_plugin(value: str, builtin: str, field: str) -> str:
    if value == builtin:
        return value
    module, sep, attr = value.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{field} must be {builtin!r} or 'package.module:attr', not {value!r}")
    return value


class DialogueGeneratorSettings(StrictModel):
    """The synthetic dialogues (the embedded default): planted unsatisfying turns, seeded."""

    dialogues: Annotated[int, Field(ge=1, le=1_000_000)] = Field(300, description="dialogues written")
    users: Annotated[int, Field(ge=1)] = Field(100, description="distinct users")
    rounds_min: Annotated[int, Field(ge=1, le=50)] = Field(2, description="fewest request/recommendation rounds per dialogue")
    rounds_max: Annotated[int, Field(ge=1, le=50)] = Field(5, description="most rounds per dialogue")
    unsatisfying_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.3, description="share of assistant turns planted as unsatisfying (off-topic recommendations)"
    )
    polite_accept_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.1, description="noise: share of unsatisfying turns the user accepts anyway (invisible to the rules)"
    )
    ask_more_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.08, description="noise: share of satisfying turns answered by asking for more without accepting"
    )
    files: Annotated[int, Field(ge=1, le=64)] = Field(2, description="JSON Lines files the dialogues are spread over")
    start_date: str = Field("2022-04-08", description="UTC day the first dialogue starts")
    days: Annotated[int, Field(ge=1, le=3650)] = Field(7, description="days the dialogues are spread over")
    seed: int = Field(20220408, description="random seed (same seed, same bytes)")


class DialoguesSettings(StrictModel):
    """ECPO dialogue ingestion, turn scores and preference pairs."""

    enabled: bool = Field(True, description="whether the family is in the graph")
    path: str | None = Field(None, json_schema_extra={"path": True}, description="folder of the dialogue JSON Lines files (*.jsonl, *.jsonl.gz); null: <sources_root>/dialogues")
    source_name: str = Field("dialogues", description="the name recorded in the tables' source column")
    synthetic: bool = Field(
        True, description="write the synthetic dialogues into `path` before each ingestion (the embedded default); false: ingest the files there"
    )
    generator: DialogueGeneratorSettings = Field(default_factory=DialogueGeneratorSettings, description="the synthetic dialogues")
    scorer: str = Field("rules", description="`rules` (the deterministic default) or `package.module:attr` (a Scorer class or factory)")
    scorer_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of a plugin scorer's class or factory")
    rewriter: str = Field("template", description="`template` (a deterministic placeholder for an LLM) or `package.module:attr`")
    rewriter_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of a plugin rewriter")
    pair_threshold: Annotated[float, Field(gt=0, le=5)] = Field(
        3.0, description="assistant turns scoring below this (on the 0..5 scale) are rewritten and paired (3: no acceptance plus a second sign)"
    )
    context_turns: Annotated[int, Field(ge=0, le=1000)] = Field(6, description="earlier turns in a pair's context (the ones right before the turn)")
    repeat_jaccard: Annotated[float, Field(gt=0, le=1)] = Field(
        0.6, description="rules: a reply whose word set has at least this Jaccard similarity with an earlier user turn is a repeated request"
    )
    short_reply_tokens: Annotated[int, Field(ge=0)] = Field(3, description="rules: a reply of at most this many words accepting nothing is short")
    partitions: Annotated[int, Field(ge=1, le=4096)] = Field(4, description="Spark partitions the dialogues are scored and paired in (by dialogue_id)")

    @field_validator("scorer")
    @classmethod
    def _scorer(cls, v: str) -> str:
        return _check_plugin(v, "rules", "scorer")

    @field_validator("rewriter")
    @classmethod
    def _rewriter(cls, v: str) -> str:
        return _check_plugin(v, "template", "rewriter")

    def rule_params(self) -> RuleParams:
        return RuleParams(repeat_jaccard=self.repeat_jaccard, short_reply_tokens=self.short_reply_tokens)

    def source_path(self, sources_root: str) -> str:
        import os

        return self.path if self.path is not None else os.path.join(sources_root, "dialogues")
