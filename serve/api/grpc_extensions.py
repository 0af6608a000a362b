"""Triton's model repository and statistics extensions on the v2 gRPC service (mixed into KServeServicer).

Each RPC translates its message, calls the data plane, and translates back; the lifecycle itself
(loading, warming up, swapping, draining) lives in serve.core.lifecycle.
"""
from __future__ import annotations

from google.protobuf import json_format

from contracts.errors import InvalidInput
from contracts.generated.inference import grpc_service_pb2 as pb
from serve.api.grpc_calls import unary
from serve.api.services import INFERENCE_SERVICE


def _check_repository(repository_name: str) -> None:
    if repository_name:
        raise InvalidInput(
            f"this server has one model repository, unnamed; leave repository_name empty (got {repository_name!r})"
        )


class TritonExtensionRpcs:
    """Needs `dataplane`, `metrics` and `admission` attributes (those of the servicer it is mixed into)."""

    @unary(INFERENCE_SERVICE)
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context) -> pb.RepositoryIndexResponse:
        _check_repository(request.repository_name)
        response = pb.RepositoryIndexResponse()
        for entry in self.dataplane.repository_index(request.ready):
            response.models.add(name=entry.name, version=entry.version, state=entry.state, reason=entry.reason)
        return response

    @unary(INFERENCE_SERVICE)
    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context) -> pb.RepositoryModelLoadResponse:
        _check_repository(request.repository_name)
        if request.parameters:
            raise InvalidInput(
                f"load parameters ({', '.join(sorted(request.parameters))}) are not supported: the model is loaded "
                "from its folder in the repository; put the config and files there"
            )
        await self.dataplane.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @unary(INFERENCE_SERVICE)
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context,
    ) -> pb.RepositoryModelUnloadResponse:
        _check_repository(request.repository_name)
        # unload_dependents is Triton's parameter for ensembles, which this server has none of.
        await self.dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @unary(INFERENCE_SERVICE)
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context) -> pb.ModelStatisticsResponse:
        response = pb.ModelStatisticsResponse()
        for stats in self.dataplane.statistics(request.name, request.version):
            json_format.ParseDict(stats.to_dict(), response.model_stats.add())
        return response
