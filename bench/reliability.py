"""What the service survives: load, faults and hostile input, measured on real processes.

    python -m bench.reliability            # full: a >= 2 minute soak (about 4 minutes in all)
    python -m bench.reliability --quick    # the same scenarios in about a minute (a 10 s soak)

Scenarios (every server is `python -m serve` on 127.0.0.1, every load generator its own process):

1. Soak: mixed traffic at high concurrency (valid PNG and raw images through both APIs, streams,
   invalid requests of every documented kind, random hostile input, calls cancelled in flight,
   deadlines that expire, streams closed early). Every valid answer is compared with offline ONNX
   Runtime; every call must end with an answer or its kind's expected status. The server's
   resident memory is sampled throughout and must stay flat after warm-up. Then hostile payloads
   aimed at memory (decompression bombs, oversized messages) must not raise the server's peak RSS.
   Afterwards the server must report SERVING, answer correctly and exit 0 on SIGTERM.
2. SIGTERM under load: calls in flight are answered, later ones refused with UNAVAILABLE, exit 0
   within the grace period.
3. Two replicas behind gRPC's client-side round_robin with a retry policy (and client-side health
   checking); one is SIGKILLed under load: how many calls fail, and why. Then the same with SIGTERM
   (a rolling restart).
4. Start-up with a missing, truncated or non-ONNX model file: exit 2 and one clear line.
5. The same with `--workers 2`: SIGTERM under load drains every worker and exits 0; SIGKILL of the
   busiest worker under load (clients with the retry policy) is answered by a restart that the
   metrics and the log show, and no call fails; a model file that cannot load stops start-up with
   the same one line.

Prints a summary table and writes bench/results/reliability.json. Exits 1 when a check fails.
The model is --model PATH (a classifier exported by `python -m export`); by default
models/lenet.onnx, exported with random weights into the work folder when it does not exist
(only the service's machinery is under test, and random weights exercise it as trained ones do).
"""
from __future__ import annotations

import argparse
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench._machine import describe_machine, finish_machine_record, machine_summary
from harness.processes import (
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
    run_load_processes,
)
from harness.load.mixed import (
    AIO_WRITE_RACE,
    FAILURES,
    KINDS,
    OUTCOMES,
    SOAK_MIX,
    VALID_MIX,
    LoadResult,
    LoadSpec,
    References,
    raw_image,
)
from bench._report import RESULTS_DIR, format_table, result_document, write_json
from harness.hostile_images import (
    bmp_declaring,
    gif_declaring,
    jpeg_declaring,
    png_declaring,
    real_png_bomb,
    tiff_declaring,
    tiff_tile_bomb,
    webp_declaring,
)
from contracts.data_dir import DATA_DIR_ENV, DATA_DIR_HELP, resolve_data_dir
from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.generated.inference import grpc_service_pb2 as v2_pb
from contracts.generated.inference import grpc_service_pb2_grpc as v2_grpc
from contracts.mnist_idx import mnist_raw_dir

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
    workdir: Path = RESULTS_DIR / "reliability-work"
    output_path: Path = RESULTS_DIR / "reliability.json"
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


def load_specs(config: ReliabilityConfig, target: str, mix: dict, duration_s: float, **fields) -> list[LoadSpec]:
    per_process = [config.concurrency // config.load_processes] * config.load_processes
    per_process[0] += config.concurrency - sum(per_process)
    return [
        LoadSpec(target=target, model_path=str(config.model_path), data_dir=str(config.data_dir), result_path="",
                 mix=mix, concurrency=concurrency, duration_s=duration_s, seed=config.seed, worker=worker,
                 max_images_per_request=MAX_IMAGES_PER_REQUEST, max_message_bytes=MAX_MESSAGE_BYTES, **fields)
        for worker, concurrency in enumerate(per_process)
    ]


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
        results = run_load_processes(specs, config.workdir)
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
                           record_calls=True, safety_timeout_s=config.grace_s + 5)
        results = run_load_processes(specs, config.workdir, during=signal_midway)
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
        results = run_load_processes(specs, config.workdir, during=signal_midway)
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
        results = run_load_processes(specs, config.workdir, during=kill_busiest_midway)
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


# ------------------------------------------------------------------------------- the report


