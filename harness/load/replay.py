"""Load-generator processes for the serve benchmark: gRPC and HTTP clients in their own interpreters.

Each process holds `connections` grpc.aio channels per server, each its own HTTP/2 connection (a
server of several workers gets a connection's calls in the worker that accepted it), or one aiohttp
session for HTTP/1.1 calls, and keeps `concurrency` calls in flight (unary calls, or streams each with
a window of messages in flight; HTTP calls each on their own keep-alive connection). Requests are
serialised once, by the parent, and sent as bytes: the clients spend their CPU on the transport, as a
tuned load generator (ghz, Triton's perf_analyzer) does, not on building messages. Every answer is still parsed
and checked (right message, right number of predictions), and anything else counts as an error.

Timing uses one clock for every process (time.monotonic is system-wide on Linux): all processes
warm up until `measure_from` and count only calls that complete within [measure_from, measure_to].
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue as queue_module
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

# HTTP: unary calls over HTTP/1.1 (POST `method`, a URL path), the rest gRPC.
UNARY, STREAM, HTTP = "unary", "stream", "http"
# What an answer must look like: our Classify, our stream, KServe v2 ModelInfer (over gRPC, or over
# HTTP with binary outputs), or anything.
CHECK_CLASSIFY, CHECK_STREAM, CHECK_V2, CHECK_V2_HTTP, CHECK_NONE = "classify", "stream", "v2", "v2 http", "none"
INFER_HEADER_LENGTH = "Inference-Header-Content-Length"
MiB = 1024 * 1024
READY = "ready"
STARTUP_TIMEOUT_S = 60


@dataclass(frozen=True)
class LoadSpec:
    target: str  # host:port
    method: str  # "/package.Service/Method"; for HTTP, the URL path
    kind: str  # UNARY | STREAM | HTTP
    requests: tuple[bytes, ...]  # serialised requests, sent in turn
    images_per_request: int
    concurrency: int  # unary calls in flight, or streams
    stream_window: int  # messages in flight per stream
    check: str
    measure_from: float  # time.monotonic()
    measure_to: float
    timeout_s: float = 30.0
    connections: int = 1  # channels the calls are spread over, each its own connection
    # HTTP only: the headers of each request (in the order of `requests`).
    request_headers: tuple[tuple[tuple[str, str], ...], ...] = ()


@dataclass
class LoadResult:
    latencies_s: np.ndarray  # calls (or stream messages) completed inside the window
    images: int
    calls: int
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count (inside the window)
    first_error: str = ""
    cpu_s: float = 0.0  # this process's CPU time inside the window
    wall_s: float = 0.0
    setup_error: str = ""


class _Recorder:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.latencies: list[float] = []
        self.errors: Counter = Counter()
        self.first_error = ""
        self.images = 0
        self.cpu_at_start: float | None = None
        self.cpu_at_end: float | None = None

    def done(self, started: float, finished: float, error: str | None = None, detail: str = "") -> None:
        if not (self.spec.measure_from <= finished <= self.spec.measure_to):
            return
        if error is None:
            self.latencies.append(finished - started)
            self.images += self.spec.images_per_request
        else:
            self.errors[error] += 1
            if not self.first_error:
                self.first_error = f"{error}: {detail}"[:500]


def _checker(check: str, images: int):
    """A function of the answer's bytes: None when it is right, else why not."""
    if check == CHECK_NONE:
        return lambda data: None
    if check == CHECK_V2:
        from contracts.generated.inference.grpc_service_pb2 import ModelInferResponse

        def check_v2(data: bytes):
            answer = ModelInferResponse.FromString(data)
            if not answer.outputs or answer.outputs[0].shape[0] != images:
                return f"expected outputs for {images} images, got {[list(o.shape) for o in answer.outputs]}"
            return None

        return check_v2
    if check == CHECK_V2_HTTP:
        import json

        def check_v2_http(answer: tuple[bytes, str | None]):
            body, header_length = answer
            length = int(header_length) if header_length is not None else len(body)
            outputs = json.loads(body[:length])["outputs"]
            if not outputs or outputs[0]["shape"][0] != images:
                return f"expected outputs for {images} images, got {[o['shape'] for o in outputs]}"
            binary = sum(output.get("parameters", {}).get("binary_data_size", 0) for output in outputs)
            if length + binary != len(body):
                return f"the body holds {len(body)} bytes; the JSON part ({length}) and binary outputs ({binary}) differ"
            return None

        return check_v2_http

    from contracts.generated.digits.v1.digits_pb2 import (
        ClassifyResponse,
        ClassifyStreamResponse,
    )

    if check == CHECK_STREAM:
        def check_stream(data: bytes):
            answer = ClassifyStreamResponse.FromString(data)
            if answer.WhichOneof("result") != "prediction":
                return f"stream answer carries {answer.WhichOneof('result')}: {answer.error.code} {answer.error.message}"
            return None

        return check_stream

    def check_classify(data: bytes):
        answer = ClassifyResponse.FromString(data)
        if len(answer.predictions) != images:
            return f"expected {images} predictions, got {len(answer.predictions)}"
        return None

    return check_classify


