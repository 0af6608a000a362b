"""The server: one data plane behind two front doors (gRPC and HTTP), with auth, TLS and metrics.

`Server` is the asyncio object (start on ports, 0 for any free one; stop with a grace period);
`BackgroundServer` runs one on its own event-loop thread for tests and programs that are not
asyncio. `python -m serve` (serve/__main__.py) fills a ServerConfig from the command line. This
module only composes: the models and batchers live in serve/core, the protocols in serve/api.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from contracts.sessions import SERVING_INSTANCES, RuntimeOptions
from serve.api import http_digits, http_extensions, http_kserve, http_page
from serve.api.auth import BearerTokens, read_tokens
from serve.api.grpc_server import GrpcFrontDoor
from serve.api.http_server import (
    DEFAULT_HTTP_PORT,
    HttpFrontDoor,
    build_app,
    tls_context,
)
from serve.api.metrics import Metrics
from serve.api.network import ServerStartError, address, read_tls_files, write_port_file
from serve.core.admission import Admission
from serve.core.batching import BatchingOptions
from serve.core.control import LifecycleOptions
from serve.core.dataplane import DataPlane
from serve.core.digit_inputs import RequestLimits
from serve.core.lifecycle import ModelManager
from serve.core.model_sources import ModelFiles, ModelSource, RepositoryFolder
from serve.core.runner import ModelRunner

log = logging.getLogger(__name__)

DEFAULT_PORT = 50051
# On shutdown, how long the server goes on answering new calls (while health says NOT_SERVING) before
# it refuses them: long enough to work off the calls queued when the signal came, short beside a grace
# period (the lame duck ends sooner when calls stop coming).
LAME_DUCK_S = 1.0
MiB = 1024 * 1024
# Raised when the server cannot start as configured; the message says why.


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("digit-zoo")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class ServerConfig:
    model_paths: tuple[Path, ...] = ()
    # A model repository in Triton's layout (REPO/NAME/VERSION/model.onnx), instead of model_paths.
    model_repository: Path | None = None
    # What loads and unloads the repository's models while serving (control mode, polling).
    lifecycle: LifecycleOptions = field(default_factory=LifecycleOptions)
    # The digits API's model for requests that name none ("": the first digit classifier given;
    # serve.core.digit_classifiers).
    default_model: str = ""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # HTTP/REST (KServe v2, the digits API, the page): None turns it off, 0 picks a free port.
    http_port: int | None = DEFAULT_HTTP_PORT
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
    # Written with the bound gRPC port (and the HTTP port on a second line) once the server accepts
    # requests (useful with port 0).
    port_file: Path | None = None
    # Listen with SO_REUSEPORT, as one of the workers of a server that share its ports (serve/workers.py).
    share_ports: bool = False

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
        if self.model_repository is not None and self.model_paths:
            raise ValueError("serve either a --model-repository or --model files, not both")
        self.lifecycle.check_source(from_repository=self.model_repository is not None)

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


class Server:
    def __init__(self, config: ServerConfig, model_files: ModelFiles | None = None) -> None:
        """`model_files`: config.model_paths loaded already (else start loads them)."""
        self.config = config
        self.model_files = model_files
        self.metrics = Metrics()
        self.admission = Admission()
        self.models: ModelManager | None = None
        self.dataplane: DataPlane | None = None
        self.port: int | None = None
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self._grpc: GrpcFrontDoor | None = None
        self._http: HttpFrontDoor | None = None
        self._preprocess: ThreadPoolExecutor | None = None
        self._stopped = asyncio.Event()
        self._stopping = False

    @property
    def ready(self) -> bool:
        return self.dataplane is not None and self.dataplane.ready()

    @property
    def runners(self) -> dict[str, ModelRunner]:
        """The runner of each model's newest served version."""
        return {served.model.name: served.runner for served in self.models.newest()} if self.models else {}

    async def reload(self) -> None:
        """Re-read the model repository (what SIGHUP does)."""
        if self.models is not None:
            await self.models.reload()

    async def start(self) -> int:
        """Load the models (unless given), open both front doors; returns the bound gRPC port."""
        config = self.config
        source = self._model_source()
        tokens = None
        if config.token_file is not None:
            try:
                tokens = BearerTokens(read_tokens(config.token_file))
            except ValueError as exc:
                raise ServerStartError(str(exc)) from exc
        tls = read_tls_files(config.tls_cert, config.tls_key, config.tls_client_ca) if config.uses_tls else None

        models = self.models = ModelManager(source, config.runtime, config.batching, self.metrics, config.lifecycle,
                                            config.default_model, on_serving=self._model_serving)
        self._preprocess = ThreadPoolExecutor(config.worker_threads, thread_name_prefix="preprocess")
        dataplane = self.dataplane = DataPlane(models, config.limits, self._preprocess, package_version(),
                                               preprocess_threads=config.worker_threads)
        try:
            # Loaded and warmed up before either door opens: the first real call is not the slow one.
            await models.start()
            self.metrics.watch_statistics(models.all_statistics)
            self._grpc = GrpcFrontDoor(dataplane, self.metrics, self.admission, tokens, config.max_message_bytes,
                                       config.max_concurrent_rpcs, on_denied=self._count_denied,
                                       share_port=config.share_ports)
            self.port = await self._grpc.start(config.host, config.port, tls)
            if config.http_port is not None:
                self._http = HttpFrontDoor(build_app(
                    dataplane, self.metrics, self.admission, tokens, config.max_message_bytes,
                    [http_extensions.add_routes, http_kserve.add_routes, http_digits.add_routes, http_page.add_routes],
                ), share_port=config.share_ports)
                http_tls = tls_context(config.tls_cert, config.tls_key, config.tls_client_ca) if tls else None
                self.http_port = await self._http.start(config.host, config.http_port, http_tls)
            await self._grpc.set_serving([model.name for model in dataplane.models()])
            if config.metrics_port is not None:
                try:
                    self.metrics_port = self.metrics.serve_http(config.host, config.metrics_port)
                except OSError as exc:
                    raise ServerStartError(f"cannot serve metrics on port {config.metrics_port}: {exc}") from exc
        except BaseException:
            await self._release()
            raise
        dataplane.set_ready(True)
        if config.default_model and config.default_model not in [model.name for model in dataplane.models()]:
            log.warning("the default model %s (--default-model) is not being served: digits requests that name no "
                        "model get NOT_FOUND until it is loaded", config.default_model)

        if not config.uses_tls and not is_loopback(config.host):
            log.warning(
                "serving without TLS on %s: requests, images and any bearer token travel in clear text; "
                "pass --tls-cert and --tls-key", config.host,
            )
        served = ", ".join(f"{m.name} v{m.version} ({m.provider})" for m in dataplane.models()) or "none yet"
        http = f", HTTP on {address(config.host, self.http_port)}" if self.http_port is not None else ""
        log.info(
            "serving gRPC on %s%s (TLS %s, token %s): models %s; batching max %d images / %.1f ms",
            address(config.host, self.port), http,
            "mutual" if config.tls_client_ca else ("on" if config.uses_tls else "off"),
            "required" if config.token_file else "off",
            served, config.batching.max_batch_size, config.batching.max_delay_ms,
        )
        if config.port_file is not None:
            write_port_file(config.port_file, [self.port] + ([self.http_port] if self.http_port is not None else []))
        return self.port

    def _model_source(self) -> ModelSource:
        if self.config.model_repository is not None:
            return RepositoryFolder(self.config.model_repository)
        if self.model_files is None:
            self.model_files = ModelFiles.load(self.config.model_paths, self.config.runtime)
        return self.model_files

    async def _release(self) -> None:
        """Close what a server that failed to start had opened."""
        if self._grpc is not None:
            await self._grpc.stop(0)
        if self._http is not None:
            await self._http.stop()
        if self.models is not None:
            await self.models.close()
        if self._preprocess is not None:
            self._preprocess.shutdown(wait=False, cancel_futures=True)

    async def _model_serving(self, model_name: str, serving: bool) -> None:
        if self._grpc is not None:
            await self._grpc.set_model_serving(model_name, serving)

    def _count_denied(self, protocol: str, method: str, code: str) -> None:
        service, _, name = method.strip("/").partition("/")
        self.metrics.request_done(service, name, code, 0.0, protocol=protocol)

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight ones finish within `grace` seconds."""
        if self._stopping:
            if self._grpc is not None and grace == 0:
                await self._grpc.stop(0)  # a second, impatient stop: cut what is left
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.config.grace_s if grace is None else grace
        give_up = time.monotonic() + grace
        if self.dataplane is not None:
            self.dataplane.set_ready(False)
        try:
            if self._grpc is not None:
                await self._grpc.enter_graceful_shutdown()
            if self.models is not None:
                self.models.drain()
            # Drained by us first, so that gRPC core finds nothing unanswered to cancel (see Admission).
            lame_duck_s = min(LAME_DUCK_S, grace / 2)
            if grace > 0 and not await self.admission.drain(grace, lame_duck_s):
                log.warning("%d calls still in progress after the %.1f s grace period: cancelling them",
                            self.admission.active, grace)
            if self._http is not None:
                await self._http.stop()
            if self._grpc is not None:
                await self._grpc.stop(max(0.0, give_up - time.monotonic()))
            if self.models is not None:
                await self.models.close()
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

    def __init__(self, config: ServerConfig, model_files: ModelFiles | None = None) -> None:
        self.server = Server(config, model_files)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def target(self) -> str:
        return address(self.local_host, self.port)

    @property
    def local_host(self) -> str:
        host = self.server.config.host
        return "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host

    @property
    def http_url(self) -> str:
        """The HTTP front door's base URL, e.g. http://127.0.0.1:8000."""
        scheme = "https" if self.server.config.uses_tls else "http"
        return f"{scheme}://{address(self.local_host, self.server.http_port)}"

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
