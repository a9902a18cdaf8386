"""The labels family: debiased watch-time labels (D²Co, CWM; PCR, WTG, D2Q baselines).

``contracts`` holds the tables; ``math`` defines every number once in NumPy; ``arrow_path``
applies those functions to Arrow batches (what the jobs' Spark tasks run); ``spark`` selects the
labelled population as Spark columns for the checks (docs/labels.md).
"""
from features.labels.contracts import DURATION_STATS, WATCH_TIME_LABELS

__all__ = ["DURATION_STATS", "WATCH_TIME_LABELS"]
