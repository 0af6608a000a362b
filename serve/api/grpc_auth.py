"""Bearer tokens on gRPC: an interceptor that answers UNAUTHENTICATED, before any handler runs, to a call
without a valid token (serve.api.auth has the tokens and the check; the health checks are exempt).
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

import grpc

from serve.api.auth import AUTHORIZATION, BearerTokens

log = logging.getLogger(__name__)

EXEMPT_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


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
