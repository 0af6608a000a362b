"""h2load (nghttp2's HTTP/2 load generator, in C) as the serve benchmark's load for unary gRPC calls.

A Python client spends about as much CPU per call as the Python server it drives, so on a small
machine it measures itself as much as the server; h2load's per-call cost is a small fraction of
either. It knows nothing of gRPC: it POSTs one pre-built body (the length-prefixed message of
gRPC's wire format) with gRPC's headers, and counts HTTP statuses, which are 200 whatever the
grpc-status trailer says. So an answer is checked by its bytes: an OK answer carries its message
in DATA frames, an error carries none (its status travels in trailers only); every answer to a
request must be as long as the answer the server gave to the same request sent by a real gRPC
client, and the run's DATA bytes must be that length times the answers.

Latencies come from h2load's per-request log (start, duration), counted like the Python load
generator's: calls that end inside the measurement window.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np

from .load.spec import LoadResult

# Connections for a given number of calls in flight: up to this many, the calls shared out among them.
MAX_CONNECTIONS = 16
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout")
_DATA_BYTES = re.compile(r"traffic: .*?, \S+ \((\d+)\) data")


def installed() -> bool:
    return shutil.which("h2load") is not None


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message as it travels: no compression flag, big-endian length, the message."""
    return b"\0" + struct.pack(">I", len(message)) + message


def connections_for(concurrency: int) -> tuple[int, int]:
    """(connections, streams in flight on each) that keep `concurrency` calls in flight."""
    connections = min(concurrency, MAX_CONNECTIONS)
    return connections, -(-concurrency // connections)


def answer_bytes(target: str, method: str, message: bytes) -> int:
    """The DATA bytes of an OK answer to `message`: one call by a real gRPC client, its status checked."""
    import grpc

    with grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024),
                                                 ("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        answer = channel.unary_unary(method)(message, timeout=60)
    return len(grpc_frame(answer))


class H2load:
    """One h2load run: `concurrency` calls of `method` in flight for `duration_s` seconds."""

    def __init__(self, target: str, method: str, message: bytes, concurrency: int, duration_s: float,
                 workdir: Path) -> None:
        workdir = Path(workdir)
        self.body_path, self.log_path = workdir / "h2load-body.bin", workdir / "h2load-requests.log"
        self.body_path.write_bytes(grpc_frame(message))
        self.log_path.unlink(missing_ok=True)  # h2load appends to its log
        connections, streams = connections_for(concurrency)
        self.command = [
            "h2load", "--clients", str(connections), "--max-concurrent-streams", str(streams),
            "--duration", f"{round(duration_s * 1000)}ms", "--threads", "1",
            "--header", "content-type: application/grpc", "--header", "te: trailers",
            "--data", str(self.body_path), "--log-file", str(self.log_path), f"http://{target}{method}",
        ]
        self.duration_s = duration_s
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        stdin=subprocess.DEVNULL)

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def result(self, ok_answer_bytes: int, images_per_request: int, window_epoch: tuple[float, float],
               cpu_s: float) -> LoadResult:
        """Wait for h2load to finish; the calls answered OK inside the window, and every error of the run."""
        try:
            output, _ = self.process.communicate(timeout=self.duration_s + 120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
            return LoadResult(setup_error=f"h2load did not finish: {output[-500:]}")
        requests, data = _REQUESTS.search(output), _DATA_BYTES.search(output)
        if self.process.returncode != 0 or requests is None or data is None:
            return LoadResult(setup_error=f"h2load failed ({self.process.returncode}): {output[-800:]}")
        _, _, done, succeeded, failed, errored, timeouts = (int(v) for v in requests.groups())
        errors = {"h2load failed": failed, "h2load errored": errored, "h2load timeout": timeouts}
        # Errors carry no DATA: the bytes an OK answer should have, and those that came, tell how many were OK.
        data_bytes = int(data.group(1))
        answered_ok = min(succeeded, data_bytes // ok_answer_bytes)
        wrong = succeeded - answered_ok + (1 if data_bytes != answered_ok * ok_answer_bytes else 0)
        errors["not OK or wrong size (answer bytes)"] = wrong
        errors = {name: count for name, count in errors.items() if count}
        log = np.loadtxt(self.log_path, dtype=np.int64, ndmin=2) if self.log_path.stat().st_size else np.zeros((0, 3))
        ends_s = (log[:, 0] + log[:, 2]) / 1e6 if len(log) else np.zeros(0)
        inside = (ends_s >= window_epoch[0]) & (ends_s <= window_epoch[1])
        latencies_s = log[inside, 2] / 1e6 if len(log) else np.zeros(0)
        # Which calls failed is not known, only how many: the window's calls count at the run's OK rate.
        calls = int(round(inside.sum() * answered_ok / done)) if done else 0
        first_error = ""
        if errors:
            first_error = (f"{', '.join(f'{n} {name}' for name, n in errors.items())} of {done} calls "
                           f"({data_bytes} DATA bytes for {succeeded} answers of {ok_answer_bytes} bytes)")
        return LoadResult(
            sent=calls + sum(errors.values()), answered=calls, images=calls * images_per_request,
            latencies_s=latencies_s.astype(np.float64), errors=errors, first_error=first_error, cpu_s=cpu_s,
            started_at=window_epoch[0], ended_at=window_epoch[1],
        )


def wait_until(epoch: float) -> None:
    time.sleep(max(0.0, epoch - time.time()))
