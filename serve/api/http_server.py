"""The HTTP front door: KServe v2 over REST, the digits API over HTTP, and the drawing page, on aiohttp.

Why aiohttp: its server runs on the same asyncio event loop as grpc.aio, so one process serves both
protocols through the same batchers with no second loop or thread to hand requests across; it is
one well-kept dependency (no ASGI server plus framework), and it brings TLS, multipart forms and
body-size limits of its own.

Every request passes the same middleware: bearer tokens (health exempt), the server's Admission
(refused while draining), its deadline (`x-request-timeout-ms`), the metrics (protocol "http",
under the same service and method names as gRPC) and the translation of StatusErrors into HTTP
status codes with a JSON body `{"error": "..."}` that says what to fix.
"""
from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from pathlib import Path
from typing import Callable

from aiohttp import web

from contracts.errors import InvalidInput, StatusError
from serve.api.auth import AUTHORIZATION, BearerTokens
from serve.api.metrics import Metrics
from serve.api.network import ServerStartError, port_in_use_hint
from serve.core.admission import Admission
from serve.core.answers import INTERNAL_DETAIL, bounded_detail
from serve.core.dataplane import DataPlane
from serve.core.errors import DeadlineExceeded

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8000
TIMEOUT_HEADER = "x-request-timeout-ms"
PROVIDER_HEADER = "x-execution-provider"

# StatusError.status (a gRPC code name) -> the HTTP status of the same meaning.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 413,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# What the handlers read from the app: the data plane, and the body-size limit.
DATAPLANE = web.AppKey("dataplane", DataPlane)
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
# The call's deadline on the event loop's clock (None: none), set by the middleware.
DEADLINE = web.RequestKey("deadline", float)


def error_response(status: int, detail: str) -> web.Response:
    return web.json_response({"error": bounded_detail(detail)}, status=status)


def route(service: str, method: str, exempt: bool = False):
    """Name a handler's (service, method) for the metrics; `exempt` handlers need no token and pass
    the drain gate (health probes must answer while the server drains)."""

    def mark(handler):
        handler.route_service, handler.route_method, handler.route_exempt = service, method, exempt
        return handler

    return mark


def _deadline(request: web.Request) -> float | None:
    value = request.headers.get(TIMEOUT_HEADER)
    if value is None:
        return None
    try:
        milliseconds = float(value)
    except ValueError:
        milliseconds = math.nan
    if not math.isfinite(milliseconds) or milliseconds <= 0:
        raise InvalidInput(f"the {TIMEOUT_HEADER} header must be a positive number of milliseconds, got {value!r}")
    return asyncio.get_running_loop().time() + milliseconds / 1000.0


def earliest_deadline(*deadlines: float | None) -> float | None:
    present = [deadline for deadline in deadlines if deadline is not None]
    return min(present) if present else None


async def until_deadline(awaitable, deadline: float | None):
    """`awaitable`'s result, or DeadlineExceeded once `deadline` (event-loop time) passes.

    gRPC cancels a handler at its caller's deadline; over HTTP only the server knows the deadline, so
    the handler is cancelled here (a request waiting in a batcher's queue leaves it on cancellation).
    """
    if deadline is None:
        return await awaitable
    try:
        async with asyncio.timeout_at(deadline):
            return await awaitable
    except TimeoutError:
        raise DeadlineExceeded("the request's deadline passed before its answer was ready; allow a longer deadline") from None


def build_app(
    dataplane: DataPlane,
    metrics: Metrics,
    admission: Admission,
    tokens: BearerTokens | None,
    max_body_bytes: int,
    add_routes: list[Callable[[web.Application], None]],
) -> web.Application:
    @web.middleware
    async def serve_call(request: web.Request, handler):
        service = getattr(handler, "route_service", "http")
        method = getattr(handler, "route_method", request.path)
        exempt = getattr(handler, "route_exempt", False)
        started = time.perf_counter()
        status = 500
        admitted = False
        try:
            if tokens is not None and not exempt:
                refusal = tokens.refusal(request.headers.get(AUTHORIZATION))
                if refusal is not None:
                    status = 401
                    return error_response(401, refusal)
            if not exempt:
                admission.enter()
                admitted = True
            request[DEADLINE] = _deadline(request)
            response = await handler(request)
            status = response.status
            return response
        except StatusError as exc:
            status = HTTP_STATUS.get(exc.status, 500)
            return error_response(status, str(exc))
        except web.HTTPException as exc:
            status = exc.status
            if exc.status == 413:
                return error_response(413, f"the request body is larger than the server's limit of {max_body_bytes} "
                                           "bytes (--max-message-mb): send fewer or smaller images")
            if exc.status >= 400:
                return error_response(exc.status, exc.reason if exc.text is None else exc.text)
            raise
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            status = 500
            return error_response(500, INTERNAL_DETAIL)
        finally:
            if admitted:
                admission.leave()
            metrics.request_done(service, method, _code_name(status), time.perf_counter() - started, protocol="http")

    app = web.Application(middlewares=[serve_call], client_max_size=max_body_bytes)
    app[DATAPLANE] = dataplane
    app[MAX_BODY_BYTES] = max_body_bytes
    for add in add_routes:
        add(app)
    return app


_CODE_NAMES = {200: "OK", **{status: name for name, status in HTTP_STATUS.items()}}


def _code_name(status: int) -> str:
    """The metrics' code label: the gRPC name of the same meaning, so both protocols count alike."""
    return _CODE_NAMES.get(status, str(status))


class HttpFrontDoor:
    def __init__(self, app: web.Application, share_port: bool = False) -> None:
        self._app = app
        # SO_REUSEPORT only for the workers of one server (serve/workers.py): a lone server must find
        # a port in use refused.
        self._share_port = share_port
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Bind and start; returns the bound port."""
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False, shutdown_timeout=0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context, reuse_port=self._share_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ServerStartError(
                f"cannot listen for HTTP on {host}:{port}: {exc.strerror or exc} ({port_in_use_hint('--http-port')})"
            ) from exc
        return self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """The server's TLS context from the same PEM files as gRPC's (read_tls_files has checked them)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as exc:
        raise ServerStartError(f"cannot use the TLS files {cert}, {key} for HTTP: {exc}") from exc
    return context
