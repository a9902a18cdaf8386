"""Parameters of the labels family: the ``labels`` section of ``recfeat.yaml`` (docs/labels.md)."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, model_validator

from features.labels.math import CWM_COMPLETIONS, LabelParams
from pipelines.config import StrictModel


class LabelSettings(StrictModel):
    """How ``duration_stats`` and ``watch_time_labels`` are fitted and computed (docs/labels.md)."""

    fit_start: dt.date = Field(dt.date(2022, 4, 8), description="first UTC day of the training (fit) window, inclusive")
    fit_end: dt.date = Field(dt.date(2022, 4, 17), description="end of the fit window (exclusive); default: the first 9 synthetic days")
    duration_min_s: Annotated[int, Field(ge=1, le=100_000)] = Field(5, description="shortest duration labelled (rounded seconds, inclusive)")
    duration_max_s: Annotated[int, Field(ge=1, le=100_000)] = Field(240, description="longest duration labelled (rounded seconds, inclusive)")
    alpha: Annotated[float, Field(ge=-5.0, le=5.0)] = Field(0.0, description="D²Co exponent α; 0 = the affine form D²Co(A)")
    window_T: Annotated[int, Field(ge=1, le=1_000)] = Field(3, description="D²Co smoothing: window of 2T-1 durations (T=1: none)")
    smoothing: Literal["positional", "seconds"] = Field(
        "positional", description="positional: 2T-1 fitted durations (official code); seconds: durations within T-1 s"
    )
    d2q_bins: Annotated[int, Field(ge=1, le=10_000)] = Field(30, description="D2Q equal-frequency duration bins (fewer if edges coincide)")
    cwm_c_inv: Annotated[float, Field(gt=0)] = Field(40.0, description="CWM cost constant c_inv (the target is logit(exp(-c_inv/(w+1))))")
    min_rows: Annotated[int, Field(ge=3)] = Field(3, description="rows a duration needs for its own GMM fit (at least 3)")
    min_rows_policy: Literal["borrow", "drop"] = Field(
        "borrow", description="durations below min_rows: borrow = w-/w+ from fitted neighbours; drop = no label rows"
    )
    min_gap_s: Annotated[float, Field(gt=0)] = Field(1.0, description="D²Co guard: smallest w+ - w- used as denominator (p ≈ q)")
    long_view_d2co_s: Annotated[float, Field(gt=0)] = Field(18.0, description="D²Co long-view threshold (s)")
    long_view_cwm_quantile: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.7, description="CWM long-view threshold τ: this quantile of w over the fit window"
    )
    long_view_cwm_completion: Literal[CWM_COMPLETIONS] = Field(  # type: ignore[valid-type]
        "rounded_s",
        description="CWM long view 'played to the end': rounded_s = play rounded to seconds >= d (official code); raw_ms = play_time_ms >= duration_ms",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "LabelSettings":
        if self.fit_end <= self.fit_start:
            raise ValueError("fit_end must be after fit_start")
        if self.duration_max_s < self.duration_min_s:
            raise ValueError("duration_max_s must not be below duration_min_s")
        return self

    def params(self) -> LabelParams:
        """The kernels' :class:`features.labels.math.LabelParams`: the fields of the same names."""
        return LabelParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LabelParams)})
