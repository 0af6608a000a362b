"""Replayed traffic: the same pre-serialised requests, as fast as they are answered (throughput).

A load process holds `connections` grpc.aio channels per server, each its own HTTP/2 connection (a
server of several workers gets a connection's calls in the worker that accepted it), or one aiohttp
session for HTTP/1.1 calls, and keeps `concurrency` calls in flight (unary calls, or streams each with
a window of messages in flight; HTTP calls each on their own keep-alive connection). Requests are
serialised once, by the parent, and sent as bytes: the clients spend their CPU on the transport, as a
tuned load generator (ghz, Triton's perf_analyzer) does, not on building messages. Every answer is still parsed
and checked (right message, right number of predictions), and anything else counts as an error.

Calls start at the common start time, warm up for the spec's warmup_s, and only the calls that
complete inside the window after it count (time.monotonic is system-wide on Linux).
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from .spec import (
    CHECK_CLASSIFY,
    CHECK_NONE,
    CHECK_STREAM,
    CHECK_V2,
    CHECK_V2_HTTP,
    HTTP,
    UNARY,
    LoadResult,
    LoadSpec,
    ReplayTraffic,
)

INFER_HEADER_LENGTH = "Inference-Header-Content-Length"
# The status an answer that came back OK but is not the one expected is counted under.
WRONG_ANSWER = "WRONG_ANSWER"
MiB = 1024 * 1024


@dataclass(frozen=True)
class _Window:
    """The spec's traffic, and the monotonic-clock window its calls are counted in."""

    traffic: ReplayTraffic
    target: str
    concurrency: int
    timeout_s: float
    measure_from: float
    measure_to: float


class _Recorder:
    def __init__(self, spec: _Window) -> None:
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
            self.images += self.spec.traffic.images_per_request
        else:
            self.errors[error] += 1
            if not self.first_error:
                self.first_error = f"{error}: {detail}"[:500]


def _checker(check: str, images: int):
    """A function of the answer's bytes: None when it is right, else why not (an answer that does not
    even parse is a wrong answer, not the end of the load)."""
    parse_and_check = _parse_and_check(check, images)

    def checked(data):
        try:
            return parse_and_check(data)
        except Exception as exc:
            return f"unreadable answer: {type(exc).__name__}: {exc}"

    return checked


def _parse_and_check(check: str, images: int):
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


async def _unary_caller(call, spec: _Window, recorder: _Recorder, check, offset: int) -> None:
    import grpc

    requests, count = spec.traffic.requests, len(spec.traffic.requests)
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
            recorder.done(started, clock(), WRONG_ANSWER if problem else None, problem or "")
        index += 1


async def _http_caller(session, spec: _Window, recorder: _Recorder, check, offset: int) -> None:
    import aiohttp

    url = f"http://{spec.target}{spec.traffic.method}"
    requests, count = spec.traffic.requests, len(spec.traffic.requests)
    headers = spec.traffic.request_headers or ((),) * count
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
                recorder.done(started, clock(), WRONG_ANSWER if problem else None, problem or "")
        index += 1


async def _streamer(channel, spec: _Window, recorder: _Recorder, check, offset: int) -> None:
    """One stream: keep `stream_window` messages in flight, answers come back in order."""
    import grpc

    call = channel.stream_stream(spec.traffic.method)(timeout=None)
    window = asyncio.Semaphore(spec.traffic.stream_window)
    sent: deque = deque()
    requests, count = spec.traffic.requests, len(spec.traffic.requests)
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
            recorder.done(sent.popleft(), clock(), WRONG_ANSWER if problem else None, problem or "")
            window.release()
        await writer
    except grpc.aio.AioRpcError as exc:
        recorder.done(sent[0] if sent else clock(), clock(), exc.code().name, exc.details() or "")
        writer.cancel()


async def _open(spec: LoadSpec, channels: dict) -> list:
    """The process's channels to spec.target (one aiohttp session for HTTP), opened on first use."""
    if spec.traffic.kind == HTTP:
        session = channels.get((True, spec.target))
        if session is None:
            import aiohttp

            # One keep-alive connection per call in flight, as an HTTP/1.1 client has to.
            session = channels[(True, spec.target)] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        return [session]
    import grpc

    spread = []
    for index in range(spec.traffic.connections):
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


async def prepare(spec: LoadSpec, channels: dict):
    """Connect (reusing the process's channels to the same target); returns `run(start_at)`, the load."""
    spread = await _open(spec, channels)
    traffic = spec.traffic
    check = _checker(traffic.check, traffic.images_per_request)

    async def run(start_at: float) -> LoadResult:
        # The common start is wall-clock time; the window is counted on the monotonic clock.
        started = time.monotonic() + (start_at - time.time())
        window = _Window(traffic, spec.target, spec.concurrency, spec.call_timeout_s,
                         started + spec.warmup_s, started + spec.warmup_s + spec.duration_s)
        recorder = _Recorder(window)
        await asyncio.sleep(max(0.0, started - time.monotonic()))

        async def cpu_marks() -> None:
            await asyncio.sleep(max(0.0, window.measure_from - time.monotonic()))
            recorder.cpu_at_start = time.process_time()
            await asyncio.sleep(max(0.0, window.measure_to - time.monotonic()))
            recorder.cpu_at_end = time.process_time()

        marks = asyncio.ensure_future(cpu_marks())
        if traffic.kind == UNARY:
            calls = [channel.unary_unary(traffic.method) for channel in spread]  # bytes in, bytes out
            workers = [_unary_caller(calls[i % len(calls)], window, recorder, check, i) for i in range(spec.concurrency)]
        elif traffic.kind == HTTP:
            workers = [_http_caller(spread[0], window, recorder, check, i) for i in range(spec.concurrency)]
        else:
            workers = [_streamer(spread[i % len(spread)], window, recorder, check, i * 7919)
                       for i in range(spec.concurrency)]
        try:
            await asyncio.gather(*workers)
            await marks
        finally:
            marks.cancel()
        answered, failed = len(recorder.latencies), sum(recorder.errors.values())
        codes = {"OK": answered, **recorder.errors}
        # The outcomes of mixed traffic (harness.load.mixed): every status but OK is unexpected here.
        wrong = recorder.errors.get(WRONG_ANSWER, 0)
        outcomes = {"answered": answered, "wrong": wrong, "unexpected": failed - wrong}
        return LoadResult(
            worker=spec.worker, sent=answered + failed, answered=answered, images=recorder.images,
            latencies_s=np.asarray(recorder.latencies, dtype=np.float64), errors=dict(recorder.errors),
            first_error=recorder.first_error, outcomes={traffic.method: outcomes}, codes={traffic.method: codes},
            cpu_s=(recorder.cpu_at_end or 0.0) - (recorder.cpu_at_start or 0.0),
            started_at=start_at + spec.warmup_s, ended_at=start_at + spec.warmup_s + spec.duration_s,
        )

    return run


def warm_up_imports() -> None:
    """Import what the first run needs before the process says it is ready."""
    import aiohttp  # noqa: F401
    import grpc  # noqa: F401

    _checker(CHECK_CLASSIFY, 1), _checker(CHECK_V2, 1), _checker(CHECK_V2_HTTP, 1)
