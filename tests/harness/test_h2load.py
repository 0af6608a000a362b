"""h2load as the benchmark's load: it ignores grpc-status, so the answers' bytes must tell OK from not OK."""
from __future__ import annotations

import time

import pytest

from contracts.generated.digits.v1 import digits_pb2
from harness import h2load
from harness.bare_server import BULK_IMAGES, canned_answer
from harness.processes import ServerProcess

CLASSIFY = "/digits.v1.DigitClassifier/Classify"

needs_h2load = pytest.mark.skipif(not h2load.installed(), reason="h2load is not installed (apt-get install nghttp2-client)")


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    with ServerProcess.program(["harness.bare_server"], tmp_path_factory.mktemp("bare"), "bare") as server:
        yield server


def run(server, method: str, ok_answer_bytes: int, workdir, seconds: float = 0.5):
    message = digits_pb2.ClassifyRequest(images=[digits_pb2.Image(encoded=b"x")]).SerializeToString()
    started = time.time()
    load = h2load.H2load(server.target, method, message, concurrency=4, duration_s=seconds, workdir=workdir)
    return load.result(ok_answer_bytes, 1, (started, started + seconds + 5), cpu_s=0.0)


@needs_h2load
def test_answers_of_the_size_a_real_client_got_are_ok(bare_server, tmp_path):
    message = digits_pb2.ClassifyRequest(images=[digits_pb2.Image(encoded=b"x")]).SerializeToString()
    ok_bytes = h2load.answer_bytes(bare_server.target, CLASSIFY, message)
    assert ok_bytes == len(h2load.grpc_frame(canned_answer(1)))
    result = run(bare_server, CLASSIFY, ok_bytes, tmp_path)
    assert not result.setup_error, result.setup_error
    assert result.answered > 10 and result.errors == {}
    assert len(result.latencies_s) == result.answered and (result.latencies_s > 0).all()


@needs_h2load
def test_an_error_status_or_an_answer_of_another_size_is_counted_as_an_error(bare_server, tmp_path):
    # An unknown method: HTTP 200 for h2load, UNIMPLEMENTED in the trailers, no DATA.
    refused = run(bare_server, "/digits.v1.DigitClassifier/Nothing", len(h2load.grpc_frame(canned_answer(1))), tmp_path)
    assert sum(refused.errors.values()) > 10 and refused.first_error
    # Answers that are not the ones expected (here: expected 256 predictions, got 1).
    wrong = run(bare_server, CLASSIFY, len(h2load.grpc_frame(canned_answer(BULK_IMAGES))), tmp_path)
    assert wrong.errors.get("not OK or wrong size (answer bytes)", 0) > 10


def test_the_calls_in_flight_are_shared_out_over_at_most_16_connections():
    assert h2load.connections_for(1) == (1, 1)
    assert h2load.connections_for(2) == (2, 1)
    assert h2load.connections_for(64) == (16, 4)
    assert h2load.connections_for(100) == (16, 7)
    assert h2load.grpc_frame(b"abc") == b"\0\0\0\0\3abc"
