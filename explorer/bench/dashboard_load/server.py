"""The Voilà server side of the benchmark: start / stop a loopback Voilà, find its kernels, sample the tree's RSS
and CPU, wait for a preheated pool, and watch kernels go after the visitors leave."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .common import MB, ROOT, SAMPLE_EVERY_S, SERVER_START_S, Deadline, free_port, http_status

POOL_LAUNCHER = ROOT / "explorer/deploy/voila_pool.py"  # Voila with the pool-safe kernel manager, run by path

_KERNEL_FILE = re.compile(r"kernel-([0-9a-fA-F-]{36})\.json")
PROBE_KERNEL = "00000000-0000-0000-0000-000000000000"  # GET /api/kernels/<this> answers 404 without starting one


def kernel_processes(root: psutil.Process) -> dict[str, psutil.Process]:
    """Kernel id -> process, for every descendant of ``root`` started with a ``kernel-<id>.json`` file."""
    found: dict[str, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        for proc in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                match = _KERNEL_FILE.search(" ".join(proc.cmdline()))
                if match:
                    found[match.group(1)] = proc
    return found


def rss_mb(proc: psutil.Process) -> float | None:
    try:
        return proc.memory_info().rss / MB
    except psutil.Error:
        return None


def tree_rss_mb(root: psutil.Process) -> tuple[float, list[psutil.Process]]:
    """Sum of RSS over ``root`` and its descendants, and the processes seen."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, []
    return sum(rss_mb(p) or 0.0 for p in procs), procs


