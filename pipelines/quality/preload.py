"""Importing Great Expectations ahead of the first check: :func:`preload_gx`, :func:`wait_for_gx`.

GX's import costs about 2.8 s of one core (pydantic models, every expectation class, the data
docs renderers) and a command paid it on its first check step. A run that holds checks calls
:func:`preload_gx` as it starts: a daemon thread imports GX while the main thread builds the run
and waits for its Spark steps (which hold no Python lock while the JVM works), so the first
check finds GX imported.

Safety: the import runs in that one thread, and :func:`wait_for_gx` (called by every function
that imports GX, before it does) waits for it to finish, so GX is never imported by two
threads at once, and no GX module is used half-initialised. A failed import is not raised
here: the first check imports GX again and raises that error where it would have without the
preload. Without a preload :func:`wait_for_gx` returns at once.
"""
from __future__ import annotations

import threading
import time

#: The modules imported, in order (what :func:`pipelines.quality.gx_run.run_gx` imports first).
MODULES = (
    "great_expectations",
    "great_expectations.core.run_identifier",
    "great_expectations.data_context.types.base",
    "great_expectations.render.view.view",
)

_LOCK = threading.Lock()
_THREAD: threading.Thread | None = None
#: Seconds the preload thread took (None until it ends): reported by tests and benchmarks.
SECONDS: float | None = None


def _import_all() -> None:
    global SECONDS
    import importlib

    start = time.perf_counter()
    try:
        for name in MODULES:
            importlib.import_module(name)
    except Exception:  # noqa: BLE001 - the check that needs GX imports it again and raises there
        pass
    finally:
        SECONDS = time.perf_counter() - start


def preload_gx() -> bool:
    """Start importing GX in a daemon thread, once per process; ``True`` if this call started it
    (``False``: already imported, or a preload already started)."""
    global _THREAD
    import sys

    with _LOCK:
        if _THREAD is not None or "great_expectations.render.view.view" in sys.modules:
            return False
        _THREAD = threading.Thread(target=_import_all, name="recfeat-gx-preload", daemon=True)
        _THREAD.start()
        return True


def wait_for_gx() -> None:
    """Wait until a started preload has finished (at once when none was started or it is done,
    or when called from the preload thread itself)."""
    thread = _THREAD
    if thread is not None and thread is not threading.current_thread():
        thread.join()
