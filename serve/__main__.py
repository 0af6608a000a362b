"""python -m serve --model-repository REPO | --model PATH.onnx [--model ...] : the digit-classification server.

Serves, on the gRPC port (50051): digits.v1.DigitClassifier (images in, digits out), the KServe v2
inference.GRPCInferenceService (tensors in, tensors out: Triton's and KServe's clients work
unchanged), grpc.health.v1.Health and server reflection; on the HTTP port (8000): KServe v2 over
REST, the digits API over HTTP and a page where a person draws a digit.

With --workers N (default: one per core, up to 8) N such servers share the ports under a supervisor
that restarts any that dies and serves their summed metrics (serve/workers.py); --workers 1 is one
process that does it all.

Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT: health turns NOT_SERVING; calls are still
answered for up to 1 s while clients move away, less once no call is in flight and none has come for
50 ms, then new ones are refused with UNAVAILABLE; calls
in flight get the grace period to finish); 2 when it cannot start (bad flags, a missing or corrupt
model file, --device cuda without a usable GPU, TLS files, port in use); 1 when a worker did not drain
cleanly.

SIGHUP re-reads the model repository: new and changed versions are loaded, warmed up and swapped
in while serving, versions the policy no longer wants are drained and unloaded (in explicit mode,
only the models loaded are re-read). With workers, the supervisor passes it on to every worker.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from contracts.images.preprocess import ImageLimits
from contracts.model_file import ModelLoadError, check_model_paths
from contracts.sessions import DEVICES, DeviceUnavailable, RuntimeOptions
from serve.api.http_server import DEFAULT_HTTP_PORT
from serve.core.batching import BatchingOptions
from serve.core.control import CONTROL_MODES, LifecycleOptions
from serve.core.digit_inputs import RequestLimits
from serve.core.model_sources import ModelFiles, RepositoryFolder
from serve.server import DEFAULT_PORT, MiB, Server, ServerConfig, ServerStartError
from serve.workers import (
    Supervisor,
    WorkersConfig,
    bind_to_supervisor,
    default_workers,
    worker_error_file,
)

log = logging.getLogger("serve")

EXIT_OK = 0
EXIT_START_FAILED = 2


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()
    batching, limits, image_limits = BatchingOptions(), RequestLimits(), ImageLimits()
    parser = argparse.ArgumentParser(
        prog="python -m serve",
        description="Serve exported digit classifiers (and any ONNX model) on ONNX Runtime: over gRPC (--port) for "
                    "python -m serve.client and KServe v2 clients, and over HTTP (--http-port) for curl, KServe v2 "
                    "REST and the drawing page at http://HOST:HTTP_PORT/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    models = parser.add_argument_group("models")
    models.add_argument("--model", dest="models", type=Path, action="append", default=[], metavar="PATH",
                        help="an .onnx file, or a folder of them (repeatable), served as version 1; the name comes "
                             "from the model card (the file stem for third-party models)")
    models.add_argument("--model-repository", type=Path, metavar="REPO",
                        help="a model repository in Triton's layout: REPO/NAME/VERSION/model.onnx, with an optional "
                             "REPO/NAME/config.pbtxt (version policy, max_batch_size, dynamic_batching, instance_group)")
    models.add_argument("--model-control-mode", choices=CONTROL_MODES, default="none",
                        help="none: load the repository at start-up (SIGHUP re-reads it); poll: also re-read it every "
                             "--repository-poll-secs; explicit: load only --load-model models, then what the repository "
                             "extension's load and unload ask for")
    models.add_argument("--repository-poll-secs", type=float, default=LifecycleOptions().poll_s,
                        help="seconds between two reads of the repository in poll mode")
    models.add_argument("--load-model", dest="load_models", action="append", default=[], metavar="NAME",
                        help="in explicit mode, a model to load at start-up (repeatable; '*' for every model)")
    models.add_argument("--default-model", default="", metavar="NAME",
                        help="the digits API's model for requests that name none (default: the first digit classifier "
                             "given: the --model files in order, a folder's by file name, or the repository's models "
                             "by name)")
    models.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when it really runs, else CPU; cuda: fail unless CUDA runs; cpu: never try CUDA")
    models.add_argument("--instances", type=int, default=defaults.runtime.instances,
                        help="batches of one model inferred at once, each in its own thread (Triton's instance count); "
                             "1 gives a lone large request every core, more keep the cores busy under load")
    models.add_argument("--intra-op-threads", type=int, default=0,
                        help="ONNX Runtime threads per inference call (0: one per physical core with one instance, "
                             "else the usable cores shared out between --instances)")

    network = parser.add_argument_group("network")
    network.add_argument("--host", default=defaults.host,
                         help="address to listen on (0.0.0.0 or :: for every interface: then use TLS)")
    network.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port: the digits API, KServe v2, health and reflection (0: any free port, see --port-file)")
    network.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                         help="HTTP/REST port: KServe v2, the digits API and the drawing page (0: any free port)")
    network.add_argument("--no-http", action="store_true", help="serve gRPC only")
    network.add_argument("--port-file", type=Path, default=None,
                         help="write the bound gRPC port (and the HTTP port on a second line) to this file once the "
                              "server accepts requests")
    network.add_argument("--max-message-mb", type=float, default=defaults.max_message_bytes / MiB,
                         help="largest request or response message, in MiB (larger ones get RESOURCE_EXHAUSTED)")
    network.add_argument("--max-concurrent-rpcs", type=int, default=defaults.max_concurrent_rpcs,
                         help="RPCs handled at once; beyond it calls get RESOURCE_EXHAUSTED (0: no limit)")
    network.add_argument("--grace-seconds", type=float, default=defaults.grace_s,
                         help="on SIGTERM/SIGINT, how long calls in flight may take to finish")

    batching_group = parser.add_argument_group("dynamic batching")
    batching_group.add_argument("--max-batch-size", type=int, default=batching.max_batch_size,
                                help="most images in one ONNX Runtime call (a larger single request still runs alone)")
    batching_group.add_argument("--max-delay-ms", type=float, default=batching.max_delay_ms,
                                help="longest wait of the oldest queued request for its batch to fill; a lone request after a "
                                     "batch of one does not wait (0: never wait, a batch is whatever queued while the "
                                     "previous one ran)")
    batching_group.add_argument("--max-queue-images", type=int, default=batching.max_queue_images,
                                help="images waiting for inference beyond which calls get UNAVAILABLE")
    batching_group.add_argument("--inline-max-ms", type=float, default=batching.inline_max_ms,
                                help="batch sizes whose inference recently took at most this long run on the event loop's "
                                     "thread, skipping two thread hand-offs (0: every batch runs in the inference thread)")
    batching_group.add_argument("--no-batching", action="store_true",
                                help="one ONNX Runtime call per request (same as --max-batch-size 1 --max-delay-ms 0)")
    batching_group.add_argument("--worker-threads", type=int, default=defaults.worker_threads,
                                help="threads that decode and convert encoded images")

    limits_group = parser.add_argument_group("request limits")
    limits_group.add_argument("--max-images-per-request", type=int, default=limits.max_images_per_request,
                              help="images (or v2 batch rows) per request")
    limits_group.add_argument("--max-image-bytes", type=int, default=image_limits.max_image_bytes,
                              help="encoded size of one image")
    limits_group.add_argument("--max-image-pixels", type=int, default=image_limits.max_image_pixels,
                              help="width x height of one image, checked before decoding (decompression bombs)")

    security = parser.add_argument_group("security")
    security.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) of the server: turns TLS on")
    security.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    security.add_argument("--tls-client-ca", type=Path,
                          help="PEM CA certificate(s): require client certificates signed by it (mutual TLS)")
    security.add_argument("--token-file", type=Path,
                          help="file of accepted bearer tokens, one per line: calls must send "
                               "`authorization: Bearer <token>` (health checks are exempt)")

    operations = parser.add_argument_group("operations")
    operations.add_argument("--workers", type=int, default=argparse.SUPPRESS,
                            help="server processes sharing the ports (SO_REUSEPORT), each with its share of the cores, "
                                 f"under a supervisor that restarts them; 1: this process serves alone (default: one "
                                 f"per core, up to 8, here {default_workers()}; 1 with --model-control-mode explicit)")
    # Set by the supervisor on the workers it starts: which worker this is, and whose.
    operations.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    operations.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)
    operations.add_argument("--metrics-port", type=int, default=0,
                            help="Prometheus metrics on http://HOST:PORT/metrics (0: off)")
    operations.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                            help="the least severe log lines written to stderr (default: %(default)s)")
    return parser


def worker_count(args: argparse.Namespace) -> int:
    """--workers, or its default; ValueError when it cannot work with the other flags."""
    lifecycle = lifecycle_from_args(args)
    workers = getattr(args, "workers", None)  # absent unless given: its default depends on the other flags
    if workers is None:
        return 1 if lifecycle.one_process_only else default_workers()
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    lifecycle.check_workers(workers)
    return workers


def lifecycle_from_args(args: argparse.Namespace) -> LifecycleOptions:
    return LifecycleOptions(args.model_control_mode, args.repository_poll_secs, tuple(args.load_models))


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The ServerConfig the flags describe (of one worker, with --workers); ValueError with the flag's problem."""
    workers = worker_count(args)
    if args.no_batching:
        batching = BatchingOptions.disabled(max_queue_images=args.max_queue_images, inline_max_ms=args.inline_max_ms)
    else:
        batching = BatchingOptions(args.max_batch_size, args.max_delay_ms, args.max_queue_images, args.inline_max_ms)
    if not args.models and args.model_repository is None:
        raise ValueError("name the models to serve: --model-repository REPO, or --model PATH.onnx (repeatable)")
    return ServerConfig(
        model_paths=tuple(args.models),
        model_repository=args.model_repository,
        lifecycle=lifecycle_from_args(args),
        default_model=args.default_model,
        host=args.host,
        port=args.port,
        http_port=None if args.no_http else args.http_port,
        runtime=RuntimeOptions(device=args.device, intra_op_threads=args.intra_op_threads, instances=args.instances,
                               workers=workers),
        batching=batching,
        limits=RequestLimits(
            max_images_per_request=args.max_images_per_request,
            image=ImageLimits(max_image_bytes=args.max_image_bytes, max_image_pixels=args.max_image_pixels),
        ),
        worker_threads=args.worker_threads,
        max_message_bytes=int(args.max_message_mb * MiB),
        max_concurrent_rpcs=args.max_concurrent_rpcs or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        token_file=args.token_file,
        metrics_port=args.metrics_port or None,
        grace_s=args.grace_seconds,
        port_file=args.port_file,
        share_ports=args.worker_of is not None,
    )


