"""Writing the synthetic source: day log files, attribute files and the ground truth, then :func:`generate`."""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from features.synthetic_truth import RAW_TRUTH_SCHEMA
from features.timeutil import day_range
from pipelines.sections import SyntheticSettings
from pipelines.synthetic.attributes import _make_items, _rng, _user_counts, _user_feature_frame, _write_video_features
from pipelines.synthetic.model import (
    BATCH_EVENTS,
    DAY_MS,
    ITEM_FILE,
    LOG_COLUMNS,
    LOG_FILE_PATTERN,
    LOG_FILE_RE,
    TRUTH_DIR,
    TRUTH_FILE,
    TRUTH_ROW_GROUP_ROWS,
    USER_BLOCK,
    USER_FILE,
    _STREAM_EVENTS,
    SimulationModel,
    _integer,
    check_size,
    n_users,
)
from pipelines.synthetic.simulate import _batches, _make_window, _simulate_batch, _Window


@dataclass(frozen=True)
class GeneratedSource:
    """What :func:`generate` wrote."""

    root: Path
    log_files: list[Path]
    user_file: Path
    item_file: Path
    truth_file: Path
    events: int



_LOG_SCHEMA = pa.schema(
    [pa.field(c, pa.int8() if c.startswith("is_") or c in ("long_view", "tab") else pa.int64()) for c in LOG_COLUMNS]
)
_CSV_OPTIONS = pcsv.WriteOptions(include_header=False, quoting_style="none")


class _Writers:
    """Open day files, the truth writer and their temporary names (replaced at the end)."""

    def __init__(self, root: Path, s: SyntheticSettings, window: _Window) -> None:
        self.root = root
        self.window = window
        days = day_range(s.start_date, s.start_date + dt.timedelta(days=s.days))
        self.day_names = [LOG_FILE_PATTERN.format(yyyymmdd=day.strftime("%Y%m%d")) for day in days]
        self.lines = np.zeros(s.days, dtype=np.int64)
        self.temps: list[tuple[Path, Path]] = []  # (temporary, final)
        self.sinks: list[pa.NativeFile] = []
        self.csv: list[pcsv.CSVWriter] = []
        self.truth: pq.ParquetWriter | None = None
        self.truth_buffer: list[pa.Table] = []
        self.truth_buffered = 0
        self.source_names = pa.array(self.day_names, pa.string())
        try:
            header = (",".join(LOG_COLUMNS) + "\n").encode()
            for name in self.day_names:
                sink = pa.OSFile(str(self._temp(root / name)), "wb")
                self.sinks.append(sink)
                sink.write(header)
                self.csv.append(pcsv.CSVWriter(sink, _LOG_SCHEMA, write_options=_CSV_OPTIONS))
            (root / TRUTH_DIR).mkdir(exist_ok=True)
            truth_tmp = self._temp(root / TRUTH_DIR / TRUTH_FILE)
            self.truth = pq.ParquetWriter(str(truth_tmp), RAW_TRUTH_SCHEMA, compression="zstd")
        except BaseException:
            self.abort()
            raise

    def _temp(self, final: Path) -> Path:
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        self.temps.append((tmp, final))
        return tmp

    def write(self, parts: list[dict[str, np.ndarray]]) -> None:
        if not parts:
            return
        day = (np.concatenate([part["time_ms"] for part in parts]) - self.window.start_ms) // DAY_MS
        order = np.argsort(day, kind="stable")
        day = day[order]
        cols = {}
        for k in list(parts[0]):  # one column at a time: at most one extra copy alive
            cols[k] = np.concatenate([part.pop(k) for part in parts])[order]
        n_day = np.bincount(day, minlength=len(self.day_names))
        first_of_day = np.cumsum(n_day) - n_day
        line = self.lines[day] + 1 + (np.arange(len(day)) - first_of_day[day])
        self.lines += n_day
        log = pa.Table.from_arrays([pa.array(cols[c]) for c in LOG_COLUMNS], schema=_LOG_SCHEMA)
        for d in np.flatnonzero(n_day):
            self.csv[d].write_table(log.slice(int(first_of_day[d]), int(n_day[d])))
        truth = pa.Table.from_arrays(
            [
                self.source_names.take(pa.array(day)),
                pa.array(line),
                pc.cast(pa.array(cols["user_id"]), pa.string()),
                pc.cast(pa.array(cols["video_id"]), pa.string()),
                pa.array(cols["interest"]),
                pa.array(cols["is_noisy_play"]),
                pa.array(cols["is_complete"]),
                pa.array(cols["is_replay"]),
                pa.array(cols["session_index"]),
            ],
            schema=RAW_TRUTH_SCHEMA,
        )
        self.truth_buffer.append(truth)
        self.truth_buffered += truth.num_rows
        self._flush_truth(final=False)

    def _flush_truth(self, final: bool) -> None:
        if not self.truth_buffer or (not final and self.truth_buffered < TRUTH_ROW_GROUP_ROWS):
            return
        table = pa.concat_tables(self.truth_buffer)
        start = 0
        while table.num_rows - start >= TRUTH_ROW_GROUP_ROWS:
            # contiguous arrays: page boundaries must not depend on how rows were chunked
            group = table.slice(start, TRUTH_ROW_GROUP_ROWS).combine_chunks()
            self.truth.write_table(group, row_group_size=TRUTH_ROW_GROUP_ROWS)
            start += TRUTH_ROW_GROUP_ROWS
        rest = table.slice(start)
        if final and rest.num_rows:
            self.truth.write_table(rest.combine_chunks(), row_group_size=TRUTH_ROW_GROUP_ROWS)
            rest = rest.slice(0, 0)
        self.truth_buffer = [rest] if rest.num_rows else []
        self.truth_buffered = rest.num_rows

    def close(self) -> None:
        self._flush_truth(final=True)
        assert self.truth is not None
        self.truth.close()
        for w, s in zip(self.csv, self.sinks):
            w.close()
            s.close()

    def abort(self) -> None:
        for obj in [self.truth, *self.csv, *self.sinks]:
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # noqa: BLE001 - best effort while failing
                pass
        for tmp, _ in self.temps:
            tmp.unlink(missing_ok=True)


