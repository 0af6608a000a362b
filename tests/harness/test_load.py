"""harness.load: load processes that set up, start together, count only their window, and report why
they could not run. Against the bare gRPC server (canned answers, no model), so that the figures are
the load generator's own; the mixed traffic is exercised by the reliability runs' tests."""
from __future__ import annotations

import time

import pytest

from contracts.generated.digits.v1 import digits_pb2
from harness.load import (
    CHECK_CLASSIFY,
    CHECK_STREAM,
    UNARY,
    LoadError,
    LoadGenerators,
    LoadSpec,
    MixedTraffic,
    ReplayTraffic,
)
from harness.processes import ServerProcess

CLASSIFY = "/digits.v1.DigitClassifier/Classify"


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    with ServerProcess.program(["harness.bare_server"], tmp_path_factory.mktemp("bare"), "bare") as server:
        yield server


@pytest.fixture(scope="module")
def generators():
    with LoadGenerators(2) as running:
        yield running


def classify_load(target: str, check: str = CHECK_CLASSIFY, worker: int = 0) -> LoadSpec:
    request = digits_pb2.ClassifyRequest(images=[digits_pb2.Image(encoded=b"x")]).SerializeToString()
    traffic = ReplayTraffic(method=CLASSIFY, kind=UNARY, requests=(request,), images_per_request=1, check=check)
    return LoadSpec(target=target, traffic=traffic, concurrency=4, duration_s=0.5, warmup_s=0.2, worker=worker)


def test_processes_start_together_and_count_only_their_window(bare_server, generators):
    started = []

    def during(start_at: float) -> None:
        started.append((start_at, time.time()))

    results = generators.run([classify_load(bare_server.target, worker=i) for i in range(2)], during=during)
    (start_at, told_at), = started
    assert told_at <= start_at, "during() runs before the common start"
    for worker, result in enumerate(results):
        assert result.worker == worker and not result.setup_error
        assert result.answered > 10 and result.errors == {} and result.images == result.answered
        assert len(result.latencies_s) == result.answered and (result.latencies_s > 0).all()
        assert (result.started_at, result.ended_at) == (start_at + 0.2, start_at + 0.7), "the window after warm-up"
        assert result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]


def test_answers_of_the_wrong_kind_are_errors_with_the_first_one_described(bare_server, generators):
    (result,) = generators.run([classify_load(bare_server.target, check=CHECK_STREAM)])
    assert result.answered == 0 and result.errors.get("WRONG_ANSWER", 0) > 10
    assert result.first_error.startswith("WRONG_ANSWER")
    assert result.outcomes[CLASSIFY] == {"answered": 0, "wrong": result.errors["WRONG_ANSWER"], "unexpected": 0}


def test_a_process_that_cannot_set_up_fails_the_load_with_its_reason_and_the_others_stand_down(
        bare_server, generators, tmp_path):
    missing = tmp_path / "missing.onnx"
    mixed = MixedTraffic(model_path=str(missing), data_dir=str(tmp_path), mix={"classify_raw": 1})
    broken = LoadSpec(target=bare_server.target, traffic=mixed, concurrency=1, duration_s=0.5, worker=1)
    with pytest.raises(LoadError, match="missing.onnx"):
        generators.run([classify_load(bare_server.target), broken])
    (result,) = generators.run([classify_load(bare_server.target)])
    assert result.answered > 10, "the processes serve the next load as before"


def test_more_specs_than_processes_are_refused(generators):
    with pytest.raises(ValueError, match="3 load specs for 2"):
        generators.run([classify_load("127.0.0.1:1", worker=i) for i in range(3)])
