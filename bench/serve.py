"""The service under load: `python -m serve` in its own process, driven by separate client processes.

    python -m bench.serve                      # every scenario, 3 rounds (about seven minutes)
    python -m bench.serve --quick              # one of each kind, one short round (seconds: CI)
    python -m bench.serve --model-file models/lenet.onnx --seconds 10 --rounds 5

Scenarios: single-image unary Classify at concurrency 1, 8 and 64 with dynamic batching on, and
the same against a second server started with --no-batching; 256-image Classify requests; the
bidirectional stream; KServe v2 ModelInfer with raw tensors (1 and 256 images), and the same
256-image requests over HTTP/REST with Triton's binary tensor data extension (binary outputs too),
right after their gRPC twin in every round; PNG-encoded images (decoding and the MNIST-format
preprocessing included); the v2 single-image load against servers of each --scaling-workers count
(the load held fixed); a naive server (bench/_naive_server.py: grpc's thread-pool server, one ONNX
Runtime run per call) under the same v2 loads; and a bare gRPC server that answers canned bytes (the
transport's ceiling on this machine, measured in the same run).

Unary gRPC calls are driven by h2load when it is installed (harness/h2load.py; `apt-get install
nghttp2-client`), else by Python grpc.aio clients (harness/load/replay.py), which also drive the stream and
the HTTP row. Either way a scenario's gRPC calls are spread over up to 16 connections, so that the
kernel hands them to every worker of a server of several.

Per scenario: images/s, latency p50/p95/p99 of each call (of each message for the stream),
errors, the average batch the server formed, server and client CPU per request, and the ratio to
in-process ONNX Runtime throughput at the same batch size (the same file run in this process, see
InProcessReferences). The server's resident memory is read before and after.

The machines this runs on are shared, and their speed drifts by 2x within minutes. So the three
servers (batching on, batching off, bare) run side by side, idle but for the scenario at hand, and
every scenario runs once per round, in turn: a comparison between scenarios (batching on against
off, the service against the bare transport) is made within each round, and the table shows each
scenario's median round and each target's median over the rounds. Writes
bench/results/serve.json, prints a table and the service targets, met or missed. Exit status: 0
when it ran (a missed target is reported, not failed), 2 when it cannot run.
"""
from __future__ import annotations

import argparse
import io
import logging
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench._machine import (
    describe_machine,
    finish_machine_record,
    machine_summary,
    usable_cores,
)
from bench._report import (
    RESULTS_DIR,
    Latency,
    fmt,
    format_table,
    parse_config,
    ratio,
    result_document,
    run_and_report,
)
from contracts.data_dir import DATA_DIR_HELP, resolve_data_dir
from contracts.digit_format import DIGIT_SIZE, pixels_from_uint8
from harness import h2load, serve_targets
from harness.load import (
    CHECK_CLASSIFY,
    CHECK_STREAM,
    CHECK_V2,
    CHECK_V2_HTTP,
    HTTP,
    STREAM,
    UNARY,
    LoadError,
    LoadGenerators,
    LoadResult,
    LoadSpec,
    ReplayTraffic,
)
from harness.load.replay import INFER_HEADER_LENGTH
from harness.processes import ServerProcess
from harness.serve_targets import median_rows, targets_over_rounds

log = logging.getLogger("bench.serve")

REPO_ROOT = Path(__file__).resolve().parent.parent
CLASSIFY = "/digits.v1.DigitClassifier/Classify"
CLASSIFY_STREAM = "/digits.v1.DigitClassifier/ClassifyStream"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
V2_HTTP_INFER = "/v2/models/{model}/infer"
DIGITS_API, V2_API, BARE, NAIVE = "digits", "v2", "bare grpc", "naive grpc"
RAW, PNG, TENSOR = "raw 28x28", "png", "raw fp32 tensor"
# Distinct requests each client cycles through (so that no answer can be cached by accident).
DISTINCT_REQUESTS = 64
DISTINCT_BULK_REQUESTS = 8
SERVER_START_TIMEOUT_S = 120
# Time the clients get to receive their scenario and connect before the warm-up starts.
CLIENT_START_S = 0.2
BATCHING_ON_SERVER, BATCHING_OFF_SERVER = "the server (batching on)", "the server (batching off)"
BARE_SERVER, NAIVE_SERVER = "the bare gRPC server", "the naive gRPC server"
H2LOAD, PYTHON_LOAD = "h2load", "python"
SINGLE_V2 = "v2 raw tensor 1 image, c64"


class BenchError(RuntimeError):
    """The benchmark cannot run; the message says what to do."""


