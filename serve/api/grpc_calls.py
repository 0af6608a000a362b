"""The wrapper every RPC handler of our two APIs goes through.

Handlers raise serve.core.errors.ServeError subclasses and know nothing of status codes; here each one
becomes the gRPC status it names, with its message as the detail the caller reads. Anything else is
a bug: logged with its traceback, answered INTERNAL without internals. Every answer is counted in
the metrics by method and status code, with its latency. Every call passes the server's `Admission`,
which counts the calls in progress and refuses new ones while the server drains.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

import grpc

from serve.core.errors import ServeError, Unavailable

log = logging.getLogger(__name__)

INTERNAL_DETAIL = "internal server error; the server log has the details"

# Details often quote what the caller sent (a model or input name, a shape), and a caller can send
# megabytes of it. The detail travels in the trailing metadata, which clients cap (8 KiB by default)
# after percent-encoding every non-ASCII byte as 3 characters; beyond the cap the caller would get
# RESOURCE_EXHAUSTED "received metadata size exceeds limit" instead of the real status. 1,800 UTF-8
# bytes stay under 5.5 KiB whatever they hold.
_DETAIL_HEAD_BYTES = 1200
_DETAIL_TAIL_BYTES = 600


def bounded_detail(detail: str) -> str:
    """`detail`, with its middle cut when it is too long (the end often says what to send instead)."""
    encoded = detail.encode("utf-8")
    if len(encoded) <= _DETAIL_HEAD_BYTES + _DETAIL_TAIL_BYTES:
        return detail
    head = encoded[:_DETAIL_HEAD_BYTES].decode("utf-8", "ignore")
    tail = encoded[-_DETAIL_TAIL_BYTES:].decode("utf-8", "ignore")
    cut = len(encoded) - _DETAIL_HEAD_BYTES - _DETAIL_TAIL_BYTES
    return f"{head}...[{cut} bytes cut]...{tail}"


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


@contextlib.asynccontextmanager
async def _rpc_scope(servicer, service: str, method: str, context, on_refused=None):
    """One RPC's bookkeeping, shared by unary and streaming methods: admission, the translation of
    exceptions into status codes, and the metrics of the status the call ends with."""
    started = time.perf_counter()
    code = "OK"
    admission = servicer.admission
    admitted = False
    try:
        if admission is not None:
            try:
                admission.enter()
            except Unavailable:
                if on_refused is not None:
                    await on_refused()
                raise
            admitted = True
        yield
    except ServeError as exc:
        code = exc.status
        await context.abort(grpc.StatusCode[exc.status], bounded_detail(str(exc)))
    except asyncio.CancelledError:
        code = _cancelled_code(context)
        raise
    except grpc.aio.AbortError:
        code = (context.code() or grpc.StatusCode.UNKNOWN).name
        raise
    except Exception:
        code = "INTERNAL"
        log.exception("%s/%s failed", service, method)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_DETAIL)
    finally:
        if admitted:
            admission.leave()
        if servicer.metrics is not None:
            servicer.metrics.request_done(service, method, code, time.perf_counter() - started)


def unary(service: str):
    """Decorate `async def Method(self, request, context)`; the servicer has `metrics` and `admission`
    attributes (either may be None)."""

    def wrap(handler):
        method = handler.__name__

        @functools.wraps(handler)
        async def wrapped(self, request, context):
            async with _rpc_scope(self, service, method, context):
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

            async with _rpc_scope(self, service, method, context, on_refused=drain_refused_stream):
                async for response in handler(self, request_iterator, context):
                    yield response

        return wrapped

    return wrap
