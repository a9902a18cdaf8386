"""A Spark standalone cluster (one master, N workers) on this machine, from the pyspark wheel.

The wheel ships no ``start-master.sh``, but ``$SPARK_HOME/bin/spark-class`` runs the standalone
daemons (``org.apache.spark.deploy.master.Master`` and ``...worker.Worker``). Everything binds
to 127.0.0.1; every port (master RPC, master and worker web UIs, worker RPC) is a port that was
free when picked, and the daemons run with ``spark.port.maxRetries=0``: a port taken in between
makes the daemon exit and ``start`` fail with its log (never a daemon silently on the next port,
where ``status`` would not find it); each worker's directory
(``SPARK_WORKER_DIR``: application jars, executor stdout/stderr) lies under the given temporary
folder, so nothing is written into ``SPARK_HOME``. Each daemon runs in its own process group
and is stopped with ``SIGTERM`` to that group (``SIGKILL`` after a grace period).

    with StandaloneCluster(tmp_path / "cluster", workers=2, cores=1) as cluster:
        cluster.master_url   # spark://127.0.0.1:<port>
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.servers import free_port


def spark_home() -> str:
    import pyspark

    return os.path.dirname(os.path.abspath(pyspark.__file__))


class ClusterError(RuntimeError):
    """The standalone cluster did not come up; the message holds the tail of the daemon's log."""


class StandaloneCluster:
    """One master and ``workers`` workers of ``cores`` cores and ``memory`` each, on 127.0.0.1.

    ``start`` waits (up to ``timeout_s`` seconds) until the master's web UI reports every worker
    ALIVE; ``stop`` ends the daemons. The executors' Python is the one named by
    ``PYSPARK_PYTHON`` in the driver's environment (Spark sends it to the executors), so the
    workers need no Python setting of their own here.
    """

    def __init__(self, root: str | os.PathLike, workers: int = 2, cores: int = 1, memory: str = "1g",
                 timeout_s: float = 180.0):
        self.root = Path(root)
        self.workers = workers
        self.cores = cores
        self.memory = memory
        self.timeout_s = timeout_s
        self.port = free_port()
        self.webui_port = free_port()
        self._procs: list[tuple[subprocess.Popen, Path]] = []

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SPARK_HOME=spark_home(), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOCAL_DIRS=str(self.root / "local"),
            SPARK_LOG_DIR=str(self.root / "logs"), SPARK_PID_DIR=str(self.root / "pids"),
        )
        # bind exactly the ports given (module docstring)
        env["SPARK_DAEMON_JAVA_OPTS"] = (env.get("SPARK_DAEMON_JAVA_OPTS", "") + " -Dspark.port.maxRetries=0").strip()
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        env.update(extra)
        return env

    def _spawn(self, name: str, args: list[str], **env: str) -> None:
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [os.path.join(spark_home(), "bin", "spark-class"), *args], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._env(**env), start_new_session=True,
            )
        self._procs.append((proc, log))

    def status(self) -> dict:
        """The master's web UI JSON (``workers``, ``aliveworkers``, ``activeapps``, ...)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.webui_port}/json/", timeout=5) as resp:
            return json.load(resp)

    def alive_workers(self) -> int:
        try:
            return sum(1 for w in self.status().get("workers", []) if w.get("state") == "ALIVE")
        except OSError:
            return 0

    def start(self) -> "StandaloneCluster":
        try:
            return self._start()
        except BaseException:  # an error or an interrupt while starting: no daemon outlives it
            self.stop()
            raise

    def _start(self) -> "StandaloneCluster":
        for sub in ("local", "logs", "pids"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(self.port), "--webui-port", str(self.webui_port)])
        for i in range(self.workers):
            work = self.root / f"worker-{i}"
            work.mkdir(parents=True, exist_ok=True)
            self._spawn(
                f"worker-{i}",
                ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(free_port()),
                 "--webui-port", str(free_port()), "--cores", str(self.cores), "--memory", self.memory,
                 "--work-dir", str(work), self.master_url],
                SPARK_WORKER_DIR=str(work),
            )
        deadline = time.monotonic() + self.timeout_s
        while self.alive_workers() < self.workers:
            dead = [(p, log) for p, log in self._procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                p, log = dead[0] if dead else self._procs[0]
                tail = log.read_text(errors="replace")[-2000:]
                self.stop()
                why = f"{log.name} exited with {p.returncode}" if dead else f"not every worker registered in {self.timeout_s:.0f} s"
                raise ClusterError(f"standalone cluster did not start ({why}); log tail:\n{tail}")
            time.sleep(1.0)
        return self

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to each daemon's process group (workers first), SIGKILL after ``grace_s``."""
        for proc, _ in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc, _ in reversed(self._procs):
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:  # keep stopping the others
                    pass
        self._procs.clear()

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
