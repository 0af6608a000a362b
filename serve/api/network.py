"""What both front doors need to listen: addresses, TLS files, the port file, and the error a failed start raises."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class ServerStartError(RuntimeError):
    """The server cannot start as configured (bad TLS files, a port in use, workers not ready, ...); the message says why."""


def port_in_use_hint(flag: str) -> str:
    """What a port that cannot be bound most likely means, and the flag that picks another."""
    return (f"is another `python -m serve` running? Stop it, or choose another port with {flag} "
            "(0: any free port); or is the host not local?")


def address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def read_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ServerStartError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def read_tls_files(cert: Path, key: Path, client_ca: Path | None) -> tuple[bytes, bytes, bytes | None]:
    """(certificate chain, private key, client CA or None) as PEM bytes, checked to hold what they should."""
    key_pem = read_file(key, "TLS key")
    cert_pem = read_file(cert, "TLS certificate")
    if b"PRIVATE KEY" not in key_pem:
        raise ServerStartError(f"{key} does not hold a PEM private key")
    if b"CERTIFICATE" not in cert_pem:
        raise ServerStartError(f"{cert} does not hold a PEM certificate")
    client_ca_pem = read_file(client_ca, "client CA certificate") if client_ca else None
    return cert_pem, key_pem, client_ca_pem


def write_port_file(path: Path, ports: list[int]) -> None:
    """The listening ports, one per line, written whole or not at all (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=f".{path.name}.") as f:
        f.write("".join(f"{port}\n" for port in ports))
    os.replace(f.name, path)
