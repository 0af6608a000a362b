"""Optional bearer-token authentication (--token-file): one check, a gRPC interceptor and HTTP middleware.

Every call must carry `authorization: Bearer <token>` (gRPC metadata or HTTP header) with one of the tokens in the
file (one per line, blank lines and `#` comments ignored, so a new token can be added before the
old one is removed). Tokens are compared in constant time. A call without a valid token is answered
UNAUTHENTICATED before any handler runs.

Health checks (grpc.health.v1.Health/Check and Watch, HTTP /v2/health/*) need no token: load balancers and Kubernetes
gRPC probes cannot send one, and the answer (SERVING or not) reveals nothing. Everything else,
server reflection included, needs the token. Use TLS with tokens, or they travel in clear text.
"""
from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import grpc

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
SCHEME = "bearer"
EXEMPT_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class TokenFileError(ValueError):
    pass


def read_tokens(path: Path) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenFileError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    tokens = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise TokenFileError(f"the token file {path} holds no token (one token per line)")
    for token in tokens:
        if any(ch.isspace() for ch in token) or not token.isprintable():
            raise TokenFileError(f"the token file {path} holds a token with spaces or control characters")
    return tokens


def _denying_handler(handler: grpc.RpcMethodHandler, detail: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as `handler` that only answers UNAUTHENTICATED."""

    async def deny(request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)

    async def deny_streaming(request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)
        yield  # pragma: no cover - makes this an async generator, as streaming handlers are

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    factory = kinds[(handler.request_streaming, handler.response_streaming)]
    behaviour = deny_streaming if handler.response_streaming else deny
    return factory(behaviour, request_deserializer=None, response_serializer=None)


class BearerTokens:
    """The accepted tokens, and the check every protocol makes against them."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ValueError("at least one token is needed")
        self._tokens = [token.encode("utf-8") for token in tokens]

    def refusal(self, authorization: str | bytes | None) -> str | None:
        """None when a call with this `authorization` value may proceed, else the detail of the refusal."""
        if authorization is None:
            return "missing credentials: send the header `authorization: Bearer <token>`"
        if isinstance(authorization, bytes):
            authorization = authorization.decode("utf-8", "replace")
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != SCHEME or not credential.strip():
            return "malformed credentials: the authorization header must be `Bearer <token>`"
        presented = credential.strip().encode("utf-8")
        # Compare against every token, without stopping early: the time does not tell which matched.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return None if matched else "invalid bearer token"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: BearerTokens, on_denied: Callable[[str, str], None] | None = None) -> None:
        self._tokens = tokens
        self._on_denied = on_denied

    def _check(self, metadata) -> str | None:
        values = [value for key, value in (metadata or ()) if key == AUTHORIZATION]
        return self._tokens.refusal(values[0] if values else None)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method in EXEMPT_METHODS:
            return await continuation(handler_call_details)
        refusal = self._check(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if refusal is None or handler is None:
            return handler
        log.debug("refused %s: %s", method, refusal)
        if self._on_denied:
            self._on_denied(method, "UNAUTHENTICATED")
        return _denying_handler(handler, refusal)