def generate(
    out_dir: str | Path,
    settings: SyntheticSettings,
    *,
    model: SimulationModel | None = None,
    users_per_chunk: int = 10_000,
) -> GeneratedSource:
    """Write the synthetic source of ``settings`` (size and window) into ``out_dir`` (created if missing).

    ``model`` holds the simulated behaviour's parameters (default: :class:`SimulationModel()`).
    Size checks the settings model leaves open (users or items above events, too few users for
    the events, a negative seed) raise ``ValueError`` naming the field.
    Files are written under temporary names and moved into place at the end; log files of an
    earlier run that the new window does not have are removed. ``users_per_chunk`` only sets how
    many users' events are buffered before they are written (memory, not output).
    """
    if not _integer(users_per_chunk) or users_per_chunk < 1:
        raise ValueError(f"users_per_chunk: must be a positive integer (got {users_per_chunk!r})")
    s = settings
    check_size(s)
    model = SimulationModel() if model is None else model
    if not isinstance(model, SimulationModel):
        raise TypeError(f"model: expected a SimulationModel, got {type(model).__name__}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    window = _make_window(s, model)
    z, counts = _user_counts(s, model)
    items = _make_items(s, model)

    writers = _Writers(root, s, window)
    user_tmp = writers._temp(root / USER_FILE)
    item_tmp = writers._temp(root / ITEM_FILE)
    try:
        _write_video_features(item_tmp, s, items)
        pending: list[dict[str, np.ndarray]] = []
        pending_users = pending_events = 0
        with open(user_tmp, "w", newline="", encoding="utf-8") as user_file:
            for block, lo in enumerate(range(0, n_users(s), USER_BLOCK)):
                hi = min(n_users(s), lo + USER_BLOCK)
                _user_feature_frame(s, block, lo, hi, z).to_csv(
                    user_file, header=(block == 0), index=False, lineterminator="\n"
                )
                rng = _rng(s.seed, _STREAM_EVENTS, block)
                taste = rng.standard_normal((hi - lo, model.taste_dim)).astype(np.float32)
                bias = model.user_bias_sd * rng.standard_normal(hi - lo)
                block_counts = counts[lo:hi]
                for b_lo, b_hi in _batches(block_counts):
                    if block_counts[b_lo:b_hi].sum() == 0:
                        continue
                    pending.append(
                        _simulate_batch(
                            model, rng, items, window, lo + b_lo, block_counts[b_lo:b_hi],
                            taste[b_lo:b_hi], bias[b_lo:b_hi],
                        )  # fmt: skip
                    )
                    pending_users += b_hi - b_lo
                    pending_events += int(block_counts[b_lo:b_hi].sum())
                    if pending_users >= users_per_chunk or pending_events >= 2 * BATCH_EVENTS:
                        writers.write(pending)
                        pending, pending_users, pending_events = [], 0, 0
            writers.write(pending)
        writers.close()
    except BaseException:
        writers.abort()
        raise
    for tmp, final in writers.temps:
        os.replace(tmp, final)
    keep = set(writers.day_names)
    for old in root.iterdir():
        if LOG_FILE_RE.match(old.name) and old.name not in keep:
            old.unlink()
    return GeneratedSource(
        root=root,
        log_files=[root / name for name in writers.day_names],
        user_file=root / USER_FILE,
        item_file=root / ITEM_FILE,
        truth_file=root / TRUTH_DIR / TRUTH_FILE,
        events=int(counts.sum()),
    )