@dataclass
class ReliabilityReport:
    config: dict
    model: str
    soak: SoakReport | None = None
    sigterm: SigtermReport | None = None
    failover: FailoverReport | None = None
    rolling_restart: FailoverReport | None = None
    sigterm_workers: SigtermReport | None = None
    worker_kill: WorkerKillReport | None = None
    startup: list[StartupCase] = field(default_factory=list)
    startup_workers: list[StartupCase] = field(default_factory=list)
    bad_models_dir: Path = Path()

    @property
    def lost(self) -> int:
        return sum(part.load.outcomes["lost"] for part in self.load_parts().values())

    @property
    def passed(self) -> bool:
        return (all(part.passed for part in self.load_parts().values())
                and all(case.passed for case in self.startup + self.startup_workers))

    def load_parts(self) -> dict:
        """The scenarios that ran load, by name."""
        parts = {"soak": self.soak, "sigterm": self.sigterm, "failover": self.failover,
                 "rolling_restart": self.rolling_restart, "sigterm_workers": self.sigterm_workers,
                 "worker_kill": self.worker_kill}
        return {name: part for name, part in parts.items() if part is not None}

    def to_json(self) -> dict:
        def with_properties(part) -> dict:
            data = asdict(part)
            data["passed"] = part.passed
            return data

        data = {"config": self.config, "model": self.model, "passed": self.passed, "requests_lost": self.lost}
        for name in ("soak", "sigterm", "failover", "rolling_restart", "sigterm_workers", "worker_kill"):
            part = getattr(self, name)
            data[name] = with_properties(part) if part else None
        if self.soak:
            data["soak"]["rss"]["flat"] = self.soak.rss.flat
            data["soak"]["attack"]["refused_cheaply"] = self.soak.attack.refused_cheaply
            data["soak"]["load"]["requests_per_s"] = self.soak.load.requests_per_s
            data["soak"]["smallest_leak_caught_bytes_per_request"] = self.soak.smallest_leak_caught
        data["startup"] = [with_properties(case) for case in self.startup]
        data["startup_workers"] = [with_properties(case) for case in self.startup_workers]
        return data


def _ok(flag: bool) -> str:
    return "ok" if flag else "FAILED"


def _load_row(name: str, load: LoadTotals) -> list:
    outcomes = load.outcomes
    return [name, load.sent, load.concurrency, load.duration_s, load.requests_per_s,
            *(outcomes[outcome] for outcome in OUTCOMES)]


def fault_rows(report: ReliabilityReport) -> list[list]:
    """(fault, injected, survived, what happened) for the summary table."""
    rows = []
    if report.soak:
        for name, kind in KINDS.items():
            if kind.group != "fault":
                continue
            counts = report.soak.load.by_kind.get(name, {})
            failed = sum(counts.get(f, 0) for f in FAILURES)
            ended = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
            rows.append([f"{kind.description} (soak)", sum(counts.values()), _ok(failed == 0), ended])
        rss = report.soak.rss
        rows.append(["server memory over the soak", f"{rss.growth_mib:+.1f} MiB", _ok(rss.flat),
                     f"RSS {rss.baseline_mib:.1f} -> {rss.final_mib:.1f} MiB after {rss.warmup_s:.0f} s warm-up "
                     f"(allowed +{rss.allowance_mib:.1f}: a leak of {report.soak.smallest_leak_caught:.0f} bytes per "
                     f"request would exceed it), slope {rss.slope_mib_per_min:+.2f} MiB/min"])
        attack = report.soak.attack
        sent = sum(sum(codes.values()) for codes in attack.codes.values())
        rows.append(["decompression bombs, 64 MiB messages", sent, _ok(attack.refused_cheaply),
                     f"all RESOURCE_EXHAUSTED: {_ok(all(set(c) == {'RESOURCE_EXHAUSTED'} for c in attack.codes.values()))}; "
                     f"peak RSS {attack.peak_rise_mib:+.1f} MiB (allowed +{attack.allowance_mib:.0f})"])
        rows.append(["after the soak", 1, _ok(report.soak.passed),
                     f"health {report.soak.health_after}, correct prediction {_ok(report.soak.correct_after)}, "
                     f"SIGTERM exit {report.soak.exit_code}, {report.soak.server_tracebacks} tracebacks in the log"])
    for s, what in ((report.sigterm, "SIGTERM under load"),
                    (report.sigterm_workers, f"SIGTERM under load, {report.config.get('workers')} workers")):
        if s is None:
            continue
        in_flight = sum(s.in_flight.values())
        rows.append([what, 1, _ok(s.passed),
                     f"{in_flight} calls in flight at the signal: {s.in_flight_answered} answered, "
                     f"{s.in_flight.get('UNAVAILABLE', 0)} refused UNAVAILABLE; exit {s.exit_code} after "
                     f"{s.exit_after_s or 0:.2f} s (grace {s.grace_s:.0f} s); calls sent after the signal: "
                     + ", ".join(f"{code} {n}" for code, n in sorted(s.after_signal.items()))
                     + f" (CANCELLED: sent as gRPC core closed, never processed); once it is gone a call gets "
                     f"{s.code_after_exit}"])
    for f, what in ((report.failover, "SIGKILL of 1 of 2 round_robin replicas"),
                    (report.rolling_restart, "SIGTERM of 1 of 2 round_robin replicas")):
        if f is None:
            continue
        exit_text = "" if f.signal == "SIGKILL" else f", it exited {f.victim_exit_code}"
        rows.append([what, 1, _ok(f.passed),
                     f"{sum(f.failed_by_code.values())} of {f.load.sent} calls failed {f.failed_by_code or ''}; "
                     f"{f.signal} after {f.signalled_after_s:.1f} s having answered {f.answered_by_victim_before}"
                     f"{exit_text}; the survivor answered {f.answered_by_survivor}, health {f.survivor_health}"])
    if report.worker_kill:
        k = report.worker_kill
        rows.append([f"SIGKILL of the busiest of {k.workers} workers", 1, _ok(k.passed),
                     f"{sum(k.failed_by_code.values())} of {k.load.sent} calls failed {k.failed_by_code or ''} "
                     f"(clients retry UNAVAILABLE); killed after {k.signalled_after_s:.1f} s having spent "
                     f"{k.victim_cpu_s:.2f} s CPU on the load; restarts counted {k.restarts_counted:g}, workers ready "
                     f"{k.workers_ready_after:g}, health {k.health_after}, logged: died {_ok(k.died_logged)}, "
                     f"started again {_ok(k.restart_logged)}; SIGTERM exit {k.exit_code}"])
    startup_cases = [(case, "") for case in report.startup]
    startup_cases += [(case, f", {report.config.get('workers')} workers") for case in report.startup_workers]
    for case, workers in startup_cases:
        message = case.error_lines[0].split("error: ", 1)[-1] if case.error_lines else "(no error line)"
        message = message.replace(str(report.bad_models_dir) + os.sep, "")
        rows.append([f"start-up with a model file {case.kind}{workers}", 1, _ok(case.passed),
                     f"exit {case.exit_code}{', TRACEBACK' if case.traceback else ''} in {case.seconds:.1f} s: "
                     f"{message[:150]}"])
    return rows


