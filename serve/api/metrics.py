"""Prometheus metrics of the server, on their own HTTP port (--metrics-port; 0 turns them off).

    serve_requests_total{protocol, service, method, code}   calls answered (gRPC and HTTP), by gRPC status
                                                            code name (HTTP statuses mapped to the same names)
    serve_request_duration_seconds{protocol, service, method}  time from handler start to answer
    serve_batch_size{model}                            images per ONNX Runtime call
    serve_batch_requests{model}                        requests per ONNX Runtime call
    serve_inference_duration_seconds{model}            time of one ONNX Runtime call
    serve_queue_images{model}                          images waiting for inference
    serve_dropped_requests_total{model, reason}        requests not inferred: cancelled, deadline, queue_full
    serve_queue_duration_seconds{model}                a request's wait in its model's queue
    serve_model_load_failures_total{model, version}    versions that failed to load or warm up (the old stays)

Triton's names, labelled by model and version, read at each scrape from the statistics that the
statistics extension reports (serve.core.statistics), so existing Triton dashboards and
autoscaling rules work unchanged:

    nv_inference_request_success, nv_inference_request_failure   requests, by outcome
    nv_inference_count, nv_inference_exec_count                  batch items inferred, executions
    nv_inference_request_duration_us                             cumulative request time
    nv_inference_queue_duration_us                               cumulative queue time
    nv_inference_compute_input_duration_us, nv_inference_compute_infer_duration_us,
    nv_inference_compute_output_duration_us                      cumulative compute times

and, with --workers N, from the supervisor (serve/workers.py):

    serve_worker_restarts_total                        workers that died and were started again
    serve_workers_ready                                workers answering calls now

Each server owns its registry (tests run several servers in one process). Label children are
cached: the hot path is a dict lookup and an atomic add.

With --workers N every worker writes its figures to files in the folder PROMETHEUS_MULTIPROC_DIR
names (prometheus_client's multiprocess mode, chosen when prometheus_client is imported) and the
supervisor serves their sums: a scrape sees the whole server, whichever worker would have answered
it, and counts of a worker that died stay in the totals.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable, Iterable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from serve.core.statistics import VersionStatistics

log = logging.getLogger(__name__)

# Set (by the supervisor, for its workers) to the folder of prometheus_client's multiprocess files.
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker copies Triton's statistics into its multiprocess files.
TRITON_MIRROR_INTERVAL_S = 1.0

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_INFERENCE_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._requests = Counter(
            "serve_requests", "Calls answered, by protocol, method and (gRPC) status code",
            ["protocol", "service", "method", "code"], registry=self.registry,
        )
        self._latency = Histogram(
            "serve_request_duration_seconds", "Time from the start of a call's handler to its answer",
            ["protocol", "service", "method"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self._batch_size = Histogram(
            "serve_batch_size", "Images per ONNX Runtime call", ["model"], buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self._batch_requests = Histogram(
            "serve_batch_requests", "Requests coalesced into one ONNX Runtime call", ["model"],
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self._inference = Histogram(
            "serve_inference_duration_seconds", "Duration of one ONNX Runtime call", ["model"],
            buckets=_INFERENCE_BUCKETS, registry=self.registry,
        )
        # livesum: with several workers, the images queued in the workers alive now (ignored in one process).
        self._queue = Gauge("serve_queue_images", "Images waiting for inference", ["model"], registry=self.registry,
                            multiprocess_mode="livesum")
        self._dropped = Counter(
            "serve_dropped_requests", "Requests dropped before inference", ["model", "reason"], registry=self.registry
        )
        self._queue_wait = Histogram(
            "serve_queue_duration_seconds", "A request's wait in its model's queue before its batch ran", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self._load_failures = Counter(
            "serve_model_load_failures", "Model versions that failed to load or warm up (the serving version stays)",
            ["model", "version"], registry=self.registry,
        )
        self._children: dict[tuple, object] = {}
        self._exposition = Exposition(self.registry)
        self._triton_mirror: TritonMirror | None = None

    def _child(self, metric, *labels):
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # Calls, on either protocol
    def request_done(self, service: str, method: str, code: str, seconds: float, protocol: str = "grpc") -> None:
        self._child(self._requests, protocol, service, method, code).inc()
        self._child(self._latency, protocol, service, method).observe(seconds)

    # serve.core.batching.BatchObserver
    def batch_done(self, model: str, images: int, requests: int, seconds: float) -> None:
        self._child(self._batch_size, model).observe(images)
        self._child(self._batch_requests, model).observe(requests)
        self._child(self._inference, model).observe(seconds)

    def execution_timed(
        self, model: str, images: int, queue_seconds: Sequence[float], input_s: float, infer_s: float, output_s: float,
    ) -> None:
        wait = self._child(self._queue_wait, model)
        for seconds in queue_seconds:
            wait.observe(seconds)

    def load_failed(self, model: str, version: str) -> None:
        self._child(self._load_failures, model, version).inc()

    def watch_statistics(self, statistics: Callable[[], Iterable[VersionStatistics]]) -> None:
        """Expose the served versions' statistics under Triton's metric names (read at each scrape).

        A worker of several is never scraped itself: there they are copied into prometheus_client's
        multiprocess files instead, every second, for the supervisor to sum (TritonMirror).
        """
        if os.environ.get(PROMETHEUS_MULTIPROC_DIR):
            self._triton_mirror = TritonMirror(statistics, self.registry)
        else:
            self.registry.register(TritonMetrics(statistics))

    def queue_depth(self, model: str, images: int) -> None:
        self._child(self._queue, model).set(images)

    def dropped(self, model: str, reason: str, requests: int) -> None:
        self._child(self._dropped, model, reason).inc(requests)

    # Exposition
    def serve_http(self, host: str, port: int) -> int:
        """Expose /metrics on host:port (0 picks a free port); returns the bound port."""
        return self._exposition.start(host, port)

    def stop_http(self) -> None:
        self._exposition.stop()
        if self._triton_mirror is not None:
            self._triton_mirror.stop()  # with a last copy: what this worker counted stays in the totals


class SupervisorMetrics:
    """The metrics endpoint of a server of several workers: their figures summed, and the supervisor's own."""

    def __init__(self, multiprocess_dir: Path) -> None:
        self.multiprocess_dir = Path(multiprocess_dir)
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=str(self.multiprocess_dir))
        self._restarts = Counter("serve_worker_restarts", "Workers that died and were started again",
                                 registry=self.registry)
        self._ready = Gauge("serve_workers_ready", "Workers answering calls now", registry=self.registry)
        self._exposition = Exposition(self.registry)

    def worker_restarted(self) -> None:
        self._restarts.inc()

    def workers_ready(self, count: int) -> None:
        self._ready.set(count)

    def worker_gone(self, pid: int) -> None:
        """Drop a dead worker's live gauges (its counters stay in the totals)."""
        multiprocess.mark_process_dead(pid, str(self.multiprocess_dir))

    def serve_http(self, host: str, port: int) -> int:
        return self._exposition.start(host, port)

    def stop_http(self) -> None:
        self._exposition.stop()


