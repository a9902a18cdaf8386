"""Pin files: table versions that retention keeps for a run (features/layout.py)."""
from __future__ import annotations

from features.layout import pin_path, pin_record, pins_dir, read_pin
from pipelines.warehouse.errors import WarehouseError
from pipelines.warehouse.storage import pin_is_stale


class PinsMixin:
    """Pins of :class:`~pipelines.warehouse.Warehouse`."""

    # ---- pins (versions retention keeps; features/layout.py) -------------------------
    def pin(self, table: str, version: int, name: str, run_dir: str | None = None,
            expires_in_s: float | None = None) -> None:
        """Keep ``version`` of ``table`` through retention (while ``run_dir`` exists, until it expires)."""
        if version not in self.versions(table) and not self._intact(table, version):
            raise WarehouseError(f"table {table!r} has no version {version} to pin (kept: {self.versions(table)})")
        self._put_text(pin_path(self.root, table, name), pin_record(version, run_dir, expires_in_s))

    def unpin(self, table: str, name: str) -> None:
        path = pin_path(self.root, table, name)
        if self.fs.exists(path):
            self.fs.rm(path)

    def pins(self, table: str) -> dict[int, list[str]]:
        """Version -> what pins it (pin names, ``config`` for the project configuration).

        Stale pins (:func:`pin_is_stale`) are left out; :meth:`release_stale_pins` removes them.
        """
        out: dict[int, list[str]] = {v: ["config"] for v in self.pinned.get(table, ())}
        records, _ = self._pin_files(table)
        for name, pin in sorted(records.items()):
            if not pin_is_stale(pin):
                out.setdefault(int(pin["version"]), []).append(name)
        return out

    def release_stale_pins(self, table: str) -> list[str]:
        """Remove the pins that have expired or whose run directory is gone; return their names."""
        records, _ = self._pin_files(table)
        gone = [n for n, pin in sorted(records.items()) if pin_is_stale(pin)]
        for name in gone:
            self.unpin(table, name)
        return gone

    def _pin_files(self, table: str) -> tuple[dict[str, dict], list[str]]:
        """(name -> pin record, names of pin files that cannot be read)."""
        folder = pins_dir(self.root, table)
        if not self.fs.exists(folder):
            return {}, []
        out, bad = {}, []
        for entry in self.fs.ls(folder, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if not name.endswith(".json"):
                continue
            try:
                with self.fs.open(entry, "r") as fh:
                    out[name[: -len(".json")]] = read_pin(fh.read())
            except (OSError, ValueError) as exc:
                bad.append(f"{name} ({exc})")
        return out, bad