def bad_input_rows(soak: SoakReport) -> list[list]:
    rows = []
    for name, kind in KINDS.items():
        if kind.group not in ("invalid", "fuzz"):
            continue
        counts = soak.load.by_kind.get(name, {})
        codes = soak.load.codes_by_kind.get(name, {})
        failed = sum(counts.get(f, 0) for f in FAILURES)
        statuses = ", ".join(f"{code} {n}" for code, n in sorted(codes.items()))
        rows.append([name, statuses, sum(counts.values()), counts.get("rejected", 0), counts.get("answered", 0), failed])
    for name, codes in soak.attack.codes.items():
        rows.append([name, ", ".join(f"{code} {n}" for code, n in codes.items()), sum(codes.values()),
                     codes.get("RESOURCE_EXHAUSTED", 0), codes.get("OK", 0),
                     sum(n for code, n in codes.items() if code != "RESOURCE_EXHAUSTED")])
    return rows


def summary(report: ReliabilityReport, machine: dict) -> str:
    lines = [machine_summary(machine), f"model: {report.model}; every server and load generator is its own process", ""]
    titles = {"soak": "soak", "sigterm": "SIGTERM under load", "failover": "round_robin, SIGKILL 1 of 2",
              "rolling_restart": "round_robin, SIGTERM 1 of 2", "sigterm_workers": "SIGTERM under load, workers",
              "worker_kill": "SIGKILL of a worker"}
    loads = [(titles[name], part.load) for name, part in report.load_parts().items()]
    lines += ["Load held", format_table(["run", "calls", "concurrency", "seconds", "calls/s", *OUTCOMES],
                                        [_load_row(name, load) for name, load in loads]), ""]
    if report.soak and report.soak.load.latency_ms:
        latency = report.soak.load.latency_ms
        lines += [f"soak latency of valid calls: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms, "
                  f"max {latency['max']:.1f} ms", ""]
    faults = fault_rows(report)
    table = format_table(["fault", "injected", "survived"], [row[:3] for row in faults]).splitlines()
    lines += ["Faults injected", *table[:2]]
    for row_line, row in zip(table[2:], faults):
        lines += [row_line, f"    {row[3]}"]
    lines.append("")
    if report.soak:
        lines += ["Bad inputs tried, by kind (soak traffic, then memory attacks on the idle server)",
                  format_table(["kind", "statuses", "calls", "rejected", "answered", "failed"],
                               bad_input_rows(report.soak), right_from=2), ""]
    lines += [f"Requests lost: {report.lost}", f"Overall: {_ok(report.passed)}"]
    return "\n".join(lines)