async def _unary_caller(call, spec: LoadSpec, recorder: _Recorder, check, offset: int) -> None:
    import grpc

    requests, count = spec.requests, len(spec.requests)
    index = offset
    clock = time.monotonic
    while True:
        started = clock()
        if started >= spec.measure_to:
            return
        try:
            answer = await call(requests[index % count], timeout=spec.timeout_s)
        except grpc.aio.AioRpcError as exc:
            recorder.done(started, clock(), exc.code().name, exc.details() or "")
        else:
            problem = check(answer)
            recorder.done(started, clock(), "WRONG_ANSWER" if problem else None, problem or "")
        index += 1


async def _http_caller(session, spec: LoadSpec, recorder: _Recorder, check, offset: int) -> None:
    import aiohttp

    url = f"http://{spec.target}{spec.method}"
    requests, count = spec.requests, len(spec.requests)
    headers = spec.request_headers or ((),) * count
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    index = offset
    clock = time.monotonic
    while True:
        started = clock()
        if started >= spec.measure_to:
            return
        try:
            async with session.post(url, data=requests[index % count], headers=headers[index % count],
                                    timeout=timeout) as response:
                body = await response.read()
                status, header_length = response.status, response.headers.get(INFER_HEADER_LENGTH)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            recorder.done(started, clock(), type(exc).__name__, str(exc))
        else:
            if status != 200:
                recorder.done(started, clock(), f"HTTP {status}", body[:300].decode("utf-8", "replace"))
            else:
                problem = check((body, header_length))
                recorder.done(started, clock(), "WRONG_ANSWER" if problem else None, problem or "")
        index += 1


async def _streamer(channel, spec: LoadSpec, recorder: _Recorder, check, offset: int) -> None:
    """One stream: keep `stream_window` messages in flight, answers come back in order."""
    import grpc

    call = channel.stream_stream(spec.method)(timeout=None)
    window = asyncio.Semaphore(spec.stream_window)
    sent: deque = deque()
    requests, count = spec.requests, len(spec.requests)
    clock = time.monotonic

    async def write() -> None:
        index = offset
        try:
            while clock() < spec.measure_to:
                await window.acquire()
                sent.append(clock())
                await call.write(requests[index % count])
                index += 1
        finally:
            await call.done_writing()

    writer = asyncio.ensure_future(write())
    try:
        while True:
            answer = await call.read()
            if answer is grpc.aio.EOF:
                break
            problem = check(answer)
            recorder.done(sent.popleft(), clock(), "WRONG_ANSWER" if problem else None, problem or "")
            window.release()
        await writer
    except grpc.aio.AioRpcError as exc:
        recorder.done(sent[0] if sent else clock(), clock(), exc.code().name, exc.details() or "")
        writer.cancel()


