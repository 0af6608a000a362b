"""SIGTERM/SIGINT to a real server process: health turns NOT_SERVING, requests in flight are answered,
new ones are refused, and the process exits 0."""
from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serve_testing import offline_probabilities

from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from harness.processes import ServerProcess


class HealthWatch:
    """Collects the statuses a health Watch stream delivers; cancels it on NOT_SERVING."""

    def __init__(self, channel) -> None:
        self.statuses: list[int] = []
        self.serving = threading.Event()
        self.not_serving = threading.Event()
        self._call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self.statuses.append(response.status)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    self.serving.set()
                elif response.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    self.not_serving.set()
                    self._call.cancel()  # a well-behaved client stops watching a server that goes away
        except grpc.RpcError:
            pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_requests_in_flight_and_exits_0(signum, model_dir, mnist_test_set, tmp_path):
    images, _ = mnist_test_set
    # Batches wait up to 3 s to fill: requests are still in flight when the signal arrives.
    with ServerProcess([model_dir / "centroid.onnx"], tmp_path, flags=("--max-delay-ms", "3000"), grace_s=20,
                       metrics=True) as server:
        process = server.process
        with grpc.insecure_channel(server.target) as channel:
            watch = HealthWatch(channel)
            assert watch.serving.wait(10)
            stub = digits_pb2_grpc.DigitClassifierStub(channel)
            requests = [
                digits_pb2.ClassifyRequest(images=[digits_pb2.Image(raw=digits_pb2.RawPixels(
                    pixels=images[i].tobytes(), height=28, width=28, already_mnist=True))])
                for i in range(8)
            ]
            in_flight = [stub.Classify.future(request, timeout=30) for request in requests]
            give_up = time.monotonic() + 10  # they reach the server and wait in the batcher
            while (server.metric_total("serve_queue_images", model="centroid") < len(requests)
                   and not any(f.done() for f in in_flight) and time.monotonic() < give_up):
                time.sleep(0.01)
            assert not any(f.done() for f in in_flight)
            signalled_at = time.monotonic()
            process.send_signal(signum)
            answers = [f.result().predictions[0].digit for f in in_flight]
            assert time.monotonic() - signalled_at < 2.5, "draining should not wait out the batching delay"
            expected = offline_probabilities(model_dir / "centroid.onnx", images[:8]).argmax(axis=1)
            assert answers == expected.tolist()
            assert watch.not_serving.wait(10), f"health never turned NOT_SERVING: {watch.statuses}"
            assert process.wait(timeout=20) == 0
            with pytest.raises(grpc.RpcError) as refused:
                stub.Classify(requests[0], timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        log = server.log_text()
        assert f"{signal.Signals(signum).name}: draining" in log and "server stopped" in log
        assert "Traceback" not in log, log