def result_rows(report: ReliabilityReport) -> list[dict]:
    """One row per check, for bench/results/reliability.json (the details follow under "details")."""
    rows = []
    for name, part in report.load_parts().items():
        if part:
            load = part.load
            rows.append({"check": name, "passed": part.passed, "calls": load.sent, "concurrency": load.concurrency,
                         "duration_s": load.duration_s, "calls_per_s": load.requests_per_s, **load.outcomes})
    for case in report.startup:
        rows.append({"check": f"startup: {case.kind}", "passed": case.passed, "exit_code": case.exit_code})
    for case in report.startup_workers:
        rows.append({"check": f"startup, workers: {case.kind}", "passed": case.passed, "exit_code": case.exit_code})
    return rows


def ensure_model(config: ReliabilityConfig) -> Path:
    """The model to serve: --model, or a random-weights LeNet exported once into the work folder."""
    if config.model_path.exists() or config.model_path != DEFAULT_MODEL:
        return config.model_path
    exported = config.workdir / "lenet.onnx"
    if not exported.exists():
        log.info("%s does not exist: exporting a random-weights LeNet to %s", DEFAULT_MODEL, exported)
        config.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "export", "lenet", "--random-weights", "--cpu-only", "-q",
                        "--data-dir", str(config.data_dir), "-o", str(exported)], check=True, cwd=REPO_ROOT,
                       timeout=600)
    return exported


def run(config: ReliabilityConfig) -> ReliabilityReport:
    config.workdir.mkdir(parents=True, exist_ok=True)
    config.model_path = ensure_model(config)
    references = References(config.model_path, config.data_dir)
    report = ReliabilityReport(config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                               model=f"{references.model_name} from {config.model_path.name}")
    report.bad_models_dir = bad_models_dir(config.workdir)
    report.startup = run_startup_failures(config.model_path, config.workdir)
    report.sigterm = run_sigterm(config)
    report.failover = run_failover(config, "SIGKILL")
    report.rolling_restart = run_failover(config, "SIGTERM")
    report.startup_workers = run_startup_failures(config.model_path, config.workdir, config.workers)
    report.sigterm_workers = run_sigterm(config, config.workers)
    report.worker_kill = run_worker_kill(config)
    report.soak = run_soak(config, references)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a 10 s soak) instead of the full report")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="classifier .onnx exported by `python -m export` (default: models/lenet.onnx, or a "
                             "random-weights LeNet exported into the work folder when it does not exist)")
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    parser.add_argument("--soak-seconds", type=float, default=None,
                        help="soak length (default: 120, 10 with --quick); the first sixth, at most 20 s, is warm-up")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="calls in flight during the soak and the faults (default: 64)")
    parser.add_argument("--load-processes", type=int, default=2,
                        help="load-generator processes sharing the concurrency (default: 2)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "reliability.json",
                        help="JSON report (default: bench/results/reliability.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the traffic mix (default: 0)")
    parser.add_argument("--workers", type=int, default=2, help="server processes of the --workers runs (default: 2)")
    return parser


def config_from_args(args: argparse.Namespace) -> ReliabilityConfig:
    """The config the flags describe; ValueError when they are wrong."""
    if args.model != DEFAULT_MODEL and not args.model.is_file():
        raise ValueError(f"model file not found: {args.model}")
    fields = dict(model_path=args.model, data_dir=resolve_data_dir(args.data_dir), output_path=args.output,
                  concurrency=args.concurrency, load_processes=args.load_processes, seed=args.seed,
                  workers=args.workers)
    make = ReliabilityConfig.quick_mode if args.quick else ReliabilityConfig
    if args.soak_seconds is not None:
        if args.soak_seconds <= 0:
            raise ValueError(f"--soak-seconds must be positive, got {args.soak_seconds:g}")
        fields["soak_s"] = args.soak_seconds
        fields["warmup_s"] = min(make().warmup_s, args.soak_seconds / 6)
    return make(**fields)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if not mnist_raw_dir(config.data_dir).is_dir():
        parser.error(f"MNIST not found under {mnist_raw_dir(config.data_dir)}: pass --data-dir or set {DATA_DIR_ENV}")
    machine = describe_machine()
    try:
        report = run(config)
    except (ProcessError, ValueError) as exc:  # a process that failed; a model that is no classifier
        print(f"reliability: error: {exc}", file=sys.stderr)
        return 2
    finish_machine_record(machine)
    document = result_document("reliability", machine, report.config, result_rows(report),
                               [f"requests lost: {report.lost}", f"passed: {report.passed}"])
    document["details"] = report.to_json()
    write_json(config.output_path, document)
    print(summary(report, machine))
    print(f"\nwritten: {config.output_path}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
