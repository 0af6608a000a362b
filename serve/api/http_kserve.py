"""KServe v2 / Open Inference Protocol over HTTP/REST: health, metadata and inference.

The same data plane as the gRPC servicer, under the same service and method names in the metrics.
Health answers 200 when true and 503 when not, so that Kubernetes' HTTP probes and Triton's
`tritonclient.http` read it as they expect. Inference takes JSON tensors and Triton's binary tensor
data extension (serve.api.http_tensors reads and writes the bodies); its deadline is the earlier of
the `x-request-timeout-ms` header and Triton's `parameters.timeout`.
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from serve.api import http_tensors
from serve.api.http_server import (
    DATAPLANE,
    DEADLINE,
    PROVIDER_HEADER,
    earliest_deadline,
    route,
    until_deadline,
)
from serve.api.services import INFERENCE_SERVICE
from serve.core.answers import InferenceMetadata, ServerMetadata

# Triton's name of this front door's own protocol extension, listed after the data plane's.
BINARY_TENSOR_DATA = "binary_tensor_data"


def _tensors(specs) -> list[dict]:
    return [{"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)} for spec in specs]


def server_metadata_json(metadata: ServerMetadata) -> dict:
    return {"name": metadata.name, "version": metadata.version, "extensions": [*metadata.extensions, BINARY_TENSOR_DATA]}


def model_metadata_json(metadata: InferenceMetadata) -> dict:
    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": _tensors(metadata.inputs),
        "outputs": _tensors(metadata.outputs),
    }


@route(INFERENCE_SERVICE, "ServerLive", exempt=True)
async def server_live(request: web.Request) -> web.Response:
    live = request.app[DATAPLANE].live()
    return web.json_response({"live": live}, status=200 if live else 503)


@route(INFERENCE_SERVICE, "ServerReady", exempt=True)
async def server_ready(request: web.Request) -> web.Response:
    ready = request.app[DATAPLANE].ready()
    return web.json_response({"ready": ready}, status=200 if ready else 503)


@route(INFERENCE_SERVICE, "ServerMetadata")
async def server_metadata(request: web.Request) -> web.Response:
    return web.json_response(server_metadata_json(request.app[DATAPLANE].server_metadata()))


@route(INFERENCE_SERVICE, "ModelReady", exempt=True)
async def model_ready(request: web.Request) -> web.Response:
    dataplane = request.app[DATAPLANE]
    name, version = request.match_info["model"], request.match_info.get("version", "")
    dataplane.model(name, version)  # an unknown model or version is 404, with the names it has
    ready = dataplane.model_ready(name, version)
    return web.json_response({"name": name, "ready": ready}, status=200 if ready else 503)


@route(INFERENCE_SERVICE, "ModelMetadata")
async def model_metadata_handler(request: web.Request) -> web.Response:
    metadata = request.app[DATAPLANE].inference_metadata(request.match_info["model"], request.match_info.get("version", ""))
    return web.json_response(model_metadata_json(metadata), headers={PROVIDER_HEADER: metadata.execution_provider})


@route(INFERENCE_SERVICE, "ModelInfer")
async def model_infer(request: web.Request) -> web.Response:
    dataplane = request.app[DATAPLANE]
    name, version = request.match_info["model"], request.match_info.get("version", "")
    model = dataplane.model(name, version)  # an unknown model is 404 before its body is read
    body = await request.read()
    parsed = http_tensors.parse_infer_request(body, request.headers.get(http_tensors.INFER_HEADER_LENGTH), name, version)
    deadline = request[DEADLINE]
    if parsed.timeout_s is not None:
        deadline = earliest_deadline(deadline, asyncio.get_running_loop().time() + parsed.timeout_s)
    result = await until_deadline(dataplane.infer(parsed.request, deadline), deadline)
    answer, header_length = http_tensors.infer_response_body(result, parsed)
    headers = {PROVIDER_HEADER: model.provider}
    if header_length is None:
        return web.Response(body=answer, content_type=http_tensors.JSON_CONTENT_TYPE, headers=headers)
    headers[http_tensors.INFER_HEADER_LENGTH] = str(header_length)
    return web.Response(body=answer, content_type=http_tensors.BINARY_CONTENT_TYPE, headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v2/health/live", server_live)
    app.router.add_get("/v2/health/ready", server_ready)
    app.router.add_get("/v2", server_metadata)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.router.add_get(prefix, model_metadata_handler)
        app.router.add_get(prefix + "/ready", model_ready)
        app.router.add_post(prefix + "/infer", model_infer)