class Exposition:
    """A registry on its own HTTP port, on prometheus_client's server thread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._http = None
        self._http_thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0 picks a free port); returns the bound port."""
        self._http, self._http_thread = start_http_server(port, addr=host, registry=self.registry)
        bound = self._http.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host if ":" not in host else f"[{host}]", bound)
        return bound

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


# Triton's metric name -> (help, what it counts in VersionStatistics, scale to its unit).
_TRITON_COUNTERS: list[tuple[str, str, Callable[[VersionStatistics], float]]] = [
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     lambda s: s.success.count),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", lambda s: s.fail.count),
    ("nv_inference_count", "Number of inferences performed (batch items)", lambda s: s.inference_count),
    ("nv_inference_exec_count", "Number of model executions performed", lambda s: s.execution_count),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds",
     lambda s: (s.success.ns + s.fail.ns) // 1000),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds",
     lambda s: s.queue.ns // 1000),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds",
     lambda s: s.compute_input.ns // 1000),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds",
     lambda s: s.compute_infer.ns // 1000),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds",
     lambda s: s.compute_output.ns // 1000),
]


class TritonMetrics(Collector):
    """Triton's counters, under its exact names.

    Exposed untyped: prometheus_client names every counter's samples and TYPE line with a `_total`
    suffix, which Triton's names lack (and PromQL's rate() needs no type).
    """

    def __init__(self, statistics: Callable[[], Iterable[VersionStatistics]]) -> None:
        self._statistics = statistics

    def collect(self):
        served = list(self._statistics())
        for name, documentation, value in _TRITON_COUNTERS:
            family = Metric(name, documentation, "untyped")
            for stats in served:
                family.add_sample(name, {"model": stats.name, "version": stats.version}, float(value(stats)))
            yield family


class TritonMirror:
    """Triton's counters of one worker, copied every second into gauges the supervisor sums.

    Gauges in "sum" mode: the supervisor adds up every worker's files, those of workers that died
    included, so the totals keep what a dead worker had counted (up to its last copy) and its
    replacement counts on from zero.
    """

    def __init__(self, statistics: Callable[[], Iterable[VersionStatistics]], registry: CollectorRegistry) -> None:
        self._statistics = statistics
        self._gauges = [
            (Gauge(name, documentation, ["model", "version"], registry=registry, multiprocess_mode="sum"), value)
            for name, documentation, value in _TRITON_COUNTERS
        ]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="triton-metrics", daemon=True)
        self._thread.start()

    def copy(self) -> None:
        for stats in self._statistics():
            for gauge, value in self._gauges:
                gauge.labels(stats.name, stats.version).set(float(value(stats)))

    def _run(self) -> None:
        while not self._stopping.wait(TRITON_MIRROR_INTERVAL_S):
            try:
                self.copy()
            except Exception:  # a statistics snapshot taken mid-reload: the next second's copy will do
                log.debug("copying Triton's statistics failed", exc_info=True)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.copy()
