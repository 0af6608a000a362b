"""Optional bearer-token authentication (--token-file): the tokens, and the one check both front doors make
(serve.api.grpc_auth's interceptor for gRPC, serve.api.http_server's middleware for HTTP).

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
from pathlib import Path
from typing import Sequence

AUTHORIZATION = "authorization"
SCHEME = "bearer"


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
