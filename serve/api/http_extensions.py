"""Triton's model repository and statistics extensions over HTTP/REST, as tritonclient.http calls them.

    POST /v2/repository/index                        [{"name", "version", "state", "reason"}, ...]
    POST /v2/repository/models/{model}/load          (re)load the model from the repository
    POST /v2/repository/models/{model}/unload        unload it once its queued calls are answered
    GET  /v2/models[/{model}[/versions/{v}]]/stats   {"model_stats": [...]}

Registered before the v2 metadata routes, so that /v2/models/stats is not read as a model named "stats".
"""
from __future__ import annotations

import json

from aiohttp import web

from contracts.errors import InvalidInput
from serve.api.http_server import DATAPLANE, route
from serve.api.services import INFERENCE_SERVICE


async def _json_body(request: web.Request) -> dict:
    """The request's JSON object; an empty body is an empty object (tritonclient sends none for the index)."""
    body = await request.read()
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput(f"the request body must be a JSON object, got {type(value).__name__}")
    return value


def _parameters(body: dict, allowed: set[str]) -> dict:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput("`parameters` must be a JSON object")
    unsupported = sorted(set(parameters) - allowed)
    if unsupported:
        raise InvalidInput(
            f"parameters {unsupported} are not supported: the model is loaded from its folder in the repository; "
            "put its config and files there"
        )
    return parameters


@route(INFERENCE_SERVICE, "RepositoryIndex")
async def repository_index(request: web.Request) -> web.Response:
    body = await _json_body(request)
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput(f"`ready` must be true or false, got {ready!r}")
    entries = []
    for entry in request.app[DATAPLANE].repository_index(ready):
        item = {"name": entry.name, "state": entry.state}
        if entry.version:
            item["version"] = entry.version
        if entry.reason:
            item["reason"] = entry.reason
        entries.append(item)
    return web.json_response(entries)


@route(INFERENCE_SERVICE, "RepositoryModelLoad")
async def repository_model_load(request: web.Request) -> web.Response:
    _parameters(await _json_body(request), set())
    await request.app[DATAPLANE].load_model(request.match_info["model"])
    return web.json_response({})


@route(INFERENCE_SERVICE, "RepositoryModelUnload")
async def repository_model_unload(request: web.Request) -> web.Response:
    # unload_dependents is Triton's parameter for ensembles, which this server has none of.
    _parameters(await _json_body(request), {"unload_dependents"})
    await request.app[DATAPLANE].unload_model(request.match_info["model"])
    return web.json_response({})


@route(INFERENCE_SERVICE, "ModelStatistics")
async def model_statistics(request: web.Request) -> web.Response:
    name, version = request.match_info.get("model", ""), request.match_info.get("version", "")
    stats = request.app[DATAPLANE].statistics(name, version)
    return web.json_response({"model_stats": [entry.to_dict() for entry in stats]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v2/repository/index", repository_index)
    app.router.add_post("/v2/repository/models/{model}/load", repository_model_load)
    app.router.add_post("/v2/repository/models/{model}/unload", repository_model_unload)
    app.router.add_get("/v2/models/stats", model_statistics)
    app.router.add_get("/v2/models/{model}/stats", model_statistics)
    app.router.add_get("/v2/models/{model}/versions/{version}/stats", model_statistics)
