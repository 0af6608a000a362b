"""GET /: the drawing page, one self-contained HTML file (serve/api/page/index.html) that talks to the
HTTP digits API.

The page has no external assets, so it works offline and behind any firewall. Its inline script and
style are allowed by their SHA-256 in the Content-Security-Policy and nothing else is, so that
neither an injected script nor a third-party resource could run in it. It is static and holds
nothing secret, so it needs no token (the page asks for one when the API refuses it).
"""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from contracts.images.formats import ACCEPTED_MEDIA_TYPES, SUPPORTED_FORMATS
from serve.api.http_server import route

PAGE_SERVICE = "page"
_INLINE = {"script": re.compile(rb"<script>(.*?)</script>", re.S), "style": re.compile(rb"<style>(.*?)</style>", re.S)}


@dataclass(frozen=True)
class Page:
    html: bytes
    content_security_policy: str

    @classmethod
    def load(cls) -> "Page":
        html = resources.files("serve.api").joinpath("page", "index.html").read_bytes()
        # The file picker offers, and the page's messages name, exactly the formats the decoder reads.
        html = html.replace(b"{{accepted_media_types}}", ",".join(ACCEPTED_MEDIA_TYPES).encode())
        html = html.replace(b"{{accepted_formats}}", SUPPORTED_FORMATS.encode())
        return cls(html, content_security_policy(html))


def _source_hashes(html: bytes, tag: str) -> str:
    digests = [hashlib.sha256(body).digest() for body in _INLINE[tag].findall(html)]
    return " ".join(f"'sha256-{base64.b64encode(digest).decode('ascii')}'" for digest in digests) or "'none'"


def content_security_policy(html: bytes) -> str:
    """Only the page's own inline script and style, pictures from data: URLs, requests to this server."""
    return "; ".join([
        "default-src 'none'",
        f"script-src {_source_hashes(html, 'script')}",
        f"style-src {_source_hashes(html, 'style')}",
        "img-src data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


PAGE = web.AppKey("page", Page)


@route(PAGE_SERVICE, "Index", exempt=True)
async def index(request: web.Request) -> web.Response:
    page = request.app[PAGE]
    return web.Response(body=page.html, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": page.content_security_policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    })


def add_routes(app: web.Application) -> None:
    app[PAGE] = Page.load()
    app.router.add_get("/", index)
