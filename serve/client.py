"""A client of the digits API: the `DigitClient` class for programs, and a command line.

    python -m serve.client IMAGE... [--server HOST:PORT] [--model NAME] [--top-k K] [--min-confidence P]
    python -m serve.client --mnist-test 1000 [--batch-size 32] [--concurrency 4]
    python -m serve.client --list-models

Options for a protected server: --tls-ca (server CA), --tls-cert/--tls-key (client certificate for
mutual TLS), --token-file (bearer token). Exit codes: 0 every image answered; 1 the server refused
something (unknown model, bad image, wrong token, ...); 2 bad arguments or unreadable local files;
3 the server cannot be reached.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import grpc
import numpy as np

from contracts.data_dir import DATA_DIR_ENV, DATA_DIR_HELP, resolve_data_dir
from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc

DEFAULT_GRPC_PORT = 50051
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_GRPC_PORT}"
# How long a connection may take before the client checks whether the target speaks HTTP/1 instead.
HTTP_PROBE_AFTER_S = 0.5
MiB = 1024 * 1024
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


@dataclass(frozen=True)
class Candidate:
    digit: int
    label: str
    probability: float


# The verdicts as the HTTP API writes them; "" for a server too old to judge.
VERDICT_NAMES = {
    digits_pb2.VERDICT_UNSPECIFIED: "",
    digits_pb2.VERDICT_DIGIT: "digit",
    digits_pb2.VERDICT_UNSURE: "unsure",
    digits_pb2.VERDICT_NO_DIGIT: "no_digit",
}


@dataclass(frozen=True)
class Prediction:
    digit: int
    label: str
    probability: float
    top_k: list[Candidate]
    model: str = ""
    # The version of the model that classified the image.
    model_version: str = ""
    # "digit", "unsure" or "no_digit": whether `digit` can be trusted (see `reason`).
    verdict: str = ""
    reason: str = ""
    # The digit of a "digit", the two an "unsure" is between, most probable first.
    candidates: tuple[int, ...] = ()

    @classmethod
    def from_proto(cls, prediction: digits_pb2.Prediction, model: str = "", model_version: str = "") -> "Prediction":
        return cls(
            prediction.digit,
            prediction.label,
            prediction.probability,
            [Candidate(c.digit, c.label, c.probability) for c in prediction.top_k],
            model,
            model_version,
            VERDICT_NAMES.get(prediction.verdict, ""),
            prediction.reason,
            tuple(prediction.candidates),
        )

    @property
    def answer(self) -> str:
        """The answer in a few characters: "4", "4 or 9?", or "—" for no digit."""
        if self.verdict == "no_digit":
            return "—"
        if self.verdict == "unsure" and len(self.candidates) == 2:
            labels = {c.digit: c.label for c in self.top_k}
            return " or ".join(labels.get(c, str(c)) for c in self.candidates) + "?"
        return self.label


class ClientError(Exception):
    """The server refused a call, or could not be reached; `code` is the gRPC status (None: local)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, target: str, sent_token: bool = True) -> "ClientError":
        code, detail = error.code(), error.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return cls(f"cannot reach the server at {target}: {detail}", code)
        if code == grpc.StatusCode.UNAUTHENTICATED and not sent_token:
            return cls(f"{code.name}: {detail}; this server requires a bearer token: pass a file whose first line is "
                       "the token with --token-file FILE (DigitClient(token=...) in a program)", code)
        return cls(f"{code.name}: {detail}", code)


def speaks_http(target: str, timeout: float = 1.0) -> bool:
    """Whether an HTTP/1 server answers at host:port (a gRPC server, HTTP/2 only, does not answer HTTP/1)."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as connection:
            connection.sendall(f"HEAD / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            return connection.recv(8).startswith(b"HTTP/1.")
    except (OSError, ValueError):
        return False


def _image_message(image, already_mnist: bool = False) -> digits_pb2.Image:
    """A path, encoded bytes, or a uint8 (H, W) array -> the protobuf Image."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 2:
            raise ClientError(f"raw images must be uint8 arrays of shape (H, W), got {image.dtype} {image.shape}")
        height, width = image.shape
        raw = digits_pb2.RawPixels(
            pixels=np.ascontiguousarray(image).tobytes(), height=height, width=width, already_mnist=already_mnist
        )
        return digits_pb2.Image(raw=raw)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return digits_pb2.Image(encoded=bytes(image))
    path = Path(image)
    try:
        return digits_pb2.Image(encoded=path.read_bytes())
    except OSError as exc:
        raise ClientError(f"cannot read the image file {path}: {exc.strerror or exc}") from exc


