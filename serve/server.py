"""The gRPC server: both APIs, health, reflection, auth, TLS and metrics around one set of models.

`Server` is the asyncio object (start on a port, 0 for any free one; stop with a grace period);
`BackgroundServer` runs one on its own event-loop thread for tests and programs that are not
asyncio. `python -m serve` (serve/__main__.py) fills a ServerConfig from the command line.

Why grpc.aio: one event loop thread answers every RPC at a fraction of a thread pool's per-call
cost in Python, while ONNX Runtime (which releases the GIL) runs in one inference thread per model
and image decoding in a small worker pool.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from serve.api import grpc_digits as digits_servicer
from serve.api import grpc_kserve as kserve_servicer
from serve.api.auth import BearerTokenInterceptor, read_tokens
from serve.core.batching import BatchingOptions
from serve.core.digit_inputs import RequestLimits
from serve.generated._pool import POOL as STUBS_POOL
from serve.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from serve.generated.inference import grpc_service_pb2, grpc_service_pb2_grpc
from serve.core.runner import ModelRunner
from serve.api.metrics import Metrics
from serve.core.repository import ModelRepository
from serve.core.admission import Admission
from serve.core.sessions import SERVING_INSTANCES, RuntimeOptions

log = logging.getLogger(__name__)

DEFAULT_PORT = 50051
# On shutdown, how long the server goes on answering new calls (while health says NOT_SERVING) before
# it refuses them: long enough to work off the calls queued when the signal came, short beside a grace
# period (the lame duck ends sooner when calls stop coming).
LAME_DUCK_S = 1.0
MiB = 1024 * 1024
SERVICE_NAMES = (
    digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"].full_name,
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)


def reflection_pool():
    """Our stubs' private descriptor pool, with the health and reflection protos added to it.

    Reflection answers from one pool; ours holds the digits and v2 protos (kept out of the default
    pool, see serve.generate_stubs), the other two live in the default pool and are copied over.
    """
    for module in (health_pb2, reflection_pb2):
        try:
            STUBS_POOL.FindFileByName(module.DESCRIPTOR.name)
        except KeyError:
            STUBS_POOL.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return STUBS_POOL


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("digit-zoo")
    except PackageNotFoundError:
        return "0+unknown"


class ServerStartError(RuntimeError):
    """The server cannot start as configured (bad TLS files, port in use, ...); the message says why."""


@dataclass(frozen=True)
class ServerConfig:
    model_paths: tuple[Path, ...] = ()
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    runtime: RuntimeOptions = field(default_factory=lambda: RuntimeOptions(instances=SERVING_INSTANCES))
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    limits: RequestLimits = field(default_factory=RequestLimits)
    # Threads that decode and convert encoded images (the event loop never does).
    worker_threads: int = 2
    max_message_bytes: int = 64 * MiB
    # RPCs handled at once; more are refused with RESOURCE_EXHAUSTED. None: no limit.
    max_concurrent_rpcs: int | None = 4096
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    token_file: Path | None = None
    # Prometheus port: None turns the metrics endpoint off, 0 picks a free port.
    metrics_port: int | None = None
    grace_s: float = 10.0
    # Written with the bound port once the server accepts requests (useful with port 0).
    port_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("mutual TLS (--tls-client-ca) needs the server's own --tls-cert and --tls-key")
        if self.worker_threads < 1:
            raise ValueError(f"worker_threads must be >= 1, got {self.worker_threads}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be at least 1024, got {self.max_message_bytes}")
        if self.grace_s < 0:
            raise ValueError(f"grace period must be >= 0 seconds, got {self.grace_s}")

    @property
    def uses_tls(self) -> bool:
        return self.tls_cert is not None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ServerStartError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    key = _read(config.tls_key, "TLS key")
    cert = _read(config.tls_cert, "TLS certificate")
    if b"PRIVATE KEY" not in key:
        raise ServerStartError(f"{config.tls_key} does not hold a PEM private key")
    if b"CERTIFICATE" not in cert:
        raise ServerStartError(f"{config.tls_cert} does not hold a PEM certificate")
    client_ca = _read(config.tls_client_ca, "client CA certificate") if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _write_port_file(path: Path, port: int) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=f".{path.name}.") as f:
        f.write(f"{port}\n")
    os.replace(f.name, path)


class Server:
    def __init__(self, config: ServerConfig, repository: ModelRepository | None = None) -> None:
        self.config = config
        self.repository = repository
        self.metrics = Metrics()
        self.admission = Admission()
        self.runners: dict[str, ModelRunner] = {}
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._preprocess: ThreadPoolExecutor | None = None
        self._ready = False
        self._stopped = asyncio.Event()
        self._stopping = False

    @property
    def ready(self) -> bool:
        return self._ready

    def _grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            # A second server on a port in use must fail, not silently share it.
            ("grpc.so_reuseport", 0),
        ]

    async def start(self) -> int:
        """Load the models (unless given), bind, start; returns the bound port."""
        config = self.config
        if self.repository is None:
            self.repository = ModelRepository.load(config.model_paths, config.runtime)
        repository = self.repository
        interceptors = []
        if config.token_file is not None:
            try:
                tokens = read_tokens(config.token_file)
            except ValueError as exc:
                raise ServerStartError(str(exc)) from exc
            interceptors.append(
                BearerTokenInterceptor(tokens, on_denied=lambda method, code: self._count_denied(method, code))
            )
        credentials = server_credentials(config) if config.uses_tls else None

        self.runners = {model.name: ModelRunner(model, config.batching, self.metrics, config.runtime.instances) for model in repository}
        self._preprocess = ThreadPoolExecutor(config.worker_threads, thread_name_prefix="preprocess")
        self._grpc = grpc.aio.server(
            interceptors=interceptors,
            options=self._grpc_options(),
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        digits_pb2_grpc.add_DigitClassifierServicer_to_server(
            digits_servicer.DigitsServicer(
                repository, self.runners, config.limits, self._preprocess, config.batching.max_batch_size, self.metrics,
                self.admission,
            ),
            self._grpc,
        )
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            kserve_servicer.KServeServicer(
                repository, self.runners, config.limits.max_images_per_request, package_version(),
                is_ready=lambda: self._ready, metrics=self.metrics, admission=self.admission,
            ),
            self._grpc,
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable_server_reflection(SERVICE_NAMES, self._grpc, pool=reflection_pool())

        address = _address(config.host, config.port)
        try:
            if credentials is not None:
                port = self._grpc.add_secure_port(address, credentials)
            else:
                port = self._grpc.add_insecure_port(address)
        except RuntimeError as exc:
            await self._release()
            raise ServerStartError(f"cannot listen on {address}: {exc} (is the port in use, or the host not local?)") from exc
        self.port = port
        await self._grpc.start()

        serving = health_pb2.HealthCheckResponse.SERVING
        for name in ("", *SERVICE_NAMES[:2], *repository.names()):
            await self._health.set(name, serving)
        if config.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve_http(config.host, config.metrics_port)
            except OSError as exc:
                await self._grpc.stop(0)
                await self._release()
                raise ServerStartError(f"cannot serve metrics on port {config.metrics_port}: {exc}") from exc
        self._ready = True

        if not config.uses_tls and not is_loopback(config.host):
            log.warning(
                "serving without TLS on %s: requests, images and any bearer token travel in clear text; "
                "pass --tls-cert and --tls-key", config.host,
            )
        models = ", ".join(f"{m.name} ({m.provider})" for m in repository)
        log.info(
            "serving on %s (TLS %s, token %s): models %s; batching max %d images / %.1f ms",
            _address(config.host, port),
            "mutual" if config.tls_client_ca else ("on" if config.uses_tls else "off"),
            "required" if config.token_file else "off",
            models, config.batching.max_batch_size, config.batching.max_delay_ms,
        )
        if config.port_file is not None:
            _write_port_file(config.port_file, port)
        return port

    async def _release(self) -> None:
        """Stop the inference and preprocessing threads of a server that failed to start."""
        for runner in self.runners.values():
            await runner.close()
        if self._preprocess is not None:
            self._preprocess.shutdown(wait=False, cancel_futures=True)

    def _count_denied(self, method: str, code: str) -> None:
        service, _, name = method.strip("/").partition("/")
        self.metrics.request_done(service, name, code, 0.0)

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new RPCs, let in-flight ones finish within `grace` seconds."""
        if self._stopping:
            if self._grpc is not None and grace == 0:
                await self._grpc.stop(0)  # a second, impatient stop: cut what is left
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.config.grace_s if grace is None else grace
        give_up = time.monotonic() + grace
        self._ready = False
        try:
            if self._health is not None:
                await self._health.enter_graceful_shutdown()
            for runner in self.runners.values():
                runner.drain()
            # Drained by us first, so that gRPC core finds nothing unanswered to cancel (see Admission).
            lame_duck_s = min(LAME_DUCK_S, grace / 2)
            if grace > 0 and not await self.admission.drain(grace, lame_duck_s):
                log.warning("%d calls still in progress after the %.1f s grace period: cancelling them",
                            self.admission.active, grace)
            if self._grpc is not None:
                await self._grpc.stop(max(0.0, give_up - time.monotonic()))
            for runner in self.runners.values():
                await runner.close()
            if self._preprocess is not None:
                self._preprocess.shutdown(wait=False, cancel_futures=True)
            self.metrics.stop_http()
        finally:
            self._stopped.set()
        log.info("server stopped")

    async def wait_for_termination(self) -> None:
        await self._stopped.wait()


class BackgroundServer:
    """A Server on its own event-loop thread: `with BackgroundServer(config) as server: ... server.target`."""

    def __init__(self, config: ServerConfig, repository: ModelRepository | None = None) -> None:
        self.server = Server(config, repository)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def target(self) -> str:
        host = self.server.config.host
        return _address("127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host, self.port)

    def start(self, timeout: float = 60.0) -> "BackgroundServer":
        self._thread = threading.Thread(target=self._run, name="grpc-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise ServerStartError(f"the server did not start within {timeout:.0f} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def call(self, coroutine, timeout: float = 60.0):
        """Run a coroutine on the server's loop (where its state lives) and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, grace: float | None = None, timeout: float = 60.0) -> None:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return
        try:
            self.call(self.server.stop(grace), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop(grace=1.0)
