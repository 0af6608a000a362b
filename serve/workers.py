"""`python -m serve --workers N`: N server processes sharing the gRPC and HTTP ports, and their supervisor.

One Python process gives gRPC's per-call work at most about one core (the GIL), whatever the
machine has. With --workers N the process the operator started becomes a supervisor that runs N
copies of `python -m serve`, each with its own event loop, batchers and ONNX Runtime sessions sized
to its share of the cores (RuntimeOptions.workers). They all listen on the same ports with
SO_REUSEPORT and the kernel spreads new connections over them, as gunicorn's and uvicorn's
workers do: a connection stays with the worker that accepted it, so clients need several
connections (or several clients) to use every worker.

The supervisor
- holds the ports for the whole run (bound with SO_REUSEPORT, never listening, so they get no
  connections): port 0 becomes one port for every worker, a port in use is refused before any
  worker starts, and no other program takes a port while a worker restarts;
- writes --port-file only once every worker answers calls, and stops start-up with the first
  worker's error (a model that cannot load, TLS files, ...) exactly as a single server would;
- starts a worker that dies again (logged, counted in serve_worker_restarts_total), backing off
  while it cannot start;
- forwards SIGTERM and SIGINT to every worker, so each drains as a single server does, and exits 0
  once they all exited 0; passes SIGHUP on (each worker re-reads the model repository);
- serves /metrics for the whole server: the workers' figures summed from prometheus_client's
  multiprocess files (in a folder it creates and removes), with its own restart counter. Any one
  worker could read those files too, but only the supervisor lives for the whole run and knows the
  restarts, and a scrape must not land on a worker that is about to be replaced.

Health stays with each worker (grpc.health.v1 and /v2/health on its own event loop): a worker
answers only once its models are loaded, and says NOT_SERVING from the moment it drains, so a
probe is answered truthfully by whichever worker the kernel hands the connection to.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from contracts.sessions import usable_cpus
from serve.api.metrics import PROMETHEUS_MULTIPROC_DIR, SupervisorMetrics
from serve.api.network import (
    ServerStartError,
    address,
    port_in_use_hint,
    write_port_file,
)

log = logging.getLogger("serve.workers")

# The default is one worker per core, at most this many: each worker holds its own sessions of every
# model (and, on a GPU, its own CUDA context), and past a few workers the load balancer's spread
# over connections matters more than another core.
MAX_DEFAULT_WORKERS = 8
# A worker that dies while serving is started again at once; one that cannot start waits this long
# before its next try, twice as long after each failed try, up to the longest.
RESTART_BACKOFF_S = 0.5
LONGEST_BACKOFF_S = 30.0
POLL_S = 0.05
# Past the grace period, how long the workers get to close after SIGTERM before they are killed.
EXIT_MARGIN_S = 5.0
START_TIMEOUT_S = 300.0
_PR_SET_PDEATHSIG = 1


def default_workers() -> int:
    return max(1, min(usable_cpus(), MAX_DEFAULT_WORKERS))


@dataclass(frozen=True)
class WorkersConfig:
    count: int
    # The operator's flags, which every worker runs with; the supervisor adds the ports it reserved,
    # each worker's own readiness file and its index.
    argv: tuple[str, ...]
    host: str
    port: int
    http_port: int | None
    metrics_port: int | None
    port_file: Path | None
    grace_s: float

    def __post_init__(self) -> None:
        if self.count < 2:
            raise ValueError(f"a supervisor runs at least 2 workers, got {self.count} (1 runs the server itself)")


def bind_to_supervisor(supervisor_pid: int) -> bool:
    """In a worker: have the kernel send SIGTERM when the supervisor dies (Linux), so that no worker
    outlives a supervisor that was killed. False when the supervisor is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM is what stops workers
        pass
    return os.getppid() == supervisor_pid


def worker_error_file(port_file: Path) -> Path:
    """Where a worker writes why it could not start, beside the readiness file the supervisor gave it."""
    return Path(port_file).with_suffix(".error")