class DigitClient:
    """Classify digits with a running server: `with DigitClient("host:port") as client: client.classify([...])`."""

    def __init__(
        self,
        target: str = DEFAULT_SERVER,
        *,
        tls: bool = False,
        tls_ca: str | Path | None = None,
        tls_client_cert: str | Path | None = None,
        tls_client_key: str | Path | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        timeout: float | None = 30.0,
        max_message_bytes: int = 64 * MiB,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._tls = bool(tls or tls_ca or tls_client_cert)
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if tls or tls_ca or tls_client_cert:
            if (tls_client_cert is None) != (tls_client_key is None):
                raise ClientError("a client certificate needs its key (tls_client_cert and tls_client_key)")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_optional(tls_ca, "TLS CA certificate"),
                private_key=_read_optional(tls_client_key, "TLS client key"),
                certificate_chain=_read_optional(tls_client_cert, "TLS client certificate"),
            )
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = digits_pb2_grpc.DigitClassifierStub(self._channel)

    def wait_until_ready(self, timeout: float = 5.0) -> None:
        """Raise ClientError (UNAVAILABLE) unless a connection to the server is up within `timeout`.

        A target that answers HTTP/1 (the server's HTTP port, where the page is) is said to be one at
        once: a gRPC channel to it would only wait out the timeout."""
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=min(timeout, HTTP_PROBE_AFTER_S))
            return
        except grpc.FutureTimeoutError:
            pass
        if not self._tls and speaks_http(self.target):
            ready.cancel()
            raise ClientError(
                f"{self.target} is an HTTP server (the port of the page and the HTTP API?); this client speaks gRPC: "
                f"pass the server's gRPC port, e.g. --server {self.target.rpartition(':')[0]}:{DEFAULT_GRPC_PORT} "
                "(python -m serve's --port), or send images over HTTP with curl",
                grpc.StatusCode.UNAVAILABLE,
            )
        try:
            ready.result(timeout=max(0.0, timeout - HTTP_PROBE_AFTER_S))
        except grpc.FutureTimeoutError:
            raise ClientError(
                f"cannot reach the server at {self.target} within {timeout:g} s (is it running? TLS on one side only?)",
                grpc.StatusCode.UNAVAILABLE,
            ) from None

    def _call(self, method, request, timeout: float | None = None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise ClientError.from_rpc(error, self.target, sent_token=self._metadata is not None) from None

    def classify(
        self, images: Sequence, *, model: str = "", top_k: int = 0, already_mnist: bool = False,
        timeout: float | None = None, model_version: str = "", min_confidence: float | None = None,
    ) -> list[Prediction]:
        """One prediction per image: file paths, encoded bytes, or uint8 (H, W) arrays (raw pixels).

        `model_version`: one of the versions the server serves ("" for the newest). `min_confidence`:
        the top probability below which a verdict is "unsure" (None: the model's own)."""
        request = digits_pb2.ClassifyRequest(
            model=model, top_k=top_k, images=[_image_message(image, already_mnist) for image in images],
            model_version=model_version, min_confidence=min_confidence,
        )
        response = self._call(self._stub.Classify, request, timeout)
        return [Prediction.from_proto(p, response.model, response.model_version) for p in response.predictions]

    def classify_raw(
        self, pixels_uint8: np.ndarray, *, already_mnist: bool = True, model: str = "", top_k: int = 0,
        timeout: float | None = None,
    ) -> list[Prediction]:
        """uint8 pixels (H, W) or (N, H, W); already_mnist: 28 x 28 MNIST-format digits, no conversion."""
        pixels_uint8 = np.asarray(pixels_uint8)
        if pixels_uint8.ndim == 2:
            pixels_uint8 = pixels_uint8[None]
        if pixels_uint8.ndim != 3:
            raise ClientError(f"raw pixels must be (H, W) or (N, H, W), got shape {pixels_uint8.shape}")
        return self.classify(list(pixels_uint8), model=model, top_k=top_k, already_mnist=already_mnist, timeout=timeout)

    def stream(
        self, images: Iterable, *, model: str = "", top_k: int = 0, already_mnist: bool = False,
        timeout: float | None = None, min_confidence: float | None = None,
    ) -> Iterator[Prediction | ClientError]:
        """Image after image on one stream; yields, in order, a Prediction or the ClientError of each."""

        def requests():
            for index, image in enumerate(images):
                yield digits_pb2.ClassifyStreamRequest(
                    id=str(index), model=model, top_k=top_k, image=_image_message(image, already_mnist),
                    min_confidence=min_confidence,
                )

        try:
            for answer in self._stub.ClassifyStream(requests(), timeout=timeout or self.timeout, metadata=self._metadata):
                if answer.WhichOneof("result") == "error":
                    yield ClientError(f"{answer.error.code}: {answer.error.message}", grpc.StatusCode[answer.error.code])
                else:
                    yield Prediction.from_proto(answer.prediction, answer.model)
        except grpc.RpcError as error:
            raise ClientError.from_rpc(error, self.target, sent_token=self._metadata is not None) from None

    def list_models(self) -> list[digits_pb2.ModelMetadata]:
        return list(self._call(self._stub.ListModels, digits_pb2.ListModelsRequest()).models)

    def model_metadata(self, name: str = "") -> digits_pb2.ModelMetadata:
        return self._call(self._stub.GetModelMetadata, digits_pb2.GetModelMetadataRequest(name=name))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "DigitClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _read_optional(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


# Command line


def _format_top_k(prediction: Prediction) -> str:
    return "  ".join(f"{c.label}:{c.probability:.3f}" for c in prediction.top_k)


def _format_verdict(prediction: Prediction) -> str:
    return prediction.verdict.replace("_", " ")


def classify_files(client: DigitClient, paths: Sequence[str], model: str, top_k: int, model_version: str = "",
                   min_confidence: float | None = None) -> int:
    """One request per file (so one bad file does not hide the others' answers); prints a table."""
    encoded = []
    for path in paths:
        try:
            encoded.append(Path(path).read_bytes())
        except OSError as exc:
            print(f"error: cannot read the image file {path}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    width = max(len("image"), *(len(p) for p in paths))
    print(f"{'image':<{width}}  {'answer':>8}  {'verdict':<8}  probability  top-k")
    status = EXIT_OK
    for path, data in zip(paths, encoded):
        try:
            (prediction,) = client.classify([data], model=model, top_k=top_k, model_version=model_version,
                                            min_confidence=min_confidence)
        except ClientError as exc:
            if exc.code == grpc.StatusCode.UNAVAILABLE:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_UNREACHABLE
            print(f"{path:<{width}}  error: {exc}")
            status = EXIT_REFUSED
            continue
        print(f"{path:<{width}}  {prediction.answer:>8}  {_format_verdict(prediction):<8}  {prediction.probability:11.3f}  "
              f"{_format_top_k(prediction)}  ({prediction.reason})")
    return status


def _progress(total: int):
    try:
        from tqdm import tqdm  # optional: not part of the serving install
    except ImportError:
        return None
    return tqdm(total=total, unit="img", desc="MNIST test", leave=False)


def mnist_test(
    client: DigitClient, data_dir: Path | None, count: int, model: str, batch_size: int, concurrency: int
) -> int:
    """Send `count` MNIST test digits (raw, already in MNIST format) and report accuracy and latency."""
    from contracts.mnist_idx import load_mnist_test

    try:
        images, labels = load_mnist_test(resolve_data_dir(data_dir))
    except FileNotFoundError as exc:
        print(f"error: {exc}; pass the data folder with --data-dir FOLDER or set {DATA_DIR_ENV}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    count = min(count, len(images))
    starts = list(range(0, count, batch_size))
    predicted = np.full(count, -1, dtype=np.int64)
    latencies_s = np.zeros(len(starts))
    progress = _progress(count)

    def send(index: int) -> None:
        start = starts[index]
        stop = min(start + batch_size, count)
        begun = time.perf_counter()
        answers = client.classify_raw(images[start:stop], already_mnist=True, model=model)
        latencies_s[index] = time.perf_counter() - begun
        predicted[start:stop] = [p.digit for p in answers]
        if progress is not None:
            progress.update(stop - start)

    began = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for _ in pool.map(send, range(len(starts))):
                pass
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.code == grpc.StatusCode.UNAVAILABLE else EXIT_REFUSED
    finally:
        if progress is not None:
            progress.close()
    elapsed = time.perf_counter() - began
    accuracy = float((predicted == labels[:count]).mean())
    p50, p95, p99 = np.percentile(latencies_s * 1000, [50, 95, 99])
    print(f"images      {count}  ({len(starts)} requests of up to {batch_size}, concurrency {concurrency})")
    print(f"accuracy    {accuracy:.4f}")
    print(f"latency ms  p50 {p50:.2f}  p95 {p95:.2f}  p99 {p99:.2f}  (per request)")
    print(f"throughput  {count / elapsed:.0f} images/s")
    return EXIT_OK


def list_models(client: DigitClient) -> int:
    models = client.list_models()
    print(f"{'model':<20} {'task':<15} {'provider':<24} inputs")
    for model in models:
        inputs = ", ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in model.inputs)
        print(f"{model.name:<20} {model.task:<15} {model.execution_provider:<24} {inputs}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serve.client",
        description="Classify digit images with a running server, over gRPC (python -m serve's --port, 50051 by default; "
                    "the HTTP port, 8000, serves the page and curl).",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files (PNG, JPEG, BMP, GIF, TIFF, WebP)")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="HOST:PORT of the server's gRPC port (default: %(default)s)")
    parser.add_argument("--model", default="", help="model name (default: the server's default classifier)")
    parser.add_argument("--model-version", default="", help="model version (default: the newest the server serves)")
    parser.add_argument("--top-k", type=int, default=3, help="candidates to show per image (default: %(default)s)")
    parser.add_argument("--min-confidence", type=float, metavar="P",
                        help="top probability below which an answer is 'unsure', in [0, 1] (default: the model's own)")
    parser.add_argument("--list-models", action="store_true", help="list the server's models and exit")
    parser.add_argument("--mnist-test", type=int, metavar="N", help="send N MNIST test digits; report accuracy and latency")
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    parser.add_argument("--batch-size", type=int, default=1, help="digits per request with --mnist-test (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight with --mnist-test (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, in seconds (default: %(default)s)")
    parser.add_argument("--connect-timeout", type=float, default=5.0, help="how long to wait for the server to answer, in seconds (default: %(default)s)")
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's CA certificates")
    parser.add_argument("--tls-ca", type=Path, help="PEM CA certificate that signed the server's (turns TLS on)")
    parser.add_argument("--tls-cert", type=Path, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM key of --tls-cert")
    parser.add_argument("--tls-server-name", help="name to check the server certificate against (default: from --server)")
    parser.add_argument("--token-file", type=Path, help="file whose first line is the bearer token")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.images and args.mnist_test is None and not args.list_models:
        parser.error("give IMAGE files, --mnist-test N or --list-models")
    if args.top_k < 0 or args.batch_size < 1 or args.concurrency < 1 or (args.mnist_test is not None and args.mnist_test < 1):
        parser.error("--top-k must be >= 0, --batch-size, --concurrency and --mnist-test >= 1")
    if args.min_confidence is not None and not 0.0 <= args.min_confidence <= 1.0:
        parser.error(f"--min-confidence must be a probability between 0 and 1, got {args.min_confidence}")
    token = None
    if args.token_file is not None:
        try:
            lines = [line.strip() for line in args.token_file.read_text().splitlines() if line.strip()]
        except OSError as exc:
            print(f"error: cannot read the token file {args.token_file}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        if not lines:
            print(f"error: the token file {args.token_file} is empty", file=sys.stderr)
            return EXIT_USAGE
        token = lines[0]
    try:
        client = DigitClient(
            args.server, tls=args.tls, tls_ca=args.tls_ca, tls_client_cert=args.tls_cert, tls_client_key=args.tls_key,
            tls_server_name=args.tls_server_name, token=token, timeout=args.timeout,
        )
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with client:
        try:
            client.wait_until_ready(args.connect_timeout)
            if args.list_models:
                return list_models(client)
            if args.mnist_test is not None:
                return mnist_test(client, args.data_dir, args.mnist_test, args.model, args.batch_size, args.concurrency)
            return classify_files(client, args.images, args.model, args.top_k, args.model_version, args.min_confidence)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE if exc.code == grpc.StatusCode.UNAVAILABLE else EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