@dataclass(frozen=True)
class Scenario:
    id: str  # stable: rows and targets are found by it (harness.serve_targets)
    name: str  # the display text
    api: str  # DIGITS_API | V2_API | BARE
    kind: str  # UNARY | STREAM | HTTP
    encoding: str  # RAW | PNG | TENSOR
    images_per_request: int
    concurrency: int  # calls in flight; for the stream: streams x window
    batching: bool = True
    streams: int = 0
    workers: int | None = None  # a server of this many workers; None: the default one

    @property
    def peer_api(self) -> str:
        """The API the requests are built for (the peers answer requests of our APIs)."""
        return {BARE: DIGITS_API, NAIVE: V2_API}.get(self.api, self.api)

    @property
    def stream_window(self) -> int:
        return self.concurrency // self.streams if self.streams else 0


def scenarios(quick: bool, scaling_workers: tuple[int, ...] = ()) -> list[Scenario]:
    """Every scenario, in the order they run; quick mode keeps one of each kind (and every target's)."""

    def single(concurrency: int, batching: bool = True) -> Scenario:
        name = f"unary 1 image, c{concurrency}, batching {'on' if batching else 'off'}"
        scenario_id = serve_targets.single_id(concurrency, batching)
        return Scenario(scenario_id, name, DIGITS_API, UNARY, RAW, 1, concurrency, batching)

    ids = serve_targets
    chosen = [single(c) for c in ((1, 64) if quick else (1, 8, 64))]
    chosen += [
        Scenario(ids.BATCH256, "unary 256 images, c2", DIGITS_API, UNARY, RAW, 256, 2),
        Scenario(ids.STREAM_C64, "stream 1 image/msg, 4 streams x 16", DIGITS_API, STREAM, RAW, 1, 64, streams=4),
    ]
    chosen += [
        Scenario(ids.V2_SINGLE_C64, SINGLE_V2, V2_API, UNARY, TENSOR, 1, 64),
        Scenario(ids.V2_BATCH256, "v2 raw tensor 256 images, c2", V2_API, UNARY, TENSOR, 256, 2),
        Scenario(ids.V2_HTTP_BATCH256, "v2 http binary tensor 256 images, c2", V2_API, HTTP, TENSOR, 256, 2),
        Scenario(ids.PNG, "png 1 image, c64", DIGITS_API, UNARY, PNG, 1, 64),
    ]
    chosen += [Scenario(ids.scaling_id(n), f"{SINGLE_V2}, --workers {n}", V2_API, UNARY, TENSOR, 1, 64, workers=n)
               for n in scaling_workers]
    chosen += [
        Scenario(ids.NAIVE_V2_SINGLE_C64, f"naive: {SINGLE_V2}", NAIVE, UNARY, TENSOR, 1, 64),
        Scenario(ids.NAIVE_V2_BATCH256, "naive: v2 raw tensor 256 images, c2", NAIVE, UNARY, TENSOR, 256, 2),
    ]
    if not quick:
        chosen.append(Scenario(ids.PNG_BATCH32, "png 32 images, c4", DIGITS_API, UNARY, PNG, 32, 4))
    chosen += [single(c, batching=False) for c in ((64,) if quick else (1, 8, 64))]
    chosen.append(Scenario(ids.BARE_C64, "bare grpc, canned answer, c64", BARE, UNARY, RAW, 1, 64))
    if not quick:
        chosen.append(Scenario(ids.BARE_BATCH256, "bare grpc, 256-image canned answer, c2", BARE, UNARY, RAW, 256, 2))
    return chosen