def reserve_port(host: str, port: int, what: str, flag: str) -> tuple[int, list[socket.socket]]:
    """Bind every address of host:port with SO_REUSEPORT, without listening; returns the port and the sockets.

    A port someone else listens on (or holds without SO_REUSEPORT) is refused with the message a
    single server gives, naming `flag` (the option that picks another port). Port 0 becomes the
    port the first address was given, for every address.
    """
    hostname = host.strip("[]")
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot listen {what}on {address(host, port)}: {exc.strerror} (is the host local?)") from exc
    held: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            if (family, sockaddr[0]) in seen:
                continue
            seen.add((family, sockaddr[0]))
            where = (sockaddr[0], port, *sockaddr[2:])
            if port:
                # A bind without SO_REUSEPORT first, as a single server binds: it fails on a port that
                # anything listens on, and on one another supervisor holds (its socket, like ours
                # below, lacks the SO_REUSEADDR that two bound sockets would both need to share it).
                with socket.socket(family, kind, proto) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(where)
            reserved = socket.socket(family, kind, proto)
            held.append(reserved)
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            reserved.bind(where)
            port = reserved.getsockname()[1]
    except OSError as exc:
        for reserved in held:
            reserved.close()
        raise ServerStartError(
            f"cannot listen {what}on {address(host, port)}: {exc.strerror or exc} ({port_in_use_hint(flag)})"
        ) from exc
    return port, held


class Worker:
    """One worker process: its command, readiness file, and the state the supervisor keeps of it."""

    def __init__(self, index: int, command: list[str], env: dict[str, str], status_dir: Path) -> None:
        self.index = index
        self.port_file = status_dir / f"worker-{index}.port"
        self.command = [*command, "--port-file", str(self.port_file), "--worker-index", str(index)]
        self.env = env
        self.process: subprocess.Popen | None = None
        self.ready = False
        self.failed_starts = 0
        self.next_start_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.port_file.unlink(missing_ok=True)
        worker_error_file(self.port_file).unlink(missing_ok=True)
        # Its own session (so its own process group): a terminal's Ctrl-C reaches the supervisor only,
        # which passes it on once.
        self.process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)
        self.ready = False

    def check_ready(self) -> bool:
        if not self.ready and self.process is not None and self.process.poll() is None:
            try:
                self.ready = bool(self.port_file.read_text().strip())
            except OSError:
                pass
        return self.ready

    def start_error(self) -> str:
        """Why the worker exited before it was ready: its own message, else its exit status."""
        try:
            message = worker_error_file(self.port_file).read_text().strip()
        except OSError:
            message = ""
        return message or f"worker {self.index} exited with {describe_exit(self.process.returncode)} while starting"

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"status {returncode}"


