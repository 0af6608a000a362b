"""A naive KServe v2 server: what forty lines of textbook gRPC Python give, as the serve benchmark's peer.

    python -m bench._naive_server --model PATH.onnx --port-file PATH [--device cpu|cuda]

grpc's synchronous server with a 16-thread pool; ModelInfer is np.frombuffer -> session.run (two
intra-op threads) -> the raw outputs. No batching, no asyncio, no validation beyond what numpy and
ONNX Runtime do, no metrics. The benchmark starts and drives it exactly like `python -m serve`, so
that what our server adds over the obvious server is measured in the same run.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from contracts.generated.inference import grpc_service_pb2 as pb
from contracts.generated.inference import grpc_service_pb2_grpc as pb_grpc

THREADS = 16
INTRA_OP_THREADS = 2
MiB = 1024 * 1024


class NaiveInference(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model_path: Path, device: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = INTRA_OP_THREADS
        providers = ["CPUExecutionProvider"] if device == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def ModelInfer(self, request, context):
        tensor = request.inputs[0]
        pixels = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(tuple(tensor.shape))
        outputs = self.session.run(None, {self.input_name: pixels})
        response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        for meta, value in zip(self.session.get_outputs(), outputs):
            response.outputs.add(name=meta.name, datatype="FP32", shape=list(value.shape))
            response.raw_output_contents.append(np.ascontiguousarray(value, dtype=np.float32).tobytes())
        return response


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._naive_server", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True, help="where to write the bound port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    server = grpc.server(ThreadPoolExecutor(THREADS), options=[
        ("grpc.max_receive_message_length", 64 * MiB), ("grpc.max_send_message_length", 64 * MiB)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(NaiveInference(args.model, args.device), server)
    port = server.add_insecure_port(f"{args.host}:0")
    server.start()
    args.port_file.write_text(f"{port}\n")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop(1.0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
