"""KServe v2 / Open Inference Protocol over HTTP/REST: health, metadata and inference.

The same data plane as the gRPC servicer, under the same service and method names in the metrics.
Health answers 200 when true and 503 when not, so that Kubernetes' HTTP probes and Triton's
`tritonclient.http` read it as they expect.
"""
from __future__ import annotations

from aiohttp import web

from serve.api.grpc_kserve import SERVICE
from serve.api.http_server import DATAPLANE, PROVIDER_HEADER, route
from serve.core.dataplane import SERVER_NAME
from serve.core.repository import PLATFORM, Model


def _tensors(specs) -> list[dict]:
    return [{"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)} for spec in specs]


def model_metadata(model: Model) -> dict:
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": _tensors(model.inputs),
        "outputs": _tensors(model.outputs),
    }


@route(SERVICE, "ServerLive", exempt=True)
async def server_live(request: web.Request) -> web.Response:
    live = request.app[DATAPLANE].live()
    return web.json_response({"live": live}, status=200 if live else 503)


@route(SERVICE, "ServerReady", exempt=True)
async def server_ready(request: web.Request) -> web.Response:
    ready = request.app[DATAPLANE].ready()
    return web.json_response({"ready": ready}, status=200 if ready else 503)


@route(SERVICE, "ServerMetadata")
async def server_metadata(request: web.Request) -> web.Response:
    dataplane = request.app[DATAPLANE]
    return web.json_response({"name": SERVER_NAME, "version": dataplane.version, "extensions": []})


@route(SERVICE, "ModelReady", exempt=True)
async def model_ready(request: web.Request) -> web.Response:
    dataplane = request.app[DATAPLANE]
    name, version = request.match_info["model"], request.match_info.get("version", "")
    dataplane.model(name, version)  # an unknown model or version is 404, with the names it has
    ready = dataplane.model_ready(name, version)
    return web.json_response({"name": name, "ready": ready}, status=200 if ready else 503)


@route(SERVICE, "ModelMetadata")
async def model_metadata_handler(request: web.Request) -> web.Response:
    model = request.app[DATAPLANE].model(request.match_info["model"], request.match_info.get("version", ""))
    return web.json_response(model_metadata(model), headers={PROVIDER_HEADER: model.provider})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v2/health/live", server_live)
    app.router.add_get("/v2/health/ready", server_ready)
    app.router.add_get("/v2", server_metadata)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.router.add_get(prefix, model_metadata_handler)
        app.router.add_get(prefix + "/ready", model_ready)