@dataclass(frozen=True)
class ServeBenchConfig:
    model: str = "lenet"
    model_file: Path | None = None  # an exported .onnx; default: export `model` (checkpoint or random)
    seconds: float = 5.0  # measurement window per scenario
    warmup_seconds: float = 1.0
    load_processes: int = field(default_factory=lambda: max(1, min(4, usable_cores() // 2)))
    device: str = "auto"
    server_flags: tuple[str, ...] = ()  # extra `python -m serve` flags (e.g. --max-delay-ms 1)
    # Workers of the servers under test (None: the server's default, one per core), and the worker
    # counts of the scaling scenarios.
    workers: int | None = None
    scaling_workers: tuple[int, ...] = (1, 2)
    load_generator: str = "auto"  # h2load | python | auto (h2load when installed) for unary calls
    baseline_seconds: float = 0.5  # each in-process reference measurement (per session configuration)
    rounds: int = 3  # every scenario once per round, the rounds one after the other
    runs_dir: Path = Path("runs")
    data_dir: Path | None = None
    output: Path = RESULTS_DIR / "serve.json"
    quick: bool = False

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.warmup_seconds < 0 or self.baseline_seconds <= 0:
            raise ValueError("--seconds and --baseline-seconds must be > 0, --warmup >= 0")
        if self.load_processes < 1:
            raise ValueError(f"--load-processes must be >= 1, got {self.load_processes}")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {self.rounds}")
        if (self.workers is not None and self.workers < 1) or any(n < 1 for n in self.scaling_workers):
            raise ValueError("worker counts must be >= 1")
        if self.load_generator not in ("auto", H2LOAD, PYTHON_LOAD):
            raise ValueError(f"--load-generator must be auto, h2load or python, got {self.load_generator!r}")
        if self.load_generator == H2LOAD and not h2load.installed():
            raise ValueError("--load-generator h2load, but h2load is not installed (apt-get install nghttp2-client)")

    @property
    def server_workers(self) -> int:
        from serve.workers import default_workers

        return self.workers if self.workers is not None else default_workers()

    @property
    def unary_load(self) -> str:
        if self.load_generator == "auto":
            return H2LOAD if h2load.installed() else PYTHON_LOAD
        return self.load_generator

    @classmethod
    def quick_mode(cls, **overrides) -> "ServeBenchConfig":
        values = dict(seconds=0.6, warmup_seconds=0.2, baseline_seconds=0.1, rounds=1, quick=True)
        values.update(overrides)
        return cls(**values)


# Requests


def mnist_digits(data_dir: Path | None) -> np.ndarray:
    from contracts.mnist_idx import load_mnist_test

    root = resolve_data_dir(data_dir)
    try:
        images, _ = load_mnist_test(root)
    except (OSError, ValueError) as exc:
        raise BenchError(f"the serve benchmark sends MNIST test digits: {exc} (set --data-dir or ZOO_DATA_DIR)") from None
    return images


def png_bytes(digit_uint8: np.ndarray) -> bytes:
    """A digit as a client's picture would be: dark ink on white paper, scaled up 3x, PNG."""
    from PIL import Image

    picture = Image.fromarray(255 - digit_uint8).resize((84, 84), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def digits_request(images: np.ndarray, encoding: str, model: str) -> bytes:
    from contracts.generated.digits.v1 import digits_pb2

    if encoding == PNG:
        messages = [digits_pb2.Image(encoded=png_bytes(image)) for image in images]
    else:
        messages = [
            digits_pb2.Image(raw=digits_pb2.RawPixels(
                pixels=image.tobytes(), height=DIGIT_SIZE, width=DIGIT_SIZE, already_mnist=True))
            for image in images
        ]
    return digits_pb2.ClassifyRequest(model=model, images=messages).SerializeToString()


def stream_request(image: np.ndarray, model: str, index: int) -> bytes:
    from contracts.generated.digits.v1 import digits_pb2

    raw = digits_pb2.RawPixels(pixels=image.tobytes(), height=DIGIT_SIZE, width=DIGIT_SIZE, already_mnist=True)
    return digits_pb2.ClassifyStreamRequest(id=str(index), model=model, image=digits_pb2.Image(raw=raw)).SerializeToString()


def v2_http_request(pixels: np.ndarray, model: str) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """The v2 REST body tritonclient.http sends for these pixels (binary input, every output binary)."""
    import json

    header = json.dumps({
        "inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": pixels.nbytes}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    body = header + np.ascontiguousarray(pixels, "<f4").tobytes()
    return body, ((INFER_HEADER_LENGTH, str(len(header))), ("Content-Type", "application/octet-stream"))


def v2_request(pixels: np.ndarray, model: str) -> bytes:
    from contracts.generated.inference import grpc_service_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=list(pixels.shape))
    return pb.ModelInferRequest(
        model_name=model, inputs=[tensor], raw_input_contents=[np.ascontiguousarray(pixels, "<f4").tobytes()]
    ).SerializeToString()


@dataclass
class Payloads:
    """Serialised requests per scenario shape: (api, kind, encoding, images) -> list of bytes."""

    model: str = ""
    by_shape: dict[tuple, tuple[bytes, ...]] = field(default_factory=dict)
    # HTTP requests' headers, by the same keys.
    headers_by_shape: dict[tuple, tuple[tuple[tuple[str, str], ...], ...]] = field(default_factory=dict)

    def get(self, scenario: Scenario) -> tuple[bytes, ...]:
        return self.by_shape[(scenario.peer_api, scenario.kind, scenario.encoding, scenario.images_per_request)]

    def headers(self, scenario: Scenario) -> tuple[tuple[tuple[str, str], ...], ...]:
        return self.headers_by_shape.get((scenario.api, scenario.kind, scenario.encoding, scenario.images_per_request), ())


def build_payloads(chosen: list[Scenario], digits: np.ndarray, model: str, input_size: tuple[int, int]) -> Payloads:
    payloads = Payloads(model=model)
    rng = np.random.default_rng(0)
    for scenario in chosen:
        api = scenario.peer_api
        key = (api, scenario.kind, scenario.encoding, scenario.images_per_request)
        if key in payloads.by_shape:
            continue
        size = scenario.images_per_request
        count = DISTINCT_REQUESTS if size == 1 else DISTINCT_BULK_REQUESTS
        batches = [digits[rng.choice(len(digits), size, replace=False)] for _ in range(count)]
        if scenario.kind == STREAM:
            requests = [stream_request(batch[0], model, i) for i, batch in enumerate(batches)]
        elif scenario.kind == HTTP:
            bodies, headers = zip(*(v2_http_request(pixels_from_uint8(batch, input_size), model) for batch in batches))
            requests, payloads.headers_by_shape[key] = list(bodies), tuple(headers)
        elif api == V2_API:
            requests = [v2_request(pixels_from_uint8(batch, input_size), model) for batch in batches]
        else:
            requests = [digits_request(batch, scenario.encoding, model) for batch in batches]
        payloads.by_shape[key] = tuple(requests)
    return payloads


# In-process references


@dataclass
class Reference:
    what: str
    images_per_s: float
    # images/s of each session configuration, measured just before and just after the scenario.
    measured: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms_per_call: float | None = None  # of the configuration that is the reference (all its threads)


class InProcessReferences:
    """What the same .onnx file does in this process, without a server: the yardstick of each scenario.

    Per batch size (images per request), session.run on ready pixels in a loop; for PNG requests,
    decoding and preprocessing (the server's own functions, serve.core.digit_inputs) plus the run, in
    one thread. Measured just before and just after each scenario (the server idle), so that the
    reference sees the same machine as the scenario: on a shared machine, in-process throughput
    moves by 2-3x with the neighbours' load, and a reference from another moment would say more
    about the neighbours than about the server. Two session configurations are measured, ONNX
    Runtime's defaults and the server's (contracts.sessions: no spinning threads), and the faster one
    (the mean of its two measurements) is the reference.
    """

    def __init__(self, model_file: Path, input_size: tuple[int, int], chosen: list[Scenario], payloads: Payloads,
                 config: ServeBenchConfig) -> None:
        import onnxruntime as ort

        from contracts.sessions import (
            RuntimeOptions,
            create_session,
            requested_providers,
        )

        self._config = config
        self._sessions = {
            "onnxruntime defaults": ort.InferenceSession(str(model_file), providers=requested_providers(config.device)),
            "server's session options": create_session(model_file, RuntimeOptions(device=config.device), "benchmark").session,
        }
        self._steps: dict[tuple, tuple[str, object]] = {}
        largest = max(s.images_per_request for s in chosen)
        digits = np.random.default_rng(1).integers(0, 256, (largest, DIGIT_SIZE, DIGIT_SIZE), np.uint8)
        for scenario in chosen:
            key = reference_key(scenario)
            if scenario.api == BARE or key in self._steps:
                continue
            size = scenario.images_per_request
            if scenario.encoding == PNG:
                from contracts.generated.digits.v1 import digits_pb2
                from serve.api.grpc_digits import core_images

                request = digits_pb2.ClassifyRequest.FromString(payloads.get(scenario)[0])
                images = core_images(request.images)  # the data plane's images, as the servicer makes them
                self._steps[key] = (f"in-process decode + preprocess + ORT, batch {size}", (images, input_size))
            else:
                self._steps[key] = (f"in-process ORT, batch {size}", pixels_from_uint8(digits[:size], input_size))

    def _step(self, session, payload):
        if isinstance(payload, tuple):  # an encoded request: preprocess, then infer
            from serve.core.digit_inputs import RequestLimits, images_to_pixels

            images, input_size = payload
            pixels = images_to_pixels(images, input_size, RequestLimits())
        else:
            pixels = payload
        return session.run(None, {session.get_inputs()[0].name: pixels})

    def measure(self, scenario: Scenario) -> dict[str, tuple[float, float]]:
        """(images/s, CPU seconds per call) of each session configuration now (nothing for BARE)."""
        if scenario.api == BARE:
            return {}
        key = reference_key(scenario)
        _, payload = self._steps[key]
        rates = {}
        for label, session in self._sessions.items():
            for _ in range(3):  # warm-up: the other session ran last
                self._step(session, payload)
            calls, started, cpu_started = 0, time.perf_counter(), time.process_time()
            while calls < 5 or time.perf_counter() - started < self._config.baseline_seconds:
                self._step(session, payload)
                calls += 1
            rates[label] = (calls * key[1] / (time.perf_counter() - started), (time.process_time() - cpu_started) / calls)
        return rates

    def reference(self, scenario: Scenario, before: dict[str, float], after: dict[str, float]) -> Reference | None:
        if scenario.api == BARE:
            return None
        what, _ = self._steps[reference_key(scenario)]
        measured = {label: [before[label][0], after[label][0]] for label in before}
        best = max(measured, key=lambda label: sum(measured[label]))
        cpu_ms = 1000 * (before[best][1] + after[best][1]) / 2
        return Reference(what, sum(measured[best]) / 2, measured, cpu_ms)


def reference_key(scenario: Scenario) -> tuple[str, int]:
    return ("png" if scenario.encoding == PNG else "tensor", scenario.images_per_request)


# The servers


def batch_totals(server: ServerProcess) -> dict[str, float] | None:
    """Totals so far from the server's Prometheus endpoint: images inferred, ONNX Runtime calls and their seconds."""
    if server.metrics_port is None:
        return None
    return server.metric_totals(("serve_batch_size_sum", "serve_batch_size_count", "serve_inference_duration_seconds_sum"))


def server_label(scenario: Scenario, config: "ServeBenchConfig") -> str:
    if scenario.api == BARE:
        return BARE_SERVER
    if scenario.api == NAIVE:
        return NAIVE_SERVER
    if not scenario.batching:
        return BATCHING_OFF_SERVER
    if scenario.workers is None or scenario.workers == config.server_workers:
        return BATCHING_ON_SERVER
    return f"the server with --workers {scenario.workers}"


def start_servers(chosen: list[Scenario], model_file: Path, config: "ServeBenchConfig", workdir: Path) -> dict:
    """The servers the scenarios need, all started at once before the first round, keyed by server_label."""
    servers: dict[str, ServerProcess] = {}
    flags = ("--log-level", "WARNING", *config.server_flags)
    try:
        for scenario in chosen:
            label = server_label(scenario, config)
            if label in servers:
                continue
            name = re.sub(r"\W+", "-", label).strip("-")
            if label == BARE_SERVER:
                server = ServerProcess.program(["harness.bare_server"], workdir, name)
            elif label == NAIVE_SERVER:
                server = ServerProcess.program(["bench._naive_server", "--model", str(model_file), "--device",
                                                "cpu" if config.device == "cpu" else "auto"], workdir, name)
            else:
                server_flags = flags + (("--no-batching",) if label == BATCHING_OFF_SERVER else ())
                workers = scenario.workers if label.startswith("the server with") else config.server_workers
                server = ServerProcess([model_file], workdir, name, server_flags, workers=workers,
                                       device=config.device, metrics=True)
            log.info("starting %s: %s", label, " ".join(server.command[1:]))
            servers[label] = server.launch()
        for server in servers.values():
            server.wait_until_serving(SERVER_START_TIMEOUT_S)
    except BaseException:
        for server in servers.values():
            if server.process is not None:
                server.stop()
        raise
    return servers


# Running a scenario


def load_specs(
    scenario: Scenario, target: str, requests: tuple[bytes, ...], processes: int, config: ServeBenchConfig,
    model: str = "", request_headers: tuple = (),
) -> list[LoadSpec]:
    """The scenario's concurrency split over the load processes (streams, for the stream)."""
    units = scenario.streams if scenario.kind == STREAM else scenario.concurrency
    shares = [units // processes + (1 if i < units % processes else 0) for i in range(min(processes, units))]
    connections, _ = h2load.connections_for(units)
    method = load_method(scenario)
    check = CHECK_STREAM if scenario.kind == STREAM else CHECK_V2 if scenario.peer_api == V2_API else CHECK_CLASSIFY
    if scenario.kind == HTTP:
        method, check = V2_HTTP_INFER.format(model=model), CHECK_V2_HTTP
    return [
        LoadSpec(
            target=target, concurrency=share, duration_s=config.seconds, warmup_s=config.warmup_seconds, worker=worker,
            traffic=ReplayTraffic(
                method=method, kind=scenario.kind, requests=requests, images_per_request=scenario.images_per_request,
                check=check, stream_window=scenario.stream_window, request_headers=request_headers,
                connections=max(1, round(connections * share / units)),
            ),
        )
        for worker, share in enumerate(shares)
    ]


def load_method(scenario: Scenario) -> str:
    if scenario.kind == STREAM:
        return CLASSIFY_STREAM
    return MODEL_INFER if scenario.peer_api == V2_API else CLASSIFY


def run_scenario(
    scenario: Scenario, server: ServerProcess, generators: LoadGenerators, payloads: Payloads, config: ServeBenchConfig,
    workdir: Path,
) -> dict:
    if scenario.kind == UNARY and config.unary_load == H2LOAD:
        return run_h2load_scenario(scenario, server, payloads, config, workdir)
    # The clients start at once, warm up, and all count the same window; the server is read at its edges.
    target = server.http_target if scenario.kind == HTTP else server.target
    specs = load_specs(scenario, target, payloads.get(scenario), generators.count, config, payloads.model,
                       payloads.headers(scenario))
    readings = {}

    def read_server_at_window_edges(start_at: float) -> None:
        measure_from = start_at + config.warmup_seconds
        h2load.wait_until(measure_from)
        readings["before"] = server.cpu_seconds(), batch_totals(server)
        h2load.wait_until(measure_from + config.seconds)
        readings["after"] = server.cpu_seconds(), batch_totals(server)

    try:
        results = generators.run(specs, during=read_server_at_window_edges)
    except LoadError as exc:
        raise BenchError(f"scenario {scenario.name!r}: {exc}") from None
    (cpu_before, batches_before), (cpu_after, batches_after) = readings["before"], readings["after"]
    row = scenario_row(scenario, results, cpu_after - cpu_before, batches_before, batches_after, config)
    row["load_generator"] = PYTHON_LOAD
    return row


def run_h2load_scenario(scenario: Scenario, server: ServerProcess, payloads: Payloads, config: ServeBenchConfig,
                        workdir: Path) -> dict:
    """The scenario's calls from h2load: the same window, CPU and metrics readings as the Python clients'."""
    message = payloads.get(scenario)[0]
    method = load_method(scenario)
    ok_answer_bytes = h2load.answer_bytes(server.target, method, message)
    measure_from = time.time() + CLIENT_START_S + config.warmup_seconds
    measure_to = measure_from + config.seconds
    load = h2load.H2load(server.target, method, message, scenario.concurrency,
                          CLIENT_START_S + config.warmup_seconds + config.seconds + 0.1, workdir)
    h2load.wait_until(measure_from)
    cpu_before, client_cpu_before, batches_before = server.cpu_seconds(), load.cpu_seconds(), batch_totals(server)
    h2load.wait_until(measure_to)
    cpu_after, client_cpu_after, batches_after = server.cpu_seconds(), load.cpu_seconds(), batch_totals(server)
    result = load.result(ok_answer_bytes, scenario.images_per_request, (measure_from, measure_to),
                         client_cpu_after - client_cpu_before)
    row = scenario_row(scenario, [result], cpu_after - cpu_before, batches_before, batches_after, config)
    row["load_generator"] = H2LOAD
    return row


def scenario_row(
    scenario: Scenario, results: list[LoadResult], server_cpu_s: float, batches_before, batches_after,
    config: ServeBenchConfig,
) -> dict:
    setup_errors = [r.setup_error for r in results if r.setup_error]
    if setup_errors:
        raise BenchError(f"scenario {scenario.name!r}: a load generator failed: {setup_errors[0]}")
    latencies = np.concatenate([r.latencies_s for r in results]) if results else np.zeros(0)
    latency = Latency.from_seconds(latencies)
    images = sum(r.images for r in results)
    calls = sum(r.answered for r in results)
    errors: dict[str, int] = {}
    for result in results:
        for code, count in result.errors.items():
            errors[code] = errors.get(code, 0) + count
    first_error = next((r.first_error for r in results if r.first_error), "")
    images_per_s = images / config.seconds
    average_batch = inference_ms = None
    if batches_before and batches_after:
        ort_calls = batches_after["serve_batch_size_count"] - batches_before["serve_batch_size_count"]
        if ort_calls > 0:
            average_batch = (batches_after["serve_batch_size_sum"] - batches_before["serve_batch_size_sum"]) / ort_calls
            inference_s = (
                batches_after["serve_inference_duration_seconds_sum"] - batches_before["serve_inference_duration_seconds_sum"]
            )
            inference_ms = 1000 * inference_s / ort_calls
    requests = calls + sum(errors.values())
    row = {
        "id": scenario.id,
        "scenario": scenario.name,
        "api": scenario.api,
        "kind": scenario.kind,
        "encoding": scenario.encoding,
        "batching": scenario.batching if scenario.api != BARE else None,
        "images_per_request": scenario.images_per_request,
        "concurrency": scenario.concurrency,
        "streams": scenario.streams or None,
        "images_per_s": images_per_s,
        "requests_per_s": calls / config.seconds,
        "latency_ms": latency.to_dict(),
        "errors": sum(errors.values()),
        "errors_by_code": errors,
        "first_error": first_error,
        "average_batch": average_batch,
        "inference_ms_per_batch": inference_ms,  # the server's ONNX Runtime call, as its metrics measure it
        "server_cpu_ms_per_request": 1000 * server_cpu_s / requests if requests else None,
        "client_cpu_ms_per_request": 1000 * sum(r.cpu_s for r in results) / requests if requests else None,
        "server_cpu_cores": server_cpu_s / config.seconds,
    }
    log.info(
        "%-40s %8.0f img/s  p50 %6.2f ms  p99 %6.2f ms  errors %d%s", scenario.name, images_per_s, latency.p50_ms,
        latency.p99_ms, row["errors"], f"  avg batch {average_batch:.1f}" if average_batch else "",
    )
    return row


def attach_reference(row: dict, reference: Reference | None) -> None:
    row["reference"] = reference.what if reference else None
    row["reference_images_per_s"] = reference.images_per_s if reference else None
    row["reference_rounds"] = reference.measured if reference else None
    row["reference_cpu_ms_per_request"] = reference.cpu_ms_per_call if reference else None
    row["vs_reference"] = ratio(row["images_per_s"], reference.images_per_s) if reference else None


# Whole run


def run_benchmark(config: ServeBenchConfig) -> dict:
    machine = describe_machine()
    chosen = scenarios(config.quick, config.scaling_workers)
    unary_load = (
        "h2load (C, one thread; a gRPC body sent as is, each answer's bytes checked against a real client's "
        "OK answer, harness/h2load.py)" if config.unary_load == H2LOAD else
        f"{config.load_processes} Python client process(es) (grpc.aio, pre-serialised requests, every answer "
        "parsed and checked)"
    )
    notes = [
        "images/s: images answered correctly inside the measurement window / its length; latency: per call "
        "(per message for the stream), measured by the client",
        "vs ref: images/s over the in-process reference at the same images per request: the same .onnx run "
        "in the benchmark's process just before and just after the scenario (the faster of ONNX Runtime's "
        "default session options and the server's)",
        f"load: unary gRPC calls from {unary_load}; the stream from {config.load_processes} Python client "
        "process(es) (grpc.aio), the HTTP row from as many (aiohttp over HTTP/1.1 with keep-alive); on the same "
        "machine as the servers, up to 16 connections per gRPC scenario",
        "v2 http: the 256-image v2 requests as tritonclient.http sends them (JSON header, binary input, every "
        "output binary), against the same server as the gRPC row before it",
        f"servers: `python -m serve --workers {config.server_workers}` with its defaults ({server_defaults()})"
        + (f" and {' '.join(config.server_flags)}" if config.server_flags else "")
        + "; the batching-off server adds --no-batching; the --workers N rows each have their own server; the "
        "naive server is bench/_naive_server.py (grpc.server, 16 threads, one ONNX Runtime run of 2 threads per call)",
        "cpu ms/req: CPU time of the server's processes (all threads, supervisor and workers) and of the client "
        "processes per request; "
        "ORT ms/batch: the server's own ONNX Runtime call (its Prometheus metrics), avg batch: images per call",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        workdir = Path(tmp)
        model_file, model_name, input_size, weights = _model_under_test(config, workdir)
        notes.append(f"model: {model_name} from {model_file} ({weights})")
        digits = mnist_digits(config.data_dir)
        payloads = build_payloads(chosen, digits, model_name, input_size)
        references = InProcessReferences(model_file, input_size, chosen, payloads, config)
        rounds: list[list[dict]] = []
        with LoadGenerators(config.load_processes) as generators:
            servers = start_servers(chosen, model_file, config, workdir)
            try:
                memory_before = {label: server.memory_mib() for label, server in servers.items()}
                for round_number in range(1, config.rounds + 1):
                    if config.rounds > 1:
                        log.info("round %d of %d", round_number, config.rounds)
                    round_rows = []
                    for scenario in chosen:
                        before = references.measure(scenario)
                        server = servers[server_label(scenario, config)]
                        row = run_scenario(scenario, server, generators, payloads, config, workdir)
                        attach_reference(row, references.reference(scenario, before, references.measure(scenario)))
                        row["round"] = round_number
                        round_rows.append(row)
                    rounds.append(round_rows)
                memory_after = {label: server.memory_mib() for label, server in servers.items()}
            finally:
                statuses = {label: server.stop() for label, server in servers.items()}
    for label, status in statuses.items():
        if status != 0:
            raise BenchError(f"{label} exited with status {status} on SIGTERM:\n{servers[label].output()}")
    finish_machine_record(machine)
    config_record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    document = result_document("serve", machine, config_record, median_rows(rounds), notes)
    document["rounds"] = rounds
    document["servers"] = [
        {"server": label, "memory_before": memory_before[label], "memory_after": memory_after[label],
         "exit_status": statuses[label]}
        for label in servers
    ]
    document["targets"] = targets_over_rounds(rounds, usable_cores(), config.server_workers)
    return document


def server_defaults() -> str:
    from serve.server import ServerConfig

    defaults = ServerConfig()
    return (f"{defaults.runtime.instances} instances, batches up to {defaults.batching.max_batch_size} images or "
            f"{defaults.batching.max_delay_ms:g} ms, inline below {defaults.batching.inline_max_ms:g} ms")


def _model_under_test(config: ServeBenchConfig, workdir: Path) -> tuple[Path, str, tuple[int, int], str]:
    """The .onnx to serve, its model name, input size, and where its weights came from."""
    if config.model_file is not None:
        import onnxruntime as ort

        from contracts.model_card import ModelCard, ModelCardError

        if not config.model_file.is_file():
            raise BenchError(f"model file not found: {config.model_file} (export one with `python -m export NAME`)")
        try:
            session = ort.InferenceSession(str(config.model_file), providers=["CPUExecutionProvider"])
            card = ModelCard.from_metadata_props(session.get_modelmeta().custom_metadata_map)
        except ModelCardError as exc:
            raise BenchError(f"{config.model_file}: {exc}") from None
        except Exception as exc:
            raise BenchError(f"{config.model_file} is not a loadable ONNX model: {exc}") from None
        if card is None or not card.is_classifier:
            raise BenchError(f"{config.model_file} is not a digit classifier exported by `python -m export`")
        return config.model_file, card.model_name, tuple(card.input_size), "weights as exported"
    from bench._models import FP32, BenchSetupError, prepare_model
    from export.errors import ExportError

    try:
        model = prepare_model(config.model, workdir / "models", config.runs_dir, config.data_dir, (FP32,))
    except (BenchSetupError, ExportError) as exc:
        raise BenchError(str(exc)) from None
    return model.files[FP32], model.name, model.input_size, f"{model.weights} weights: {model.weights_detail}"


# Output


def render(document: dict) -> str:
    headers = ["scenario", "img/s", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "avg batch", "ORT ms/batch",
               "server cpu ms/req", "client cpu ms/req", "ref img/s", "vs ref"]
    table_rows = []
    for row in document["rows"]:
        latency = row["latency_ms"]
        table_rows.append([
            row["scenario"], row["images_per_s"], row["requests_per_s"], latency["p50_ms"], latency["p95_ms"],
            latency["p99_ms"], row["errors"], row["average_batch"], row["inference_ms_per_batch"],
            row["server_cpu_ms_per_request"], row["client_cpu_ms_per_request"], row["reference_images_per_s"],
            f"{row['vs_reference']:.2f}x" if row["vs_reference"] is not None else "-",
        ])
    rounds = document["config"]["rounds"]
    parts = [machine_summary(document["machine"]), ""]
    if rounds > 1:
        parts.append(f"each scenario's median of {rounds} interleaved rounds (images/s of every round in the JSON)")
    parts.append(format_table(headers, table_rows))
    for server in document["servers"]:
        before, after = server["memory_before"], server["memory_after"]
        parts.append(
            f"{server['server']}: RSS {fmt(before['rss_mib'], 1)} MiB before, {fmt(after['rss_mib'], 1)} MiB after "
            f"(peak {fmt(after['peak_rss_mib'], 1)} MiB); exit status {server['exit_status']}"
        )
    errors = [row for row in document["rows"] if row["errors"]]
    for row in errors:
        parts.append(f"errors in {row['scenario']}: {row['errors_by_code']}; first: {row['first_error']}")
    parts += ["", "targets:"]
    for target in document["targets"]:
        verdict = "info" if target["met"] is None else "met" if target["met"] else "MISSED"
        line = f"  [{verdict}] {target['target']}: {fmt(target['value'])}"
        if len(target.get("rounds", ())) > 1:
            line += f" (rounds: {', '.join(fmt(v) for v in target['rounds'])})"
        if "ceiling" in target:
            line += f"  (measured ceiling {fmt(target['ceiling'])}: {target['ceiling_note']})"
        parts.append(line)
    parts += ["", *(f"- {note}" for note in document["notes"])]
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    defaults = ServeBenchConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model", default=defaults.model, help="digit classifier to export and serve (default: %(default)s)")
    parser.add_argument("--model-file", type=Path, help="serve this exported .onnx instead of exporting --model")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="measurement window per scenario")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_seconds, help="warm-up before each window")
    parser.add_argument("--baseline-seconds", type=float, default=defaults.baseline_seconds,
                        help="each in-process reference measurement, before and after every scenario")
    parser.add_argument("--rounds", type=int, default=defaults.rounds,
                        help="every scenario once per round, in turn; the table shows each one's median round "
                             "(default: %(default)s)")
    parser.add_argument("--load-processes", type=int, default=defaults.load_processes,
                        help="client processes sharing each scenario's concurrency (default: %(default)s)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device)
    parser.add_argument("--server-flag", dest="server_flags", action="append", default=[], metavar="FLAG",
                        help="extra flag for `python -m serve` (repeatable; e.g. --server-flag=--max-delay-ms=1)")
    parser.add_argument("--workers", type=int, default=None,
                        help="--workers of the servers under test (default: the server's own, one per core)")
    parser.add_argument("--scaling-workers", default=",".join(map(str, defaults.scaling_workers)),
                        help="worker counts of the scaling rows, comma-separated (default: %(default)s; on a GPU "
                             "machine with --device cuda, e.g. 1,2,4,8)")
    parser.add_argument("--load-generator", choices=["auto", H2LOAD, PYTHON_LOAD], default=defaults.load_generator,
                        help="what drives unary calls: h2load, Python grpc.aio clients, or auto (h2load when "
                             "installed; default)")
    parser.add_argument("--runs-dir", type=Path, default=defaults.runs_dir)
    parser.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    parser.add_argument("--output", type=Path, default=defaults.output, help="JSON result file (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="one scenario of each kind, short windows (for CI)")
    return parser


def config_from_args(args: argparse.Namespace) -> ServeBenchConfig:
    values = dict(
        model=args.model, model_file=args.model_file, load_processes=args.load_processes, device=args.device,
        server_flags=tuple(args.server_flags), runs_dir=args.runs_dir, data_dir=args.data_dir, output=args.output,
        workers=args.workers, scaling_workers=parse_worker_counts(args.scaling_workers),
        load_generator=args.load_generator,
    )
    if args.quick:
        return ServeBenchConfig.quick_mode(**values)
    return ServeBenchConfig(seconds=args.seconds, warmup_seconds=args.warmup, baseline_seconds=args.baseline_seconds,
                            rounds=args.rounds, **values)


def parse_worker_counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--scaling-workers takes worker counts separated by commas, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = parse_config(parser, argv, config_from_args)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)
    return run_and_report("bench.serve", lambda: run_benchmark(config), render, config.output, (BenchError,))


if __name__ == "__main__":
    sys.exit(main())