class RssSampler:
    """Samples the RSS of a process tree every ``every`` seconds on a thread; remembers every process seen.

    It also splits the CPU time this machine spent while the visitors loaded: ``cpu_s["server"]`` is Voila and its
    kernels, ``cpu_s["browser"]`` every other process this benchmark started (Playwright's driver and Chromium,
    which in a real class run on the visitors' own machines). Each process counts from its first sample (or its
    start, if it started during the round) to its last; a process that ends between samples loses at most one
    interval.
    """

    def __init__(self, root: psutil.Process, every: float = SAMPLE_EVERY_S) -> None:
        self.root, self.every = root, every
        self.peak_total_mb = 0.0
        self.peak_kernels = 0
        self.samples = 0
        self._me = psutil.Process()
        self._cpu: dict[int, list] = {}  # pid -> [kind, first seconds, last seconds]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._sample_cpu(first=True)

    def _sample_cpu(self, first: bool = False) -> None:
        with contextlib.suppress(psutil.Error):
            server = {self.root.pid} | {p.pid for p in self.root.children(recursive=True)}
            for proc in self._me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    seconds = times.user + times.system
                    entry = self._cpu.get(proc.pid)
                    if entry is None:
                        kind = "server" if proc.pid in server else "browser"
                        self._cpu[proc.pid] = [kind, seconds if first else 0.0, seconds]
                    else:
                        entry[2] = seconds

    @property
    def cpu_s(self) -> dict[str, float]:
        out = {"server": 0.0, "browser": 0.0}
        for kind, start, last in self._cpu.values():
            out[kind] += last - start
        return {k: round(v, 2) for k, v in out.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            total, _procs = tree_rss_mb(self.root)
            self.peak_total_mb = max(self.peak_total_mb, total)
            self.peak_kernels = max(self.peak_kernels, len(kernel_processes(self.root)))
            self._sample_cpu()
            self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample_cpu()


@dataclass
class VoilaServer:
    """A Voilà process this module started (its own session, so its process group is its pid)."""
    proc: subprocess.Popen
    url: str
    log_path: Path
    psproc: psutil.Process
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def remember_tree(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in self.psproc.children(recursive=True):
                self.seen.setdefault(child.pid, child)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""


_STARTED: dict[int, VoilaServer] = {}  # servers alive, for the last-resort cleanup on interpreter exit


def voila_command(notebook: str, port: int, cull_timeout: int, cull_interval: int, preheat: int, *,
                  pool_fix: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """The Voilà command line: loopback, no browser, the cull settings and (``preheat > 0``) a kernel pool.

    ``pool_fix``: launch through ``explorer/deploy/voila_pool.py`` (by path), whose kernel manager keeps the culler
    off pooled and just-handed-out kernels; otherwise Voilà's own ``voila`` script. ``extra``: more flags, as given.
    """
    if pool_fix:
        command = [sys.executable, str(POOL_LAUNCHER)]
    else:
        command = [str(Path(sys.executable).with_name("voila"))]
    command += [notebook, "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
                f"--MappingKernelManager.cull_idle_timeout={cull_timeout}",
                f"--MappingKernelManager.cull_interval={cull_interval}"]
    if preheat > 0:
        command += ["--VoilaConfiguration.preheat_kernel=True", f"--VoilaConfiguration.default_pool_size={preheat}"]
    return command + list(extra)


def stop_server(server: VoilaServer, grace: float = 20.0) -> None:
    """Terminate Voilà (it shuts its kernels down), then kill its process group and any kernel still alive."""
    server.remember_tree()
    proc = server.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # kernels run in sessions of their own (jupyter_client starts them so): kill the ones we saw, if still there
    for child in server.seen.values():
        with contextlib.suppress(psutil.Error):
            if child.is_running():
                child.kill()
                child.wait(timeout=5)
    _STARTED.pop(proc.pid, None)


def _stop_all_started() -> None:
    for server in list(_STARTED.values()):
        with contextlib.suppress(Exception):
            stop_server(server, grace=5)


atexit.register(_stop_all_started)


def wait_until_up(server: VoilaServer, deadline: Deadline, timeout: float = SERVER_START_S) -> float:
    """Seconds until the server answers HTTP (a 404 for a kernel that does not exist: no kernel is started)."""
    start = time.monotonic()
    limit = start + deadline.left(timeout)
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"voila exited with {server.proc.returncode}:\n{server.log_text()[-3000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            http_status(server.url, f"/api/kernels/{PROBE_KERNEL}")
            return time.monotonic() - start
        if time.monotonic() > limit:
            raise TimeoutError(f"voila on {server.url} did not answer within {timeout:.0f} s")
        time.sleep(0.3)


def wait_pool_ready(server: VoilaServer, size: int, deadline: Deadline, timeout: float = 300.0) -> float:
    """Seconds until ``size`` pooled kernels exist and have been quiet (< 10 % CPU in total) for two 1-s windows."""
    start = time.monotonic()
    limit = start + deadline.left(timeout)
    quiet = 0
    while quiet < 2:
        if time.monotonic() > limit:
            raise TimeoutError(f"the preheated pool of {size} kernel(s) was not ready within {timeout:.0f} s")
        if server.proc.poll() is not None:
            raise RuntimeError(f"voila exited with {server.proc.returncode}:\n{server.log_text()[-3000:]}")
        kernels = list(kernel_processes(server.psproc).values())
        if len(kernels) < size:
            quiet = 0
            time.sleep(0.5)
            continue
        for proc in kernels:
            with contextlib.suppress(psutil.Error):
                proc.cpu_percent(None)
        time.sleep(1.0)
        busy = 0.0
        for proc in kernels:
            with contextlib.suppress(psutil.Error):
                busy += proc.cpu_percent(None)
        quiet = quiet + 1 if busy < 10.0 else 0
    server.remember_tree()
    return time.monotonic() - start


@contextlib.contextmanager
def serve(folder: Path, notebook: str, deadline: Deadline, *, cull_timeout: int = 900, cull_interval: int = 60,
          preheat: int = 0, pool_fix: bool = False, extra: Sequence[str] = ()) -> Iterator[VoilaServer]:
    """Start Voilà on ``folder/notebook`` (cwd ``folder``, so its voila.json applies); stop it on exit."""
    deadline.left()
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+b", prefix="voila-bench-", suffix=".log", delete=False)
    proc = subprocess.Popen(voila_command(notebook, port, cull_timeout, cull_interval, preheat,
                                          pool_fix=pool_fix, extra=extra), cwd=folder,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = VoilaServer(proc=proc, url=f"http://127.0.0.1:{port}/", log_path=Path(log.name),
                         psproc=psutil.Process(proc.pid))
    _STARTED[proc.pid] = server
    try:
        server.start_s = wait_until_up(server, deadline)  # type: ignore[attr-defined]
        yield server
    finally:
        try:
            stop_server(server)
        finally:
            log.close()
            with contextlib.suppress(OSError):
                os.unlink(log.name)



def kernel_alive(url: str, kernel_id: str) -> bool | None:
    """True / False from ``GET /api/kernels/<id>`` (200 / 404); None when the server gives no such answer."""
    try:
        status = http_status(url, f"/api/kernels/{kernel_id}")
    except (OSError, http.client.HTTPException):
        return None
    return {200: True, 404: False}.get(status)


async def measure_cull(url: str, server: VoilaServer | None, kernel_ids: list[str], pool: int, log_offset: int,
                       timeout: float) -> dict:
    """Poll until every visitor kernel is gone (by id; else by counting kernel processes down to ``pool``)."""
    start = time.monotonic()
    gone_at: dict[str, float] = {}
    while True:
        elapsed = time.monotonic() - start
        for kid in kernel_ids:
            if kid not in gone_at and await asyncio.to_thread(kernel_alive, url, kid) is False:
                gone_at[kid] = elapsed
        processes = None if server is None else len(kernel_processes(server.psproc))
        by_id = len(gone_at) == len(kernel_ids) if kernel_ids else None
        done = by_id if by_id is not None else (processes is not None and processes <= pool)
        if done or elapsed > timeout:
            break
        await asyncio.sleep(0.5)
    log = server.log_text()[log_offset:] if server is not None else ""
    culled = len(re.findall(r"Culling '", log))
    return {"cull_s": elapsed if done else None, "timed_out": not done, "wait_limit_s": timeout,
            "kernel_gone_s": sorted(gone_at.values()), "kernels_tracked": len(kernel_ids),
            "kernel_processes_left": processes, "pool_size": pool, "culled_by_server": culled if server else None,
            "shut_down_on_close": (len(gone_at) - culled) if server and kernel_ids else None,
            # Voila's beforeunload beacon: 204 = kernel shut down; 403 = refused (no _xsrf, voila issue #1458)
            "shutdown_beacons": _beacons(log) if server else None}


def _beacons(log: str) -> dict[str, int]:
    """HTTP statuses of ``POST /voila/api/shutdown/<id>`` in the server log (one access line per request)."""
    counts: dict[str, int] = {}
    for status in re.findall(r"^(\d{3}) POST /voila/api/shutdown/\S+ \([^)]*\) [\d.]+ms", log, re.MULTILINE):
        counts[status] = counts.get(status, 0) + 1
    return counts



def _cull_line(log: str) -> str | None:
    match = re.search(r"Culling kernels with idle durations > .*", log)
    return match.group(0).strip() if match else None



def tree_cpu_s(root: psutil.Process) -> float:
    """CPU seconds (user + system) of ``root`` and every live descendant, plus the children they have reaped
    (``children_user`` / ``children_system``: a kernel that exited and was waited for still counts in its parent)."""
    total = 0.0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return total
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def wait_quiet(root: psutil.Process, deadline: Deadline, *, busy_below: float = 0.10, windows: int = 2,
               timeout: float = 300.0) -> float:
    """Seconds until the tree of ``root`` used less than ``busy_below`` CPU-s per second in ``windows`` 1-s windows
    in a row (TimeoutError after ``timeout``)."""
    start = time.monotonic()
    limit = start + deadline.left(timeout)
    quiet, last = 0, tree_cpu_s(root)
    while quiet < windows:
        if time.monotonic() > limit:
            raise TimeoutError(f"the server's process tree was not quiet within {timeout:.0f} s")
        time.sleep(1.0)
        now = tree_cpu_s(root)
        quiet = quiet + 1 if now - last < busy_below else 0
        last = now
    return time.monotonic() - start
