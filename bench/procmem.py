"""Process helpers for the hot-path bench: RSS (VmRSS sampled, VmHWM peak), CPU quiescence, and
the naive kopf operator (bench/naive/operator.py) as a subprocess."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.integration import helpers as h

NAIVE = Path(__file__).resolve().parent / "naive"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def status_mib(pid: int, field: str) -> float:
    """A /proc/<pid>/status size field (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def settle(pid: int, *, window: float = 3.0, busy: float = 0.05, timeout: float = 900) -> float:
    """Wait until the process used < `busy` of a core over `window` seconds; return the time
    waited. The process is then done with whatever it was catching up on."""
    t0 = time.monotonic()
    last = cpu_seconds(pid)
    while time.monotonic() - t0 < timeout:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - last < busy * window:
            return time.monotonic() - t0
        last = now
    return time.monotonic() - t0


def steady_rss(pid: int, seconds: float = 5.0) -> float:
    samples = []
    for _ in range(int(seconds / 0.25)):
        samples.append(status_mib(pid, "VmRSS"))
        time.sleep(0.25)
    return statistics.median(samples)


class Sampler:
    """VmRSS of a process every 0.2 s in a thread; `peak` is the largest sample."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, [status_mib(pid, "VmRSS")]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(OSError, ValueError):
                self.samples.append(status_mib(self.pid, "VmRSS"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.samples)


@dataclass
class NaiveOperator(h.OperatorProcess):
    """`kopf run bench/naive/operator.py --standalone -A`: kopf defaults, no webhooks. Health,
    kill and stop are the Taskwarden operator process's (kopf's liveness endpoint on
    `health_port`)."""

    secret_bytes: str = "{}"
    name: str = "naive-operator"

    @property
    def log(self) -> Path:
        return self.workdir / "naive-operator.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True) -> None:
        env = dict(self.env, KUBECONFIG=str(self.kubeconfig), NAIVE_SECRET_BYTES=self.secret_bytes)
        liveness = f"--liveness=http://127.0.0.1:{self.health_port}/healthz"
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kopf", "run", str(NAIVE / "operator.py"),
                 "--standalone", "-A", liveness],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )  # fmt: skip
        if wait:
            h.wait_for(self.healthy, timeout=60, what="naive kopf operator liveness")


def naive_operator(kubeconfig: Path, workdir: Path, secret_bytes: str) -> NaiveOperator:
    return NaiveOperator(kubeconfig, workdir, "", dict(os.environ), secret_bytes=secret_bytes)


def wait_until(fn: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
    """Poll fn until true (exceptions count as false); return the time it took, or raise."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(Exception):
            if fn():
                return time.monotonic() - t0
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {fn}")
