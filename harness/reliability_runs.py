"""What the service survives, run on real processes: the soak, SIGTERM under load, fail-over between
replicas, a worker killed, hostile payloads aimed at memory, and model files that cannot be served.

Every server is `python -m serve` on 127.0.0.1 (harness.processes), every load its own process
(harness.load, mixed traffic judged against offline ONNX Runtime). Each run returns a report whose
`passed` says whether the service behaved; bench/reliability.py runs them all and prints the report,
and the tests run each with small figures.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from contracts.data_dir import resolve_data_dir
from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.generated.inference import grpc_service_pb2 as v2_pb
from contracts.generated.inference import grpc_service_pb2_grpc as v2_grpc

from .hostile_images import (
    bmp_declaring,
    gif_declaring,
    jpeg_declaring,
    png_declaring,
    real_png_bomb,
    tiff_declaring,
    tiff_tile_bomb,
    webp_declaring,
)
from .load import LoadResult, LoadSpec, MixedTraffic, run_load
from .load.mixed import (
    AIO_WRITE_RACE,
    FAILURES,
    OUTCOMES,
    SOAK_MIX,
    VALID_MIX,
    References,
    raw_image,
)
from .processes import (
    REPO_ROOT,
    ProcessError,
    RssSampler,
    ServerProcess,
    cpu_seconds_of,
    free_port,
    health_status,
    read_peak_rss_bytes,
    read_rss_bytes,
    reset_peak_rss,
)

log = logging.getLogger("reliability")

MiB = 1024 * 1024
DEFAULT_MODEL = REPO_ROOT / "models" / "lenet.onnx"
# Limits of the servers under test: low, so that crossing them is cheap for the load generators.
SERVER_LIMIT_FLAGS = ("--max-message-mb", "1", "--max-images-per-request", "64")
MAX_MESSAGE_BYTES, MAX_IMAGES_PER_REQUEST = 1 * MiB, 64
# Memory allowed to grow between the first and the last minute of the soak (after warm-up):
# the larger of 20 MiB and 10% of the resident size. Why that much: glibc's malloc arenas, gRPC's
# per-thread caches and ONNX Runtime's memory arena each grow in steps of several MiB to the high
# water mark of the traffic mix (the largest batch shape seen), and they are returned to the system
# lazily, if at all. Why no more: over the soak's tens of thousands of requests a leak of a few
# hundred bytes per request would exceed it (the report prints the smallest leak it would catch).
RSS_ALLOWANCE_MIB, RSS_ALLOWANCE_FRACTION = 20.0, 0.10
# Hostile payloads aimed at memory may raise the server's peak RSS by no more than this: decoding
# one bomb would cost 144 MB and buffering one oversized message 64 MiB.
ATTACK_PEAK_ALLOWANCE_MIB = 24.0


@dataclass
class ReliabilityConfig:
    model_path: Path = DEFAULT_MODEL
    data_dir: Path = field(default_factory=resolve_data_dir)
    workdir: Path = Path("reliability-work")
    quick: bool = False
    soak_s: float = 120.0
    warmup_s: float = 20.0
    concurrency: int = 64
    load_processes: int = 2
    sigterm_load_s: float = 6.0
    failover_load_s: float = 10.0
    grace_s: float = 10.0
    seed: int = 0
    # Server processes of the runs that test `--workers` (the other runs serve from one process).
    workers: int = 2

    @classmethod
    def quick_mode(cls, **fields) -> "ReliabilityConfig":
        values = dict(quick=True, soak_s=10.0, warmup_s=3.0, sigterm_load_s=4.0, failover_load_s=6.0)
        values.update(fields)
        return cls(**values)

    @classmethod
    def with_soak(cls, quick: bool, soak_s: float | None = None, **fields) -> "ReliabilityConfig":
        """The full or quick config; a soak of `soak_s` seconds warms up for its first sixth, at most
        the default warm-up. ValueError when soak_s is not positive."""
        make = cls.quick_mode if quick else cls
        if soak_s is not None:
            if soak_s <= 0:
                raise ValueError(f"--soak-seconds must be positive, got {soak_s:g}")
            fields["soak_s"] = soak_s
            fields["warmup_s"] = min(make().warmup_s, soak_s / 6)
        return make(**fields)

    def __post_init__(self) -> None:
        if self.soak_s <= self.warmup_s:
            raise ValueError(f"the soak ({self.soak_s} s) must outlast its warm-up ({self.warmup_s} s)")
        if self.concurrency < self.load_processes or self.load_processes < 1:
            raise ValueError(f"need 1 <= load processes ({self.load_processes}) <= concurrency ({self.concurrency})")
        if self.workers < 2:
            raise ValueError(f"the worker runs need at least 2 workers, got {self.workers}")


# ------------------------------------------------------------------------------- load bookkeeping


@dataclass
class LoadTotals:
    """Every load process's calls, added up."""

    duration_s: float
    concurrency: int
    sent: int
    outcomes: dict[str, int]  # outcome -> calls
    by_kind: dict[str, dict[str, int]]  # kind -> outcome -> calls
    codes_by_kind: dict[str, dict[str, int]]
    failures: list[dict]
    latency_ms: dict[str, float]
    client_errors: int

    @property
    def accounted(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return sum(self.outcomes.get(name, 0) for name in FAILURES)

    @property
    def requests_per_s(self) -> float:
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0


def merge(results: list[LoadResult], concurrency: int) -> LoadTotals:
    outcomes: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    codes: dict[str, Counter] = {}
    for result in results:
        for kind, counts in result.outcomes.items():
            by_kind.setdefault(kind, Counter()).update(counts)
            outcomes.update(counts)
        for kind, counts in result.codes.items():
            codes.setdefault(kind, Counter()).update(counts)
    latency = {}
    for key in ("p50", "p99", "max"):
        values = [r.latency_ms[key] for r in results if r.latency_ms]
        if values:
            latency[key] = max(values)  # the slowest process's figure: conservative
    duration = max(r.ended_at for r in results) - min(r.started_at for r in results)
    return LoadTotals(
        duration_s=duration, concurrency=concurrency, sent=sum(r.sent for r in results),
        outcomes={name: outcomes.get(name, 0) for name in OUTCOMES},
        by_kind={kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        codes_by_kind={kind: dict(counts) for kind, counts in sorted(codes.items())},
        failures=[failure for r in results for failure in r.failures][:20],
        latency_ms=latency, client_errors=sum(r.client_errors for r in results),
    )


def load_specs(config: ReliabilityConfig, target: str, mix: dict, duration_s: float, *, server_goes_away: bool = False,
               round_robin: bool = False, **fields) -> list[LoadSpec]:
    """config.concurrency shared out over config.load_processes, each sending `mix` for duration_s."""
    per_process = [config.concurrency // config.load_processes] * config.load_processes
    per_process[0] += config.concurrency - sum(per_process)
    traffic = MixedTraffic(model_path=str(config.model_path), data_dir=str(config.data_dir), mix=mix, seed=config.seed,
                           max_images_per_request=MAX_IMAGES_PER_REQUEST, max_message_bytes=MAX_MESSAGE_BYTES,
                           server_goes_away=server_goes_away, round_robin=round_robin)
    return [LoadSpec(target=target, traffic=traffic, concurrency=concurrency, duration_s=duration_s, worker=worker, **fields)
            for worker, concurrency in enumerate(per_process)]


def correct_prediction(target: str, references: References) -> bool:
    """One raw digit through each API, each answer compared with offline ONNX Runtime."""
    with grpc.insecure_channel(target) as channel:
        digits = digits_pb2_grpc.DigitClassifierStub(channel)
        request = digits_pb2.ClassifyRequest(model=references.model_name, images=[raw_image(references.images[0])],
                                             top_k=references.classes)
        try:
            prediction = digits.Classify(request, timeout=10).predictions[0]
            tensor = v2_pb.ModelInferRequest.InferInputTensor(
                name=references.input_name, datatype="FP32", shape=list(references.pixels[:1].shape))
            response = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                v2_pb.ModelInferRequest(model_name=references.model_name, inputs=[tensor],
                                        raw_input_contents=[references.pixels[:1].tobytes()],
                                        outputs=[v2_pb.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")]),
                timeout=10)
        except grpc.RpcError:
            return False
    served = np.frombuffer(response.raw_output_contents[0], "<f4")
    expected = references.raw_probabilities[0]
    return references.prediction_agrees(prediction, expected) and references.agrees(served, expected)


def _tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


# ------------------------------------------------------------------------------- 1. soak


@dataclass
class RssReport:
    samples: list[tuple[float, float]]  # (seconds since the load started, MiB)
    warmup_s: float
    baseline_mib: float
    final_mib: float
    growth_mib: float
    allowance_mib: float
    slope_mib_per_min: float
    peak_mib: float

    @property
    def flat(self) -> bool:
        return self.growth_mib <= self.allowance_mib


def rss_report(samples: list[tuple[float, int]], load_started: float, load_ended: float, warmup_s: float) -> RssReport:
    """Growth from the first to the last tenth of the post-warm-up samples (medians, so that one
    sample taken mid-batch does not decide), and the fitted slope."""
    steady = [(t - load_started, rss / MiB) for t, rss in samples if load_started + warmup_s <= t <= load_ended]
    if len(steady) < 4:
        raise ProcessError(f"only {len(steady)} memory samples after warm-up: the soak is too short to judge")
    window = max(2, len(steady) // 10)
    baseline = statistics.median(mib for _, mib in steady[:window])
    final = statistics.median(mib for _, mib in steady[-window:])
    times = np.array([t for t, _ in steady])
    values = np.array([mib for _, mib in steady])
    slope = float(np.polyfit(times, values, 1)[0] * 60) if np.ptp(times) > 0 else 0.0
    return RssReport(
        samples=[(round(t - load_started, 2), round(rss / MiB, 2)) for t, rss in samples],
        warmup_s=warmup_s, baseline_mib=baseline, final_mib=final, growth_mib=final - baseline,
        allowance_mib=max(RSS_ALLOWANCE_MIB, RSS_ALLOWANCE_FRACTION * baseline), slope_mib_per_min=slope,
        peak_mib=max(mib for _, mib in steady),
    )


@dataclass
class MemoryAttack:
    """Hostile payloads aimed at memory, and the server's peak RSS around them."""

    codes: dict[str, dict[str, int]]  # payload -> status -> count
    rss_before_mib: float
    peak_rise_mib: float  # VmHWM (reset just before) minus RSS before
    allowance_mib: float = ATTACK_PEAK_ALLOWANCE_MIB
    peak_measured: str = "VmHWM"

    @property
    def refused_cheaply(self) -> bool:
        refused_right = all(set(codes) == {"RESOURCE_EXHAUSTED"} for codes in self.codes.values())
        return refused_right and self.peak_rise_mib <= self.allowance_mib


def memory_attack(server: ServerProcess, model_name: str, bombs: int = 12, oversized: int = 4,
                  oversized_mib: int = 64) -> MemoryAttack:
    """Real and header-only decompression bombs, and messages far over the size limit, at a live server."""
    payloads = {
        "PNG bomb, 12000x12000 real zeros (144 MB decoded)": real_png_bomb(12_000),
        "PNG header declaring 100000x100000": png_declaring(100_000, 100_000),
        "JPEG header declaring 65535x65535": jpeg_declaring(65_535, 65_535),
        "BMP header declaring 100000x100000": bmp_declaring(100_000, 100_000),
        "GIF header declaring 65535x65535": gif_declaring(65_535, 65_535),
        "GIF frame of 8000x8000 beyond a 1x1 screen, disposed to the background (64 MB filled on opening)":
            gif_declaring(8_000, 8_000, screen=(1, 1), dispose_to_background=True),
        "TIFF header declaring 100000x100000": tiff_declaring(100_000, 100_000),
        "TIFF 16x16 in one 8192x8192 tile of real zeros (64 MB decoded)": tiff_tile_bomb(8_192),
        "WebP canvas of 8000x8000, one real 1x1 frame (two 256 MB canvases)": webp_declaring(8_000, 8_000),
    }
    huge = v2_pb.ModelInferRequest(
        model_name=model_name, raw_input_contents=[bytes(oversized_mib * MiB)],
        inputs=[v2_pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1, 1, 1, oversized_mib * MiB // 4])])
    codes: dict[str, Counter] = {}
    # Leave time for the idle server's memory to settle, then measure from here.
    time.sleep(0.5)
    before = read_rss_bytes(server.pid)
    peak_measured = "VmHWM" if reset_peak_rss(server.pid) else "VmHWM since start (reset not allowed)"
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(server.target, options=options) as channel:
        digits = digits_pb2_grpc.DigitClassifierStub(channel)
        v2 = v2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(bombs):
            for name, data in payloads.items():
                try:
                    digits.Classify(digits_pb2.ClassifyRequest(model=model_name, images=[digits_pb2.Image(encoded=data)]),
                                    timeout=30)
                    code = "OK"
                except grpc.RpcError as error:
                    code = error.code().name
                codes.setdefault(name, Counter())[code] += 1
        name = f"{oversized_mib} MiB message (limit {MAX_MESSAGE_BYTES // MiB} MiB)"
        for _ in range(oversized):
            try:
                v2.ModelInfer(huge, timeout=30)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            codes.setdefault(name, Counter())[code] += 1
    peak = read_peak_rss_bytes(server.pid)
    return MemoryAttack(codes={k: dict(v) for k, v in codes.items()}, rss_before_mib=before / MiB,
                        peak_rise_mib=(peak - before) / MiB, peak_measured=peak_measured)


@dataclass
class SoakReport:
    load: LoadTotals
    rss: RssReport
    attack: MemoryAttack
    health_after: str
    correct_after: bool
    exit_code: int | None
    server_tracebacks: int

    @property
    def smallest_leak_caught(self) -> float:
        """Bytes per request that, leaked by every request of the soak, would exceed the allowance."""
        return self.rss.allowance_mib * MiB / max(1, self.load.sent)

    @property
    def passed(self) -> bool:
        load = self.load
        return (load.failed == 0 and load.client_errors == 0 and load.accounted == load.sent and self.rss.flat
                and self.attack.refused_cheaply and self.health_after == "SERVING" and self.correct_after
                and self.exit_code == 0 and self.server_tracebacks == 0)


def run_soak(config: ReliabilityConfig, references: References) -> SoakReport:
    log.info("soak: %d calls in flight from %d processes for %.0f s", config.concurrency, config.load_processes,
             config.soak_s)
    with ServerProcess([config.model_path], config.workdir, "soak-server", SERVER_LIMIT_FLAGS, config.grace_s) as server:
        sampler = RssSampler(server.pid, interval_s=0.5 if config.quick else 1.0)
        sampler.start()
        specs = load_specs(config, server.target, SOAK_MIX, config.soak_s)
        results = run_load(specs)
        samples = sampler.stop()
        load = merge(results, config.concurrency)
        started = min(r.started_at for r in results)
        ended = max(r.ended_at for r in results)
        rss = rss_report(samples, started, ended, config.warmup_s)
        attack = memory_attack(server, references.model_name)
        health = health_status(server.target)
        correct = correct_prediction(server.target, references)
        server.terminate()
        code = server.wait(config.grace_s + 10)
        tracebacks = _tracebacks(server.log_text())
    return SoakReport(load, rss, attack, health, correct, code, tracebacks)


# ------------------------------------------------------------------------------- 2. SIGTERM


# How a call sent after SIGTERM may end: answered during the lame duck, refused, or cut off by gRPC
# core as it closes (CANCELLED; a grpc.aio stream then shows its write-race INTERNAL instead).
AFTER_SIGNAL_STATUSES = {"OK", "UNAVAILABLE", "CANCELLED", AIO_WRITE_RACE}


@dataclass
class SigtermReport:
    """Calls by when they started: before the signal and still in flight at it, or after it."""

    load: LoadTotals
    grace_s: float
    signal_at: float
    exit_at: float
    exit_code: int | None
    exit_after_s: float | None
    in_flight: dict[str, int]  # status -> calls (in flight at the signal: must be answered)
    after_signal: dict[str, int]  # status -> calls started after it
    wrong_or_lost: int
    code_after_exit: str
    server_tracebacks: int

    @property
    def in_flight_answered(self) -> int:
        return self.in_flight.get("OK", 0)

    @property
    def closed_by_core(self) -> int:
        """Newcomers cancelled by gRPC core as it closed (they arrived in its last instant, were never
        processed, and their clients kept sending despite NOT_SERVING and UNAVAILABLE)."""
        return self.after_signal.get("CANCELLED", 0) + self.after_signal.get(AIO_WRITE_RACE, 0)

    @property
    def passed(self) -> bool:
        return (self.exit_code == 0 and self.exit_after_s is not None and self.exit_after_s <= self.grace_s
                and self.in_flight_answered > 0 and set(self.in_flight) <= {"OK", "UNAVAILABLE"}
                and set(self.after_signal) <= AFTER_SIGNAL_STATUSES and self.wrong_or_lost == 0
                and self.load.client_errors == 0 and self.code_after_exit == "UNAVAILABLE"
                and self.server_tracebacks == 0)


def run_sigterm(config: ReliabilityConfig, workers: int = 1) -> SigtermReport:
    log.info("SIGTERM: %d calls in flight to %d worker(s), signal after %.1f s", config.concurrency, workers,
             config.sigterm_load_s / 2)
    mix = dict(VALID_MIX, stream=1)
    with ServerProcess([config.model_path], config.workdir, f"sigterm-server-{workers}", SERVER_LIMIT_FLAGS,
                       config.grace_s, workers=workers) as server:
        moments = {}

        def signal_midway(start_at: float) -> None:
            time.sleep(max(0.0, start_at + config.sigterm_load_s / 2 - time.time()))
            moments["signal"] = server.terminate()
            code = server.wait(config.grace_s + 10)
            moments["exit"] = time.time()
            moments["code"] = code

        specs = load_specs(config, server.target, mix, config.sigterm_load_s, server_goes_away=True,
                           record_calls=True, call_timeout_s=config.grace_s + 5)
        results = run_load(specs, during=signal_midway)
        tracebacks = _tracebacks(server.log_text())
    signal_at, exit_at = moments["signal"], moments["exit"]
    calls = [call for result in results for call in result.calls]  # (kind, started, ended, code, outcome)
    in_flight = Counter(code for _, started, ended, code, _ in calls if started < signal_at < ended)
    after_signal = Counter(code for _, started, _, code, _ in calls if started >= signal_at)
    with grpc.insecure_channel(server.target) as channel:
        try:
            digits_pb2_grpc.DigitClassifierStub(channel).Classify(digits_pb2.ClassifyRequest(), timeout=5)
            code_after = "OK"
        except grpc.RpcError as error:
            code_after = error.code().name
    load = merge(results, config.concurrency)
    return SigtermReport(
        load=load, grace_s=config.grace_s, signal_at=signal_at, exit_at=exit_at, exit_code=moments["code"],
        exit_after_s=exit_at - signal_at if moments["code"] is not None else None,
        in_flight=dict(in_flight), after_signal=dict(after_signal),
        wrong_or_lost=load.outcomes["wrong"] + load.outcomes["lost"],
        code_after_exit=code_after, server_tracebacks=tracebacks,
    )


# ------------------------------------------------------------------------------- 3. fail-over


def answered_ok(metrics_port: int) -> int | None:
    """RPCs a server answered OK, from its Prometheus endpoint; None when it cannot be read."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    total = 0
    for family in text_string_to_metric_families(text):
        if family.name == "serve_requests":
            total += sum(int(s.value) for s in family.samples
                         if s.name == "serve_requests_total" and s.labels.get("code") == "OK")
    return total


@dataclass
class FailoverReport:
    signal: str  # what one replica got: SIGKILL (a crash) or SIGTERM (a rolling restart)
    load: LoadTotals
    signalled_after_s: float
    victim_exit_code: int | None
    survivor_health: str
    answered_by_victim_before: int | None
    answered_by_survivor: int | None
    failed_by_code: dict[str, int]
    failure_details: list[str]

    @property
    def passed(self) -> bool:
        clean_exit = self.signal == "SIGKILL" or self.victim_exit_code == 0
        return (self.load.failed == 0 and self.load.client_errors == 0 and self.survivor_health == "SERVING"
                and bool(self.answered_by_victim_before) and bool(self.answered_by_survivor) and clean_exit)


def run_failover(config: ReliabilityConfig, signal_name: str = "SIGKILL") -> FailoverReport:
    """Two replicas behind client-side round_robin (with retries and health checking); one gets
    `signal_name` half-way through the load."""
    log.info("fail-over: 2 replicas behind round_robin, one gets %s after %.1f s", signal_name,
             config.failover_load_s / 2)
    ports = [free_port(), free_port()]
    replicas = [
        ServerProcess([config.model_path], config.workdir, f"replica-{name}",
                      SERVER_LIMIT_FLAGS + ("--metrics-port", str(port)), config.grace_s)
        for name, port in zip("ab", ports)
    ]
    with contextlib.ExitStack() as running:
        for replica in replicas:
            running.enter_context(replica.launch())  # both start at once
        for replica in replicas:
            replica.wait_until_serving()
        victim, survivor = replicas
        target = f"ipv4:{victim.target},{survivor.target}"
        moments = {}

        def signal_midway(start_at: float) -> None:
            time.sleep(max(0.0, start_at + config.failover_load_s / 2 - time.time()))
            moments["before"] = answered_ok(ports[0])
            moments["signal"] = victim.kill() if signal_name == "SIGKILL" else victim.terminate()
            moments["since_start"] = moments["signal"] - start_at
            moments["exit_code"] = victim.wait(config.grace_s + 10)

        specs = load_specs(config, target, VALID_MIX, config.failover_load_s, round_robin=True)
        results = run_load(specs, during=signal_midway)
        survivor_health = health_status(survivor.target)
        survivor_answered = answered_ok(ports[1])
    load = merge(results, config.concurrency)
    failed = Counter()
    for codes in load.codes_by_kind.values():
        for code, count in codes.items():
            if code != "OK":
                failed[code] += count
    return FailoverReport(
        signal=signal_name, load=load, signalled_after_s=moments["since_start"],
        victim_exit_code=moments["exit_code"], survivor_health=survivor_health,
        answered_by_victim_before=moments["before"], answered_by_survivor=survivor_answered,
        failed_by_code=dict(failed), failure_details=[f"{f['code']}: {f['detail']}" for f in load.failures],
    )


# ------------------------------------------------------------------------------- 3b. a worker killed


@dataclass
class WorkerKillReport:
    workers: int
    load: LoadTotals
    signalled_after_s: float
    victim_cpu_s: float  # CPU the killed worker had spent on the load: it was serving
    restarts_counted: float  # serve_worker_restarts_total afterwards
    workers_ready_after: float  # serve_workers_ready once the replacement started
    health_after: str
    died_logged: bool
    restart_logged: bool
    exit_code: int | None
    failed_by_code: dict[str, int]
    failure_details: list[str]

    @property
    def passed(self) -> bool:
        return (self.load.failed == 0 and self.load.client_errors == 0 and self.victim_cpu_s > 0
                and self.restarts_counted == 1 and self.workers_ready_after == self.workers
                and self.health_after == "SERVING" and self.died_logged and self.restart_logged and self.exit_code == 0)


def run_worker_kill(config: ReliabilityConfig) -> WorkerKillReport:
    """One server of `config.workers` workers under load from clients with the retry policy; half-way
    through, the busiest worker gets SIGKILL. The supervisor must start it again and no call may fail."""
    log.info("worker SIGKILL: %d workers, the busiest killed after %.1f s", config.workers, config.failover_load_s / 2)
    with ServerProcess([config.model_path], config.workdir, "workers-server", SERVER_LIMIT_FLAGS, config.grace_s,
                       workers=config.workers, metrics=True) as server:
        moments = {}

        def kill_busiest_midway(start_at: float) -> None:
            time.sleep(max(0.0, start_at - time.time()))
            cpu_at_start = {pid: cpu_seconds_of(pid) for pid in server.worker_pids()}
            time.sleep(max(0.0, start_at + config.failover_load_s / 2 - time.time()))
            spent = {pid: cpu_seconds_of(pid) - cpu for pid, cpu in cpu_at_start.items()}
            victim = max(spent, key=spent.get)
            moments["victim_cpu_s"], moments["victim"] = spent[victim], victim
            moments["signal"] = time.time()
            os.kill(victim, signal.SIGKILL)
            moments["since_start"] = moments["signal"] - start_at

        specs = load_specs(config, server.target, VALID_MIX, config.failover_load_s, round_robin=True)
        results = run_load(specs, during=kill_busiest_midway)
        give_up = time.monotonic() + 60  # the replacement may still be loading its models
        while server.metric_total("serve_workers_ready") < config.workers and time.monotonic() < give_up:
            time.sleep(0.1)
        restarts, ready = server.metric_total("serve_worker_restarts_total"), server.metric_total("serve_workers_ready")
        health = health_status(server.target)
        exit_code = server.stop(config.grace_s + 10)
        log_text = server.log_text()
    load = merge(results, config.concurrency)
    failed = Counter()
    for codes in load.codes_by_kind.values():
        failed.update({code: count for code, count in codes.items() if code != "OK"})
    return WorkerKillReport(
        workers=config.workers, load=load, signalled_after_s=moments["since_start"],
        victim_cpu_s=moments["victim_cpu_s"], restarts_counted=restarts, workers_ready_after=ready,
        health_after=health, died_logged=f"(pid {moments['victim']}) died (signal SIGKILL)" in log_text,
        restart_logged="started again" in log_text, exit_code=exit_code, failed_by_code=dict(failed),
        failure_details=[f"{f['code']}: {f['detail']}" for f in load.failures],
    )


# ------------------------------------------------------------------------------- 4. start-up


@dataclass
class StartupCase:
    kind: str
    exit_code: int
    error_lines: list[str]
    traceback: bool
    seconds: float

    @property
    def passed(self) -> bool:
        return self.exit_code == 2 and len(self.error_lines) == 1 and not self.traceback


def bad_models_dir(workdir: Path) -> Path:
    return Path(workdir) / "bad-models"


def bad_model_files(model_path: Path, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(model_path).read_bytes()
    truncated = folder / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    not_onnx = folder / "not-onnx.onnx"
    not_onnx.write_text("these are not the weights you are looking for\n")
    return {"missing": folder / "missing.onnx", "truncated": truncated, "not ONNX": not_onnx}


def run_startup_failures(model_path: Path, workdir: Path, workers: int = 1) -> list[StartupCase]:
    cases = []
    for kind, path in bad_model_files(model_path, bad_models_dir(workdir)).items():
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "serve", "--model", str(path), "--host", "127.0.0.1", "--port", "0", "--http-port", "0",
             "--device", "cpu", "--workers", str(workers)],
            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
        )
        lines = [line for line in completed.stderr.splitlines()
                 if line.startswith("python -m serve: error:") and str(path) in line]
        cases.append(StartupCase(kind, completed.returncode, lines, "Traceback" in completed.stderr,
                                 time.monotonic() - started))
    return cases
