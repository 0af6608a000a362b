"""A bare gRPC server: the Classify method answered with canned bytes, nothing else.

    python -m harness.bare_server --port-file PATH

The ceiling of what Python gRPC (grpc.aio, one event loop) can do on this machine: no parsing, no
inference, no metrics, only the transport, answering the bytes the real server's answer holds (one
prediction for a one-image request, 256 for a 256-image request). The serve benchmark drives it exactly like the real server, in the same run, so that the
real server's per-call cost can be read against it.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import grpc

from contracts.generated.digits.v1 import digits_pb2

SERVICE, METHOD = "digits.v1.DigitClassifier", "Classify"


# Requests longer than this carry many images (one raw 28 x 28 image is under 850 bytes).
BULK_REQUEST_BYTES = 4096
BULK_IMAGES = 256


def canned_answer(images: int) -> bytes:
    """What the real server answers for `images` images with the default top-3."""
    candidates = [digits_pb2.Candidate(digit=d, label=str(d), probability=p) for d, p in ((7, 0.98), (2, 0.01), (3, 0.005))]
    prediction = digits_pb2.Prediction(digit=7, label="7", probability=0.98, top_k=candidates)
    return digits_pb2.ClassifyResponse(model="lenet", predictions=[prediction] * images).SerializeToString()


async def serve(port_file: Path, host: str) -> None:
    single, bulk = canned_answer(1), canned_answer(BULK_IMAGES)

    async def classify(request: bytes, context) -> bytes:
        # No parsing: the size of the request says which answer it gets (1 image, or 256).
        return bulk if len(request) > BULK_REQUEST_BYTES else single

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(classify)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    port_file.write_text(f"{port}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bare_server", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the bound port")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port_file, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
