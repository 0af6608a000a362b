"""The gRPC front door: both APIs, health and reflection on one grpc.aio server.

Why grpc.aio: one event loop thread answers every RPC at a fraction of a thread pool's per-call
cost in Python, while ONNX Runtime (which releases the GIL) runs in the inference threads and image
decoding in a small worker pool.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from contracts.generated._pool import POOL as STUBS_POOL
from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.generated.inference import grpc_service_pb2, grpc_service_pb2_grpc
from serve.api.auth import BearerTokens
from serve.api.grpc_auth import BearerTokenInterceptor
from serve.api.grpc_digits import DigitsServicer
from serve.api.grpc_kserve import KServeServicer
from serve.api.metrics import Metrics
from serve.api.network import ServerStartError, address, port_in_use_hint
from serve.core.admission import Admission
from serve.core.dataplane import DataPlane

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"].full_name,
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)


def reflection_pool():
    """Our stubs' private descriptor pool, with the health and reflection protos added to it.

    Reflection answers from one pool; ours holds the digits and v2 protos (kept out of the default
    pool, see contracts.generate_stubs), the other two live in the default pool and are copied over.
    """
    for module in (health_pb2, reflection_pb2):
        try:
            STUBS_POOL.FindFileByName(module.DESCRIPTOR.name)
        except KeyError:
            STUBS_POOL.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return STUBS_POOL


class GrpcFrontDoor:
    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Metrics,
        admission: Admission,
        tokens: BearerTokens | None,
        max_message_bytes: int,
        max_concurrent_rpcs: int | None,
        on_denied: Callable[[str, str, str], None] | None = None,
        share_port: bool = False,
    ) -> None:
        self.dataplane = dataplane
        interceptors = []
        if tokens is not None:
            interceptors.append(BearerTokenInterceptor(
                tokens, on_denied=(lambda method, code: on_denied("grpc", method, code)) if on_denied else None,
            ))
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # A second server on a port in use must fail, not silently share it; the workers of
                # one server (serve/workers.py) share theirs on purpose.
                ("grpc.so_reuseport", 1 if share_port else 0),
            ],
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        digits_pb2_grpc.add_DigitClassifierServicer_to_server(DigitsServicer(dataplane, metrics, admission), self._server)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeServicer(dataplane, metrics, admission), self._server
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(SERVICE_NAMES, self._server, pool=reflection_pool())

    async def start(self, host: str, port: int, tls: tuple[bytes, bytes, bytes | None] | None) -> int:
        """Bind and start; returns the bound port."""
        where = address(host, port)
        try:
            if tls is not None:
                cert, key, client_ca = tls
                credentials = grpc.ssl_server_credentials(
                    [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
                )
                bound = self._server.add_secure_port(where, credentials)
            else:
                bound = self._server.add_insecure_port(where)
        except RuntimeError as exc:
            raise ServerStartError(f"cannot listen on {where}: {exc} ({port_in_use_hint('--port')})") from exc
        await self._server.start()
        return bound

    async def set_serving(self, model_names: Sequence[str]) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        for name in ("", *SERVICE_NAMES[:2], *model_names):
            await self._health.set(name, serving)

    async def set_model_serving(self, model_name: str, serving: bool) -> None:
        """A model loaded or unloaded while serving: its health check follows."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self._health.set(model_name, status)

    async def enter_graceful_shutdown(self) -> None:
        await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace)
