"""Real server processes for tests and benchmarks: `python -m serve` and its peers, and what to read off them.

A `ServerProcess` is a server as an operator runs it (its own process, a port picked by the kernel
and written to --port-file, its log in a file), with what tests and benchmarks read off it: its
ports, its Prometheus metrics, the CPU time and resident memory of the server's processes (with
--workers N, the supervisor and every worker), its worker processes, SIGTERM, SIGKILL and its exit
status. The benchmark's peers (the bare and the naive gRPC servers) run under the same class (the load
generators are harness.load's). Everything listens on and talks to 127.0.0.1 only, and every wait is
bounded.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
START_TIMEOUT_S = 120.0


class ProcessError(RuntimeError):
    """A server did not start or finish as it should; the message says what it logged."""


def _status_field(pid: int, name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def read_rss_bytes(pid: int) -> int | None:
    """Resident set size of a live process, from /proc (Linux); None once it has exited."""
    return _status_field(pid, "VmRSS")


def read_peak_rss_bytes(pid: int) -> int | None:
    """The highest resident set size since start or since reset_peak_rss (VmHWM): catches spikes
    between samples."""
    return _status_field(pid, "VmHWM")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, our own child process); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc/PID/task/*/children)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time of every thread of a live process; 0 once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def serve_command(model_paths, port_file: Path, *, workers: int = 1, device: str = "cpu", grace_s: float = 10.0,
                  metrics_port: int | None = None, flags: tuple[str, ...] = ()) -> list[str]:
    """`python -m serve` on 127.0.0.1, both ports picked by the kernel, announced in port_file."""
    command = [sys.executable, "-m", "serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "0",
               "--port-file", str(port_file), "--device", device, "--grace-seconds", str(grace_s),
               "--workers", str(workers)]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    for path in model_paths:
        command += ["--model", str(path)]
    return command + list(flags)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`python -m serve` on 127.0.0.1 and a free port; a context manager that never leaves it running.

    One worker unless `workers` says otherwise. `metrics` gives it a Prometheus port (metrics_port).
    `ServerProcess.program` runs another server that takes --port-file (the benchmark's peers).
    """

    def __init__(self, model_paths, workdir: Path, name: str = "server", flags: tuple[str, ...] = (),
                 grace_s: float = 10.0, *, workers: int = 1, device: str = "cpu", metrics: bool = False) -> None:
        self.workdir = Path(workdir)
        self.name = name
        self.grace_s = grace_s
        self.workers = workers
        self.port_file = self.workdir / f"{name}.port"
        self.log_path = self.workdir / f"{name}.log"
        self.metrics_port = free_port() if metrics else None
        self.command = serve_command(model_paths, self.port_file, workers=workers, device=device, grace_s=grace_s,
                                     metrics_port=self.metrics_port, flags=flags)
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.http_port: int | None = None

    @classmethod
    def program(cls, module_and_args: list[str], workdir: Path, name: str) -> "ServerProcess":
        """Another server program, `python -m MODULE ARGS --port-file PATH`, without metrics."""
        server = cls((), workdir, name)
        server.command = [sys.executable, "-m", *module_and_args, "--port-file", str(server.port_file)]
        return server

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_target(self) -> str | None:
        """host:port of the HTTP front door (None for a server without one)."""
        return f"127.0.0.1:{self.http_port}" if self.http_port is not None else None

    def launch(self) -> "ServerProcess":
        """Start the process without waiting for it to serve (several can start at once)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port_file.unlink(missing_ok=True)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        return self

    def wait_until_serving(self, timeout: float = START_TIMEOUT_S) -> "ServerProcess":
        """Wait for --port-file, which the server writes once it accepts calls (every worker, with workers)."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if self.port_file.exists() and self.port_file.read_text().strip():
                ports = [int(port) for port in self.port_file.read_text().split()]
                self.port = ports[0]
                self.http_port = ports[1] if len(ports) > 1 else None
                return self
            if self.process.poll() is not None:
                raise ProcessError(f"{self.name} exited with {self.process.returncode} while starting:\n{_tail(self.log_path)}")
            time.sleep(0.05)
        self.kill()
        raise ProcessError(f"{self.name} did not start within {timeout:.0f} s:\n{_tail(self.log_path)}")

    def start(self, timeout: float = START_TIMEOUT_S) -> "ServerProcess":
        return self.launch().wait_until_serving(timeout)

    # The server's processes

    def worker_pids(self) -> list[int]:
        """With --workers N, the workers alive now; otherwise the server itself."""
        return child_pids(self.pid) if self.workers > 1 else [self.pid]

    def pids(self) -> list[int]:
        """Every process of the server: the supervisor and its workers, or the server alone."""
        return [self.pid, *child_pids(self.pid)] if self.workers > 1 else [self.pid]

    def cpu_seconds(self) -> float:
        """CPU time so far of every process of the server (a worker that died takes its share along)."""
        return sum(cpu_seconds_of(pid) for pid in self.pids())

    def memory_mib(self) -> dict[str, float]:
        """Resident memory now (VmRSS) and at its peak (VmHWM) summed over the server's processes, MiB."""
        pids = self.pids()
        rss = [read_rss_bytes(pid) or 0 for pid in pids]
        peak = [read_peak_rss_bytes(pid) or 0 for pid in pids]
        return {"rss_mib": sum(rss) / MiB, "peak_rss_mib": sum(peak) / MiB}

    def metrics_text(self) -> str:
        if self.metrics_port is None:
            raise ProcessError(f"{self.name} was started without a metrics port")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as answer:
            return answer.read().decode()

    def metric_total(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples (every label set matching `labels`) from the Prometheus endpoint."""
        return self.metric_totals((name,), **labels)[name]

    def metric_totals(self, names, **labels: str) -> dict[str, float]:
        """metric_total of several metrics, from one scrape (so that they describe the same moment)."""
        text = self.metrics_text()
        totals = {}
        for name in names:
            totals[name] = 0.0
            for match in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", text, re.MULTILINE):
                found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
                if all(found.get(key) == value for key, value in labels.items()):
                    totals[name] += float(match.group(2))
        return totals

    # Signals and exit

    def terminate(self) -> float:
        """Send SIGTERM; returns the wall-clock time it was sent."""
        sent_at = time.time()
        self.process.send_signal(signal.SIGTERM)
        return sent_at

    def kill(self) -> float:
        sent_at = time.time()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return sent_at

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None when it is still running after `timeout` seconds."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, and its exit status (SIGKILL when it does not exit within `timeout`)."""
        if self.process.poll() is None:
            self.terminate()
            if self.wait(timeout) is None:
                self.kill()
                self.process.wait()
        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def output(self, characters: int = 4000) -> str:
        return self.log_text()[-characters:]

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            workers = child_pids(self.pid) if self.workers > 1 else []
            if workers:
                # A supervisor stopped at once still removes its metrics folder; a killed one cannot.
                self.terminate()
                self.wait(2.0)
            self.kill()
            self.process.wait(10)
            for pid in workers:  # they would drain on their own once the supervisor is gone: do not wait
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def health_status(target: str, service: str = "", timeout: float = 5.0) -> str:
    """The grpc.health.v1 status name (SERVING, NOT_SERVING, ...), or the RPC's error code name."""
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                 timeout=timeout)
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


class RssSampler(threading.Thread):
    """Samples a process's resident memory every `interval_s` until stopped (or the process exits)."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        super().__init__(name=f"rss-{pid}", daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []  # (wall-clock time, bytes)
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            rss = read_rss_bytes(self.pid)
            if rss is None:
                return
            self.samples.append((time.time(), rss))
            self._stopping.wait(self.interval_s)

    def stop(self) -> list[tuple[float, int]]:
        self._stopping.set()
        self.join(5)
        return self.samples