async def serve(config: ServerConfig, model_files: ModelFiles | None) -> int:
    server = Server(config, model_files)
    await server.start()
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals_seen = []

    def on_signal(signum: int) -> None:
        signals_seen.append(signum)
        if len(signals_seen) == 1:
            log.info("%s: draining (up to %.1f s for calls in flight)", signal.Signals(signum).name, config.grace_s)
            stop_requested.set()
        else:
            log.warning("%s again: cancelling the calls still in flight", signal.Signals(signum).name)
            loop.create_task(server.stop(0))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    reloads: set[asyncio.Task] = set()

    def on_reload_signal() -> None:
        log.info("SIGHUP: re-reading the model repository")
        task = loop.create_task(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_reload_signal)
    await stop_requested.wait()
    await server.stop(config.grace_s)
    # gRPC finishes an answered call's task a loop turn or two after the call ends; asyncio.run
    # would cancel such stragglers (and gRPC would log their CancelledError). Let them end.
    stragglers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    if stragglers:
        await asyncio.wait(stragglers, timeout=1.0)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    worker = f"worker {args.worker_index} " if args.worker_of is not None else ""
    logging.basicConfig(level=args.log_level, format=f"%(asctime)s %(levelname)s {worker}%(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2 with the usage line
    if args.worker_of is not None:
        return run_worker(config, args.worker_of)
    try:
        check_models_before_binding(config)
        if config.runtime.workers > 1:
            return Supervisor(WorkersConfig(
                count=config.runtime.workers, argv=tuple(argv), host=config.host, port=config.port, http_port=config.http_port,
                metrics_port=config.metrics_port, port_file=config.port_file, grace_s=config.grace_s,
            )).run()
        model_files = ModelFiles.load(config.model_paths, config.runtime) if config.model_paths else None
        return asyncio.run(serve(config, model_files))
    except (ModelLoadError, DeviceUnavailable, ServerStartError) as exc:
        print(f"python -m serve: error: {exc}", file=sys.stderr)
        return EXIT_START_FAILED


def check_models_before_binding(config: ServerConfig) -> None:
    """ModelLoadError for model files or a repository that cannot be served, found before any port is bound:
    a mistyped path must be reported as that even when the port is taken (the supervisor binds the ports
    before its workers load the models)."""
    if config.model_repository is not None:
        RepositoryFolder(config.model_repository).check()
    else:
        check_model_paths(config.model_paths)


def run_worker(config: ServerConfig, supervisor_pid: int) -> int:
    """One of the supervisor's workers: its start-up error goes to the supervisor, which says it once."""
    if not bind_to_supervisor(supervisor_pid):
        return EXIT_OK  # the supervisor is gone already: nothing to serve for
    try:
        model_files = ModelFiles.load(config.model_paths, config.runtime) if config.model_paths else None
        return asyncio.run(serve(config, model_files))
    except (ModelLoadError, DeviceUnavailable, ServerStartError) as exc:
        worker_error_file(config.port_file).write_text(str(exc))
        return EXIT_START_FAILED


if __name__ == "__main__":
    sys.exit(main())
