"""Placeholder while the module is being written: registers no routes yet."""
from aiohttp import web


def add_routes(app: web.Application) -> None:
    pass
