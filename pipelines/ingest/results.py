"""What an ingestion run reports: its result and its errors (its window is :class:`features.timeutil.DateWindow`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from features.layout import Manifest


class IngestModeError(ValueError):
    """A source is re-ingested with another ``repeated_lines`` mode than its committed events."""


class DimensionSchemaError(ValueError):
    """A users/items file's columns cannot be merged with the committed table's (a type clash)."""


@dataclass
class IngestResult:
    """What an ingestion run read, routed and committed.

    ``partitions``: the partitions the run covers (its window's dates, or every date present);
    ``replaced_partitions``: those it actually rewrote, the ones that gained events.
    ``events_committed`` is false when the run brought nothing new and committed nothing to
    ``events``; ``manifest`` is then the version it read, unchanged.
    """

    run_id: str
    source: str
    files: list[str]
    records_in: int
    new_events: int
    already_present: int
    outside_window: int
    rejected: int
    duplicates: int
    by_reason: dict[str, int]
    manifest: Manifest
    rejected_manifest: Manifest | None
    partitions: list[str] = field(default_factory=list)
    replaced_partitions: list[str] = field(default_factory=list)
    events_committed: bool = True

    @property
    def in_window(self) -> int:
        return self.new_events + self.already_present

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_reason.items())) or "none"
        if self.events_committed:
            commit = (
                f"events v{self.manifest.version} holds {self.manifest.row_count:,} rows "
                f"({len(self.replaced_partitions)} partition(s) replaced)"
            )
        else:
            commit = f"nothing new: events not committed (v{self.manifest.version} unchanged, {self.manifest.row_count:,} rows)"
        return (
            f"{self.source}: {self.records_in:,} records read from {len(self.files)} file(s): "
            f"{self.new_events:,} new events, {self.already_present:,} already present, "
            f"{self.outside_window:,} outside the window, {self.rejected:,} rejected, "
            f"{self.duplicates:,} duplicates (by reason: {reasons}); {commit}"
        )


def _base(version: int | None) -> int:
    """The ``base_version`` of a commit on what was read at ``version`` (0: the table did not
    exist, so the commit fails if another writer created it meanwhile)."""
    return 0 if version is None else version
