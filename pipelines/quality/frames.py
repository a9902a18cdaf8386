"""Preparing validation frames: NaN as null, Spark to pandas with UTC-aware timestamps, times."""
from __future__ import annotations

import datetime as dt
from typing import Any


def nan_to_null(df):
    """Float NaN becomes null (Spark counts NaN as a value, pandas as missing: both now agree)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType

    for f in df.schema.fields:
        if isinstance(f.dataType, (DoubleType, FloatType)):
            df = df.withColumn(f.name, F.when(F.isnan(F.col(f.name)), F.lit(None)).otherwise(F.col(f.name)))
    return df


def to_pandas(spark, df):
    """Spark to pandas with timestamps UTC-aware (Spark gives naive session-zone values)."""
    import pandas as pd
    from pyspark.sql.types import TimestampType

    from pipelines.quality.suites import session_zone

    pdf = df.toPandas()
    zone = session_zone(spark)
    for f in df.schema.fields:
        if isinstance(f.dataType, TimestampType):
            col = pd.to_datetime(pdf[f.name])
            if col.dt.tz is None:
                col = col.dt.tz_localize(zone)
            pdf[f.name] = col.dt.tz_convert("UTC")
    return pdf


def is_pandas(frame: Any) -> bool:
    import pandas as pd

    return isinstance(frame, pd.DataFrame)


def as_utc(value: dt.datetime | dt.date | None) -> dt.datetime | None:
    """A date (midnight) or datetime as an aware UTC datetime (naive values are taken as UTC)."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
