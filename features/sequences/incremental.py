"""The plan of an incremental ``user_sequences`` build: which UTC days to (re)build, and why."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from features.timeutil import ONE_DAY, day_keys


@dataclass(frozen=True)
class IncrementalPlan:
    """Which days an incremental ``user_sequences`` build must (re)build, and why.

    ``start``/``end`` bound the days to build, ``[start, end)`` (UTC dates); both are ``None``
    when every requested day is built and up to date (nothing to do). ``stale`` lists the built
    days whose events changed since they were built (a late event, a re-ingest that changed a
    day, a build with other settings, a built day whose events are gone); ``missing`` the days
    with events that were never built although a later day is built or requested. ``requested``
    is the window the caller asked for.
    """

    requested: tuple[dt.date, dt.date]
    start: dt.date | None
    end: dt.date | None
    stale: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def days(self) -> list[str]:
        """Every day of ``[start, end)`` as an ISO date (empty when there is nothing to do)."""
        if self.start is None or self.end is None:
            return []
        return day_keys(self.start, self.end)


def plan_incremental(
    built: dict[str, str | None],
    current: dict[str, str],
    start: dt.date,
    end: dt.date,
) -> IncrementalPlan:
    """The days an incremental build of the window ``[start, end)`` must build.

    ``built``: the days that have a ``user_sequences`` partition, with the fingerprint of the
    events each was built from (``None``: unknown, e.g. built with other settings). ``current``:
    the fingerprint of every day that has events now. Invariant the plan keeps: after building
    it, every built day equals the full build of the same events, because

    * a day's rows depend on its own events and on every earlier day (``seq_pos`` and the
      histories), so the build starts at the earliest day that is stale, missing, or requested
      and not yet up to date;
    * every built day at or after that start is rebuilt too (its positions may have moved),
      so no later partition is left stale;
    * a requested day that is built and whose events, and every earlier day's, are unchanged
      would be rebuilt to the same rows: it is skipped.
    """
    if end <= start:
        raise ValueError(f"an incremental build needs a window of days [start, end), got {start}..{end}")
    lo, hi = start.isoformat(), end.isoformat()
    last_built = max(built) if built else None
    horizon = max(hi, _next_day(last_built)) if last_built else hi
    stale = sorted(d for d, fp in built.items() if fp is None or current.get(d) != fp)
    missing = sorted(d for d in current if d not in built and d < horizon and not (lo <= d < hi))
    todo = stale + missing + sorted(d for d in current if d not in built and lo <= d < hi)
    if not todo:
        return IncrementalPlan((start, end), None, None)
    first = min(todo)
    last = max(todo)
    if last_built and last_built >= first:
        last = max(last, last_built)
    return IncrementalPlan(
        (start, end), dt.date.fromisoformat(first), dt.date.fromisoformat(_next_day(last)), tuple(stale), tuple(missing)
    )


def _next_day(day: str) -> str:
    return (dt.date.fromisoformat(day) + ONE_DAY).isoformat()
