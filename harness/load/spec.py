"""What a load process is told to send (LoadSpec) and what it reports back (LoadResult).

One spec for every load: a target, calls in flight, how long, and the traffic itself, either the
same pre-serialised requests replayed as fast as they are answered (ReplayTraffic: the serve
benchmark's throughput runs) or a mix of kinds of call each judged against offline ONNX Runtime
(MixedTraffic: soak, faults and fail-over). Both are plain data: they cross into the load process
pickled, and the results come back the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MiB = 1024 * 1024
# ReplayTraffic.kind: unary gRPC calls, bidirectional streams, or unary calls over HTTP/1.1 (POST to a URL path).
UNARY, STREAM, HTTP = "unary", "stream", "http"
# ReplayTraffic.check, what an answer must look like: our Classify, our stream, KServe v2 ModelInfer
# (over gRPC, or over HTTP with binary outputs), or anything.
CHECK_CLASSIFY, CHECK_STREAM, CHECK_V2, CHECK_V2_HTTP, CHECK_NONE = "classify", "stream", "v2", "v2 http", "none"


@dataclass(frozen=True)
class ReplayTraffic:
    """The same serialised requests in turn, each answer parsed and checked; for throughput."""

    method: str  # "/package.Service/Method"; for HTTP, the URL path
    kind: str  # UNARY | STREAM | HTTP
    requests: tuple[bytes, ...]
    images_per_request: int
    check: str
    stream_window: int = 0  # messages in flight per stream
    connections: int = 1  # channels the calls are spread over, each its own connection
    # HTTP only: the headers of each request (in the order of `requests`).
    request_headers: tuple[tuple[tuple[str, str], ...], ...] = ()


@dataclass(frozen=True)
class MixedTraffic:
    """Calls of many kinds (valid, invalid, hostile, cancelled, ...), each judged by how it ended."""

    model_path: str  # the served .onnx, run offline for the expected answers
    data_dir: str  # where MNIST's test digits are
    mix: dict[str, float]  # kind name -> weight (harness.load.mixed.KINDS)
    seed: int = 0
    # What the server was started with (the invalid kinds just cross these limits).
    max_images_per_request: int = 64
    max_message_bytes: int = 1 * MiB
    # The run stops the server on purpose: UNAVAILABLE (refused) and CANCELLED (cut off by gRPC core as it
    # closes) are acceptable answers, and the run judges from the recorded calls which calls may have them.
    server_goes_away: bool = False
    # Client-side round_robin over a target of several addresses, with retries of UNAVAILABLE.
    round_robin: bool = False


@dataclass(frozen=True)
class LoadSpec:
    """One load process's share of a load: all processes of a run start at the same instant."""

    target: str  # host:port (for round_robin, "ipv4:host:port,host:port")
    traffic: ReplayTraffic | MixedTraffic
    concurrency: int  # calls in flight (for a replayed stream: streams)
    duration_s: float  # the measured window
    warmup_s: float = 0.0  # calls sent before the window, not counted
    # Longest a call may go unanswered (a mixed call past it counts as lost: the server hung).
    call_timeout_s: float = 30.0
    # Keep (kind, started, ended, status, outcome) of every call (short runs that judge calls by time).
    record_calls: bool = False
    worker: int = 0


@dataclass
class LoadResult:
    """What one load process saw inside its window. Times are wall-clock (time.time)."""

    worker: int = 0
    sent: int = 0
    answered: int = 0  # calls (stream messages) answered right
    images: int = 0  # images in those answers
    latencies_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of the calls answered right
    errors: dict[str, int] = field(default_factory=dict)  # status -> calls that failed with it
    first_error: str = ""
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> outcome -> calls
    codes: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> status -> calls
    failures: list[dict] = field(default_factory=list)  # the first few failed calls
    calls: list[tuple[str, float, float, str, str]] = field(default_factory=list)  # when record_calls
    cpu_s: float = 0.0  # the load process's CPU time inside the window
    started_at: float = 0.0
    ended_at: float = 0.0
    client_errors: int = 0  # exceptions in the load generator itself (a bug there, not in the server)
    setup_error: str = ""  # the load did not run: why

    @property
    def latency_ms(self) -> dict[str, float]:
        """p50, p99 and max of the right answers' latencies; empty without any."""
        if not len(self.latencies_s):
            return {}
        ms = np.asarray(self.latencies_s) * 1000
        return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}