async def _open(spec: LoadSpec, channels: dict) -> list:
    """The process's channels to spec.target (one aiohttp session for HTTP), opened on first use."""
    if spec.kind == HTTP:
        session = channels.get((True, spec.target))
        if session is None:
            import aiohttp

            # One keep-alive connection per call in flight, as an HTTP/1.1 client has to.
            session = channels[(True, spec.target)] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        return [session]
    import grpc

    spread = []
    for index in range(spec.connections):
        channel = channels.get((False, spec.target, index))
        if channel is None:
            channel = channels[(False, spec.target, index)] = grpc.aio.insecure_channel(
                spec.target,
                options=[("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB),
                         # Channels to one target share a connection unless each has its own pool.
                         ("grpc.use_local_subchannel_pool", 1)],
            )
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
        spread.append(channel)
    return spread


async def _run_load(spec: LoadSpec, channels: dict) -> LoadResult:
    spread = await _open(spec, channels)
    recorder = _Recorder(spec)
    check = _checker(spec.check, spec.images_per_request)

    async def cpu_marks() -> None:
        await asyncio.sleep(max(0.0, spec.measure_from - time.monotonic()))
        recorder.cpu_at_start = time.process_time()
        await asyncio.sleep(max(0.0, spec.measure_to - time.monotonic()))
        recorder.cpu_at_end = time.process_time()

    marks = asyncio.ensure_future(cpu_marks())
    if spec.kind == UNARY:
        calls = [channel.unary_unary(spec.method) for channel in spread]  # bytes in, bytes out: no (de)serialisers
        workers = [_unary_caller(calls[i % len(calls)], spec, recorder, check, i) for i in range(spec.concurrency)]
    elif spec.kind == HTTP:
        workers = [_http_caller(spread[0], spec, recorder, check, i) for i in range(spec.concurrency)]
    else:
        workers = [_streamer(spread[i % len(spread)], spec, recorder, check, i * 7919) for i in range(spec.concurrency)]
    await asyncio.gather(*workers)
    await marks
    wall = spec.measure_to - spec.measure_from
    return LoadResult(
        latencies_s=np.asarray(recorder.latencies, dtype=np.float64),
        images=recorder.images,
        calls=len(recorder.latencies),
        errors=dict(recorder.errors),
        first_error=recorder.first_error,
        cpu_s=(recorder.cpu_at_end or 0.0) - (recorder.cpu_at_start or 0.0),
        wall_s=wall,
    )


def worker_main(inbox: mp.Queue, outbox: mp.Queue) -> None:
    """A load-generator process: run each LoadSpec it is sent, answer a LoadResult; None ends it."""
    import aiohttp  # noqa: F401  (imported before saying ready: the first scenario must not wait for them)
    import grpc  # noqa: F401

    _checker(CHECK_CLASSIFY, 1), _checker(CHECK_V2, 1), _checker(CHECK_V2_HTTP, 1)
    outbox.put(READY)
    loop = asyncio.new_event_loop()
    channels: dict = {}
    try:
        while True:
            spec = inbox.get()
            if spec is None:
                break
            try:
                result = loop.run_until_complete(_run_load(spec, channels))
            except Exception as exc:  # reported to the parent, which fails the scenario with it
                result = LoadResult(np.zeros(0), 0, 0, setup_error=f"{type(exc).__name__}: {exc}")
            outbox.put(result)
    finally:
        for channel in channels.values():
            loop.run_until_complete(channel.close())  # a grpc.aio channel or an aiohttp session
        loop.close()


class LoadGenerators:
    """`processes` long-lived client processes (spawned, so they share nothing with the parent)."""

    def __init__(self, processes: int) -> None:
        context = mp.get_context("spawn")
        self._inboxes = [context.Queue() for _ in range(processes)]
        self._outbox = context.Queue()
        self._processes = [
            context.Process(target=worker_main, args=(inbox, self._outbox), name=f"load-{i}", daemon=True)
            for i, inbox in enumerate(self._inboxes)
        ]
        self._pending = 0
        for process in self._processes:
            process.start()
        for _ in self._processes:
            try:
                message = self._outbox.get(timeout=STARTUP_TIMEOUT_S)
            except queue_module.Empty:
                self.close()
                raise RuntimeError(f"the load-generator processes did not start within {STARTUP_TIMEOUT_S} s") from None
            assert message == READY, message

    @property
    def count(self) -> int:
        return len(self._processes)

    def start(self, specs: list[LoadSpec]) -> None:
        """Send one spec to each of the first len(specs) processes; they start at once."""
        if len(specs) > self.count:
            raise ValueError(f"{len(specs)} load specs for {self.count} processes")
        for inbox, spec in zip(self._inboxes, specs):
            inbox.put(spec)
        self._pending = len(specs)

    def collect(self, timeout_s: float) -> list[LoadResult]:
        """The results of what start() sent, once every process has answered."""
        results = []
        deadline = time.monotonic() + timeout_s
        while self._pending:
            try:
                results.append(self._outbox.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue_module.Empty:
                dead = [p.name for p in self._processes if not p.is_alive()]
                raise RuntimeError(
                    f"load generators did not answer within {timeout_s:.0f} s" + (f" (dead: {dead})" if dead else "")
                ) from None
            self._pending -= 1
        return results

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()

    def __enter__(self) -> "LoadGenerators":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
