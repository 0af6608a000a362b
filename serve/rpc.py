"""The wrapper every RPC handler of our two APIs goes through.

Handlers raise serve.errors.ServeError subclasses and know nothing of status codes; here each one
becomes the gRPC status it names, with its message as the detail the caller reads. Anything else is
a bug: logged with its traceback, answered INTERNAL without internals. Every answer is counted in
the metrics by method and status code, with its latency.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time

import grpc

from serve.errors import ServeError

log = logging.getLogger(__name__)

INTERNAL_DETAIL = "internal server error; the server log has the details"


def deadline_from(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline on the event loop's clock, or None when it set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


def _cancelled_code(context: grpc.aio.ServicerContext) -> str:
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


def unary(service: str):
    """Decorate `async def Method(self, request, context)`; the servicer has a `metrics` attribute."""

    def wrap(handler):
        method = handler.__name__

        @functools.wraps(handler)
        async def wrapped(self, request, context):
            started = time.perf_counter()
            code = "OK"
            try:
                return await handler(self, request, context)
            except ServeError as exc:
                code = exc.status
                await context.abort(grpc.StatusCode[exc.status], str(exc))
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
                if self.metrics is not None:
                    self.metrics.request_done(service, method, code, time.perf_counter() - started)

        return wrapped

    return wrap


def stream(service: str):
    """Decorate an async-generator `Method(self, request_iterator, context)` (streaming responses)."""

    def wrap(handler):
        method = handler.__name__

        @functools.wraps(handler)
        async def wrapped(self, request_iterator, context):
            started = time.perf_counter()
            code = "OK"
            try:
                async for response in handler(self, request_iterator, context):
                    yield response
            except ServeError as exc:
                code = exc.status
                await context.abort(grpc.StatusCode[exc.status], str(exc))
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
                if self.metrics is not None:
                    self.metrics.request_done(service, method, code, time.perf_counter() - started)

        return wrapped

    return wrap