class Supervisor:
    def __init__(self, config: WorkersConfig) -> None:
        self.config = config
        self.workers: list[Worker] = []
        self.metrics: SupervisorMetrics | None = None
        self._signals: list[int] = []
        self._wake = threading.Event()
        self._held: list[socket.socket] = []
        self._multiprocess_dir: Path | None = None

    def run(self) -> int:
        """Start the workers, supervise them until SIGTERM/SIGINT, drain them; the exit status.

        Raises ServerStartError, before anything was served, when a port is in use or a worker cannot
        start (with that worker's own message).
        """
        config = self.config
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload_signal)
        try:
            port, held = reserve_port(config.host, config.port, "", "--port")
            self._held += held
            http_port = None
            if config.http_port is not None:
                http_port, held = reserve_port(config.host, config.http_port, "for HTTP ", "--http-port")
                self._held += held
            self._multiprocess_dir = Path(tempfile.mkdtemp(prefix="serve-metrics-"))
            self.metrics = SupervisorMetrics(self._multiprocess_dir)
            if config.metrics_port is not None:
                try:
                    self.metrics.serve_http(config.host, config.metrics_port)
                except OSError as exc:
                    raise ServerStartError(f"cannot serve metrics on port {config.metrics_port}: {exc}") from exc
            self._start_workers(port, http_port)
            if not self._wait_until_all_ready():
                return self._drain()
            self._write_port_file(port, http_port)
            log.info("%d workers serving gRPC on %s%s (pids %s)", len(self.workers), address(config.host, port),
                     f", HTTP on {address(config.host, http_port)}" if http_port is not None else "",
                     ", ".join(str(w.pid) for w in self.workers))
            self._supervise()
            return self._drain()
        finally:
            self._stop_everything()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # Signals

    def _on_signal(self, signum: int, frame) -> None:
        self._signals.append(signum)
        self._wake.set()

    def _on_reload_signal(self, signum: int, frame) -> None:
        log.info("SIGHUP: passing it on to %d workers", len(self.workers))
        for worker in self.workers:
            worker.signal(signal.SIGHUP)

    @property
    def _stop_requested(self) -> bool:
        return bool(self._signals)

    # Start-up

    def _start_workers(self, port: int, http_port: int | None) -> None:
        config = self.config
        command = [sys.executable, "-m", "serve", *config.argv, "--workers", str(config.count),
                   "--port", str(port), "--metrics-port", "0", "--worker-of", str(os.getpid())]
        command += ["--http-port", str(http_port)] if http_port is not None else ["--no-http"]
        env = dict(os.environ, **{PROMETHEUS_MULTIPROC_DIR: str(self._multiprocess_dir)})
        # The workers run this very package, wherever the supervisor was imported from.
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        status_dir = self._multiprocess_dir / "workers"
        status_dir.mkdir()
        self.workers = [Worker(index, command, env, status_dir) for index in range(config.count)]
        for worker in self.workers:
            worker.start()

    def _wait_until_all_ready(self) -> bool:
        """True once every worker is ready; False when a signal came first. Raises on a failed start."""
        give_up = time.monotonic() + START_TIMEOUT_S
        while not all(worker.check_ready() for worker in self.workers):
            for worker in self.workers:
                if worker.process.poll() is not None:
                    raise ServerStartError(worker.start_error())
            if self._stop_requested:
                return False
            if time.monotonic() > give_up:
                raise ServerStartError(f"the workers were not all ready within {START_TIMEOUT_S:.0f} s")
            self._wake.wait(POLL_S)
        self.metrics.workers_ready(len(self.workers))
        return True

    def _write_port_file(self, port: int, http_port: int | None) -> None:
        if self.config.port_file is not None:
            write_port_file(self.config.port_file, [port] + ([http_port] if http_port is not None else []))

    # Serving

    def _supervise(self) -> None:
        while not self._stop_requested:
            now = time.monotonic()
            for worker in self.workers:
                code = worker.process.poll()
                if code is None:
                    worker.check_ready()
                    continue
                if worker.next_start_at == 0.0:
                    self._worker_died(worker, code, now)
                if now >= worker.next_start_at:
                    worker.next_start_at = 0.0
                    worker.start()
                    self.metrics.worker_restarted()
                    log.info("worker %d started again (pid %d)", worker.index, worker.pid)
            self.metrics.workers_ready(sum(worker.ready for worker in self.workers))
            self._wake.wait(POLL_S)

    def _worker_died(self, worker: Worker, code: int, now: float) -> None:
        self.metrics.worker_gone(worker.pid)
        if worker.ready:
            worker.failed_starts = 0
            log.error("worker %d (pid %d) died (%s): starting it again", worker.index, worker.pid, describe_exit(code))
            worker.next_start_at = now
        else:
            worker.failed_starts += 1
            wait_s = min(LONGEST_BACKOFF_S, RESTART_BACKOFF_S * 2 ** (worker.failed_starts - 1))
            log.error("worker %d (pid %d) could not start: %s; trying again in %.1f s",
                      worker.index, worker.pid, worker.start_error(), wait_s)
            worker.next_start_at = now + wait_s
        worker.ready = False

    # Shutdown

    def _drain(self) -> int:
        """Forward the signal to every worker, wait for them within the grace period; 0 when all drained."""
        signum = self._signals[0] if self._signals else signal.SIGTERM
        forwarded = 1
        log.info("%s: draining %d workers (up to %.1f s for calls in flight)",
                 signal.Signals(signum).name, len(self.workers), self.config.grace_s)
        serving = {worker.index for worker in self.workers if worker.ready}
        for worker in self.workers:
            worker.signal(signum)
        give_up = time.monotonic() + self.config.grace_s + EXIT_MARGIN_S
        while any(worker.process.poll() is None for worker in self.workers):
            if len(self._signals) > forwarded:  # a second signal: the workers cancel what is left
                forwarded = len(self._signals)
                for worker in self.workers:
                    worker.signal(signal.SIGTERM)
            if time.monotonic() > give_up:
                for worker in self.workers:
                    if worker.process.poll() is None:
                        log.error("worker %d (pid %d) did not exit within the grace period: killing it",
                                  worker.index, worker.pid)
                        worker.signal(signal.SIGKILL)
                        worker.process.wait()
                break
            self._wake.clear()
            self._wake.wait(POLL_S)
        failed = [worker for worker in self.workers
                  if worker.index in serving and worker.process.returncode != 0]
        for worker in failed:
            log.error("worker %d (pid %d) exited with %s", worker.index, worker.pid,
                      describe_exit(worker.process.returncode))
        log.info("server stopped (%d workers)", len(self.workers))
        return 1 if failed else 0

    def _stop_everything(self) -> None:
        """Leave nothing behind, whatever happened: no worker, no metrics thread, no folder, no port."""
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.signal(signal.SIGKILL)
                worker.process.wait()
        if self.metrics is not None:
            self.metrics.stop_http()
        for reserved in self._held:
            reserved.close()
        if self._multiprocess_dir is not None:
            shutil.rmtree(self._multiprocess_dir, ignore_errors=True)
