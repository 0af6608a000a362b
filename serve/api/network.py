"""What both front doors need to listen: addresses, TLS files, and the error a failed start raises."""
from __future__ import annotations

from pathlib import Path


class FrontDoorError(RuntimeError):
    """A front door cannot open as configured (bad TLS files, port in use, ...); the message says why."""


def address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def read_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FrontDoorError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def read_tls_files(cert: Path, key: Path, client_ca: Path | None) -> tuple[bytes, bytes, bytes | None]:
    """(certificate chain, private key, client CA or None) as PEM bytes, checked to hold what they should."""
    key_pem = read_file(key, "TLS key")
    cert_pem = read_file(cert, "TLS certificate")
    if b"PRIVATE KEY" not in key_pem:
        raise FrontDoorError(f"{key} does not hold a PEM private key")
    if b"CERTIFICATE" not in cert_pem:
        raise FrontDoorError(f"{cert} does not hold a PEM certificate")
    client_ca_pem = read_file(client_ca, "client CA certificate") if client_ca else None
    return cert_pem, key_pem, client_ca_pem
