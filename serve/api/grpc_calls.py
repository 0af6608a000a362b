"""The wrapper every RPC handler of our two APIs goes through.

Handlers raise serve.core.errors.StatusError subclasses and know nothing of status codes; here each one
becomes the gRPC status it names, with its message as the detail the caller reads. Anything else is
a bug: logged with its traceback, answered INTERNAL without internals. Details are bounded
(serve.core.answers.bounded_detail) to fit the trailing metadata clients accept. Every answer is
counted in the metrics by method and status code, with its latency. Every call passes the server's
`Admission`, which counts the calls in progress and refuses new ones while the server drains.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time

import grpc

from contracts.errors import StatusError
from serve.core.answers import INTERNAL_DETAIL, bounded_detail
from serve.core.errors import Unavailable

log = logging.getLogger(__name__)

# How long a refused stream's messages are read (and dropped) before the refusal is sent.
REFUSED_STREAM_READ_S = 0.25


async def _discard_requests(request_iterator, timeout: float) -> None:
    """Read and drop what a refused stream's client sends, for at most `timeout` seconds.

    A grpc.aio client whose write races the server's final status reports INTERNAL "Internal error
    from Core" instead of that status (grpc/grpc#36066): refused while still writing, it would
    not see UNAVAILABLE and would not retry. Reading its messages first lets it finish writing.
    """

    async def read_all() -> None:
        async for _ in request_iterator:
            pass

    try:
        await asyncio.wait_for(read_all(), timeout)
    except (asyncio.TimeoutError, grpc.RpcError):
        pass


def deadline_from(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline on the event loop's clock, or None when it set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


def _cancelled_code(context: grpc.aio.ServicerContext) -> str:
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


class _RpcScope:
    """One RPC's bookkeeping, shared by unary and streaming methods: admission, the translation of
    exceptions into status codes, and the metrics of the status the call ends with.

    A class rather than an @asynccontextmanager: it is on every call's path, and an async generator
    costs each call the event loop's async-generator bookkeeping on top.
    """

    __slots__ = ("servicer", "service", "method", "context", "on_refused", "started", "admitted")

    def __init__(self, servicer, service: str, method: str, context, on_refused=None) -> None:
        self.servicer, self.service, self.method, self.context = servicer, service, method, context
        self.on_refused = on_refused
        self.admitted = False

    async def __aenter__(self) -> None:
        self.started = time.perf_counter()
        admission = self.servicer.admission
        if admission is not None:
            try:
                admission.enter()
            except Unavailable as exc:
                if self.on_refused is not None:
                    await self.on_refused()
                await self._finish(exc)
            self.admitted = True

    async def __aexit__(self, exc_type, exc, traceback) -> bool:
        await self._finish(exc)
        return False

    async def _finish(self, exc: BaseException | None) -> None:
        """Count the call and turn `exc` (None: success) into its status; raises what the caller must see."""
        context = self.context
        code = "OK"
        try:
            if exc is None:
                return
            if isinstance(exc, StatusError):
                code = exc.status
                await context.abort(grpc.StatusCode[exc.status], bounded_detail(str(exc)))
            elif isinstance(exc, asyncio.CancelledError):
                code = _cancelled_code(context)
            elif isinstance(exc, grpc.aio.AbortError):
                code = (context.code() or grpc.StatusCode.UNKNOWN).name
            elif isinstance(exc, Exception):
                code = "INTERNAL"
                log.error("%s/%s failed", self.service, self.method, exc_info=exc)
                await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_DETAIL)
        finally:
            if self.admitted:
                self.admitted = False
                self.servicer.admission.leave()
            metrics = self.servicer.metrics
            if metrics is not None:
                metrics.request_done(self.service, self.method, code, time.perf_counter() - self.started)


def unary(service: str):
    """Decorate `async def Method(self, request, context)`; the servicer has `metrics` and `admission`
    attributes (either may be None)."""

    def wrap(handler):
        method = handler.__name__

        @functools.wraps(handler)
        async def wrapped(self, request, context):
            async with _RpcScope(self, service, method, context):
                return await handler(self, request, context)

        return wrapped

    return wrap


def stream(service: str):
    """Decorate an async-generator `Method(self, request_iterator, context)` (streaming responses)."""

    def wrap(handler):
        method = handler.__name__

        @functools.wraps(handler)
        async def wrapped(self, request_iterator, context):
            async def drain_refused_stream() -> None:
                await _discard_requests(request_iterator, REFUSED_STREAM_READ_S)

            async with _RpcScope(self, service, method, context, on_refused=drain_refused_stream):
                async for response in handler(self, request_iterator, context):
                    yield response

        return wrapped

    return wrap
