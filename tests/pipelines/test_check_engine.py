"""Where a table's checks run: ``QualitySettings.in_process`` places GX and the sequences and
labels invariant counters together, in the process (Arrow, no Spark) or on Spark.

:func:`assert_counter_runs_where_its_check_validates` is called by the families' Arrow-counter
tests on the tables they build (``test_sequences_arrow_checks``, ``test_labels_arrow_checks``).
"""
from __future__ import annotations

import dataclasses

from features.events import EVENTS
from pipelines.quality import QualitySettings


def test_in_process_follows_the_engine_and_the_row_limit():
    auto = QualitySettings(pandas_max_rows=1000)
    assert auto.in_process(0) and auto.in_process(1000) and not auto.in_process(1001)
    assert not QualitySettings(engine="spark").in_process(0)
    assert QualitySettings(engine="pandas", pandas_max_rows=0).in_process(10**9)
    assert QualitySettings().pandas_max_rows == 2_000_000  # the default, documented in docs/quality.md


def assert_counter_runs_where_its_check_validates(spark, wh, settings, table: str) -> None:
    """Under ``auto`` a small table's counter (the family's, as the check step calls it) never
    asks for Spark; above ``pandas_max_rows`` and with ``engine: spark`` it does, and all three
    give the same counts, none violated on the clean table. The ``duration_stats`` counter
    scans ``events``, so its size decides."""
    from pipelines import catalog

    family = catalog.family_of(table)
    asked: list[int] = []

    def session():
        asked.append(1)
        return spark

    def counts(quality: QualitySettings) -> dict[str, int]:
        s = settings.model_copy(update={"quality": quality})
        return family.invariants[table](dataclasses.replace(family.context(wh, s), spark_session=session))

    local = counts(QualitySettings())
    assert asked == []
    rows = wh.manifest(EVENTS.name if table == "duration_stats" else table).row_count
    above = counts(QualitySettings(pandas_max_rows=rows - 1))
    assert asked and above == local
    assert counts(QualitySettings(engine="spark")) == local
    assert local["rows"] > 0 and {k: v for k, v in local.items() if k != "rows" and v} == {}
