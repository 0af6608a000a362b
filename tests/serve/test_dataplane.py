"""The data plane without a network: served models and runners are fakes, time is a fake clock.

What the DataPlane itself does is under test: health, the descriptions it builds, decoding and
checking v2 inputs before a runner sees them, bringing images to the model's pixels and ranking its
probabilities, holding the served version for the whole call, counting each call in its version's
statistics, and raising StatusErrors that name the problem.
"""
from __future__ import annotations

import asyncio
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from onnx_models import random_linear_classifier, third_party_classifier
from PIL import Image

from contracts.errors import InvalidInput, ModelNotFound, StatusError, TooLarge
from contracts.model_config import PLATFORM
from contracts.model_file import Model, load_model
from contracts.sessions import RuntimeOptions
from contracts.verdicts import Verdict
from serve.core.answers import EXTENSIONS, SERVER_NAME
from serve.core.batching import BatchingOptions
from serve.core.dataplane import (
    DataPlane,
    InferRequest,
    ManagedModels,
    ServedModelVersion,
)
from serve.core.digit_inputs import EncodedImage, RawImage, RequestLimits
from serve.core.errors import DeadlineExceeded
from serve.core.lifecycle import ModelManager
from serve.core.model_index import IndexEntry
from serve.core.model_sources import ModelFiles
from serve.core.served_models import ServedVersion
from serve.core.statistics import VersionStatistics
from serve.core.tensors import InferInput

LABELS = [str(digit) for digit in range(10)]
LIMITS = RequestLimits(max_images_per_request=4)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """Answers each call with `outputs(feeds)`, taking `seconds` of the fake clock; records what it got."""

    def __init__(self, clock: FakeClock, outputs, seconds: float = 0.25) -> None:
        self.clock, self.outputs, self.seconds = clock, outputs, seconds
        self.calls: list[tuple[dict[str, np.ndarray], float | None]] = []
        self.failure: StatusError | None = None

    async def infer(self, feeds, deadline=None):
        self.calls.append((feeds, deadline))
        self.clock.now += self.seconds
        if self.failure is not None:
            raise self.failure
        return self.outputs(feeds)


class FakeVersion:
    """One served version; counts the calls holding it."""

    def __init__(self, model: Model, runner: FakeRunner, max_batch_size: int = 8) -> None:
        self.model, self.runner, self.max_batch_size = model, runner, max_batch_size
        self.statistics = VersionStatistics(model.name, model.version)
        self.leases = 0

    def __enter__(self) -> "FakeVersion":
        self.leases += 1
        return self

    def __exit__(self, *exc_info) -> None:
        self.leases -= 1


class FakeModels:
    """The served models, as serve.core.lifecycle's ModelManager answers the data plane."""

    def __init__(self, *versions: FakeVersion) -> None:
        self.by_name: dict[str, list[FakeVersion]] = {}
        for version in versions:
            self.by_name.setdefault(version.model.name, []).append(version)
        self.loads: list[tuple[str, str]] = []

    def served(self, name: str, version: str = "") -> FakeVersion:
        versions = self.by_name.get(name)
        if not versions:
            raise ModelNotFound(f"unknown model {name!r}")
        if not version:
            return versions[-1]
        for served in versions:
            if served.model.version == version:
                return served
        raise ModelNotFound(f"model {name!r} has no version {version!r} being served")

    def classifier(self, name: str, version: str = "") -> FakeVersion:
        if not name:
            name = next(v[-1].model.name for v in self.by_name.values() if v[-1].model.classifies_images)
        served = self.served(name, version)
        if not served.model.classifies_images:
            raise InvalidInput(f"model {name!r} is not a digit classifier")
        return served

    def newest(self) -> list[FakeVersion]:
        return [versions[-1] for versions in self.by_name.values()]

    def versions(self, name: str) -> list[str]:
        self.served(name)
        return [served.model.version for served in self.by_name[name]]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        ready = [IndexEntry(name, "1", "READY") for name in self.by_name]
        return ready if ready_only else [*ready, IndexEntry("gone", "", "UNAVAILABLE")]

    def statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        return [self.served(name, version).statistics]

    async def request_load(self, name: str) -> None:
        self.loads.append(("load", name))

    async def request_unload(self, name: str) -> None:
        self.loads.append(("unload", name))


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Model]:
    folder = tmp_path_factory.mktemp("dataplane-models")
    cpu = RuntimeOptions(device="cpu")
    return {
        "digits": load_model(random_linear_classifier(folder / "digits.onnx", name="digits"), cpu),
        "digits32": load_model(random_linear_classifier(folder / "digits32.onnx", name="digits32", input_size=32), cpu),
        "thirdparty": load_model(third_party_classifier(folder / "thirdparty.onnx"), cpu),
    }


class RecordingPool(ThreadPoolExecutor):
    """The image-decoding pool, counting the trips made to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="preprocess")
        self.trips = 0

    def submit(self, *args, **kwargs):
        self.trips += 1
        return super().submit(*args, **kwargs)


@pytest.fixture
def pool():
    with RecordingPool() as executor:
        yield executor


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def ranked_probabilities(feeds) -> list[np.ndarray]:
    """Per image: digit 7 first, then 2 and 5 tied (the lower class ranks first), the rest lower."""
    count = len(next(iter(feeds.values())))
    row = np.full(10, 0.01, np.float32)
    row[[7, 2, 5]] = 0.6, 0.15, 0.15
    return [np.zeros((count, 10), np.float32), np.tile(row, (count, 1))]


def scores_and_labels(feeds) -> list[np.ndarray]:
    x = feeds["input_1"]
    return [x[:, :3] * 2, np.arange(len(x), dtype=np.int64)]


@pytest.fixture
def served(models, clock) -> dict[str, FakeVersion]:
    return {
        "digits": FakeVersion(models["digits"], FakeRunner(clock, ranked_probabilities), max_batch_size=64),
        "digits32": FakeVersion(models["digits32"], FakeRunner(clock, ranked_probabilities), max_batch_size=1),
        "thirdparty": FakeVersion(models["thirdparty"], FakeRunner(clock, scores_and_labels), max_batch_size=16),
    }


@pytest.fixture
def dataplane(served, pool, clock) -> DataPlane:
    return DataPlane(FakeModels(*served.values()), LIMITS, pool, "1.2.3", preprocess_threads=1, clock=clock)


def mnist_digit(value: int = 200) -> RawImage:
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 12:16] = value
    return RawImage(pixels.tobytes(), 28, 28, already_mnist=True)


def png_digit() -> EncodedImage:
    pixels = np.full((56, 56), 255, np.uint8)
    pixels[10:46, 24:32] = 0  # dark ink on white paper
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return EncodedImage(buffer.getvalue())


# Health and descriptions

def test_live_always_and_ready_once_told(dataplane):
    assert dataplane.live() and not dataplane.ready()
    assert not dataplane.model_ready("digits")
    dataplane.set_ready(True)
    assert dataplane.ready() and dataplane.model_ready("digits") and dataplane.model_ready("digits", "1")
    assert not dataplane.model_ready("nope") and not dataplane.model_ready("digits", "9")


def test_server_metadata(dataplane):
    metadata = dataplane.server_metadata()
    assert (metadata.name, metadata.version, metadata.extensions) == (SERVER_NAME, "1.2.3", EXTENSIONS)


def test_model_descriptions_carry_the_served_max_batch_size(dataplane, models):
    default = dataplane.model_description("")
    assert (default.name, default.max_batch_size, default.labels) == ("digits", 64, tuple(LABELS))
    assert default.classifies_images and default.input_size == (28, 28)
    assert (default.execution_provider, default.file_sha256) == (models["digits"].provider, models["digits"].file_sha256)
    third_party = dataplane.model_description("thirdparty")
    assert (third_party.task, third_party.classifies_images) == ("unknown", False)
    assert (third_party.labels, third_party.input_size) == ((), ())
    assert (third_party.test_accuracy, third_party.dataset, third_party.max_batch_size) == (None, "", 16)
    assert [d.name for d in dataplane.model_descriptions()] == ["digits", "digits32", "thirdparty"]
    assert [d.max_batch_size for d in dataplane.model_descriptions()] == [64, 1, 16]
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        dataplane.model_description("nope")


def test_inference_metadata(dataplane, models):
    metadata = dataplane.inference_metadata("thirdparty")
    assert (metadata.name, metadata.versions, metadata.platform) == ("thirdparty", ("1",), PLATFORM)
    assert [(s.name, s.datatype, s.shape) for s in metadata.inputs] == [("input_1", "FP32", (-1, 4))]
    assert [s.name for s in metadata.outputs] == ["scores", "label"]
    assert metadata.execution_provider == models["thirdparty"].provider
    with pytest.raises(ModelNotFound):
        dataplane.inference_metadata("thirdparty", "2")


# v2 inference

def raw_input(values: np.ndarray, name: str = "input_1", datatype: str = "FP32") -> InferInput:
    return InferInput(name, datatype, list(values.shape), raw=values.astype("<f4").tobytes())


def test_infer_decodes_the_inputs_and_answers_the_outputs_asked_for(dataplane, served, clock):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = run(dataplane.infer(InferRequest("thirdparty", [raw_input(x)], id="call-1", outputs=["label", "scores"]),
                                 deadline=123.0))
    (feeds, deadline), = served["thirdparty"].runner.calls
    np.testing.assert_array_equal(feeds["input_1"], x)
    assert deadline == 123.0
    assert (result.model.name, result.id) == ("thirdparty", "call-1")
    assert [spec.name for spec, _ in result.outputs] == ["label", "scores"]
    np.testing.assert_array_equal(result.outputs[1][1], x[:, :3] * 2)
    statistics = served["thirdparty"].statistics
    assert (statistics.success.count, statistics.success.ns, statistics.fail.count) == (1, 250_000_000, 0)
    assert served["thirdparty"].leases == 0


def test_infer_answers_every_output_when_none_is_named(dataplane):
    result = run(dataplane.infer(InferRequest("thirdparty", [raw_input(np.zeros((1, 4), np.float32))])))
    assert [spec.name for spec, _ in result.outputs] == ["scores", "label"]


@pytest.mark.parametrize("inputs, error, detail", [
    ([raw_input(np.zeros((1, 5), np.float32))], InvalidInput, "axis 1 must be 4"),
    ([raw_input(np.zeros((1, 4), np.float32), name="x")], InvalidInput, "has no input 'x'"),
    ([raw_input(np.zeros((1, 4), np.float32), datatype="INT32")], InvalidInput, "INT32"),
    ([], InvalidInput, "needs inputs ['input_1']"),
    ([raw_input(np.zeros((5, 4), np.float32))], TooLarge, "limit is 4"),
])
def test_bad_inputs_never_reach_the_runner_and_count_as_failures(dataplane, served, inputs, error, detail):
    with pytest.raises(error) as raised:
        run(dataplane.infer(InferRequest("thirdparty", inputs)))
    assert detail in str(raised.value)
    assert not served["thirdparty"].runner.calls
    statistics = served["thirdparty"].statistics
    assert (statistics.success.count, statistics.fail.count) == (0, 1)
    assert served["thirdparty"].leases == 0


def test_an_unknown_output_or_model_is_refused(dataplane):
    with pytest.raises(InvalidInput, match="has no output 'nope'; its outputs are"):
        run(dataplane.infer(InferRequest("thirdparty", [raw_input(np.zeros((1, 4), np.float32))], outputs=["nope"])))
    with pytest.raises(ModelNotFound) as raised:
        run(dataplane.infer(InferRequest("nope", [])))
    assert raised.value.status == "NOT_FOUND"


def test_a_runner_failure_reaches_the_caller_and_is_timed(dataplane, served, clock):
    runner = served["thirdparty"].runner
    runner.failure = DeadlineExceeded("the deadline passed")
    with pytest.raises(DeadlineExceeded) as raised:
        run(dataplane.infer(InferRequest("thirdparty", [raw_input(np.zeros((1, 4), np.float32))])))
    assert raised.value.status == "DEADLINE_EXCEEDED"
    statistics = served["thirdparty"].statistics
    assert (statistics.fail.count, statistics.fail.ns, statistics.success.count) == (1, 250_000_000, 0)


def test_a_call_holds_its_version_until_it_is_answered(dataplane, served):
    version = served["thirdparty"]
    during: list[int] = []
    answer = version.runner.outputs

    def outputs(feeds):
        during.append(version.leases)
        return answer(feeds)

    version.runner.outputs = outputs
    run(dataplane.infer(InferRequest("thirdparty", [raw_input(np.zeros((1, 4), np.float32))])))
    assert during == [1] and version.leases == 0


# Digit classification

def test_classify_ranks_each_image_and_keeps_what_the_model_received(dataplane, served, pool):
    classification = run(dataplane.classify("", [mnist_digit(), mnist_digit(100)], requested_top_k=0, deadline=7.0))
    assert classification.model.name == "digits" and classification.labels == LABELS
    assert classification.classes == [[7, 2, 5], [7, 2, 5]]
    assert classification.top_probabilities == [[float(np.float32(p)) for p in (0.6, 0.15, 0.15)]] * 2
    assert classification.probabilities.shape == (2, 10)
    (feeds, deadline), = served["digits"].runner.calls
    pixels = feeds[served["digits"].model.card.input_name]
    assert pixels.shape == (2, 1, 28, 28) and pixels.dtype == np.float32 and deadline == 7.0
    np.testing.assert_array_equal(classification.pixels, pixels)
    assert pixels[0].max() == pytest.approx(200 / 255) and pixels[1].max() == pytest.approx(100 / 255)
    assert served["digits"].statistics.success.count == 1 and served["digits"].leases == 0
    assert pool.trips == 0  # already in the digit format: converted on the loop, no trip to the pool


@pytest.mark.parametrize("requested, expected", [(1, [7]), (3, [7, 2, 5]), (12, [7, 2, 5, 0, 1, 3, 4, 6, 8, 9])])
def test_top_k_is_what_was_asked_for_up_to_every_label(dataplane, requested, expected):
    assert run(dataplane.classify("digits", [mnist_digit()], requested_top_k=requested)).classes == [expected]


def test_images_are_brought_to_the_models_input_size_in_the_pool(dataplane, served, pool):
    classification = run(dataplane.classify("digits32", [png_digit(), mnist_digit()], model_version="1"))
    assert classification.pixels.shape == (2, 1, 32, 32) and classification.model.name == "digits32"
    assert classification.pixels[0].max() > 0.5  # the dark ink on paper became a light digit
    assert pool.trips == 1
    (feeds, _), = served["digits32"].runner.calls
    np.testing.assert_array_equal(feeds[served["digits32"].model.card.input_name], classification.pixels)


def test_each_image_gets_a_verdict_from_the_probabilities_and_its_ink(dataplane):
    # The fake model answers 7 at 0.6 for any picture; the card has no thresholds, so the defaults judge.
    classification = run(dataplane.classify("digits", [mnist_digit(), mnist_digit(0)]))
    verdicts = classification.verdicts
    assert [verdicts[i].verdict for i in range(2)] == [Verdict.DIGIT, Verdict.NO_DIGIT]
    assert verdicts.candidates == [(7,), ()] and "no ink" in verdicts.reasons[1]


def test_a_callers_min_confidence_judges_instead_of_the_cards(dataplane):
    classification = run(dataplane.classify("digits", [mnist_digit()], min_confidence=0.7))
    assert (classification.verdicts[0].verdict, classification.verdicts.candidates) == (Verdict.UNSURE, [(7, 2)])


@pytest.mark.parametrize("bad", [-0.5, 1.01, float("nan")])
def test_a_bad_min_confidence_is_refused_before_the_model_runs(dataplane, served, bad):
    with pytest.raises(InvalidInput, match="min_confidence must be a probability between 0 and 1"):
        run(dataplane.classify("digits", [mnist_digit()], min_confidence=bad))
    assert not served["digits"].runner.calls


def test_classify_refusals(dataplane, served):
    with pytest.raises(InvalidInput, match="carries no images"):
        run(dataplane.classify("digits", []))
    with pytest.raises(TooLarge, match="limit is 4 per request"):
        run(dataplane.classify("digits", [mnist_digit()] * 5))
    with pytest.raises(InvalidInput, match="not a PNG"):
        run(dataplane.classify("digits", [EncodedImage(b"not an image")]))
    with pytest.raises(InvalidInput, match="not a digit classifier"):
        run(dataplane.classify("thirdparty", [mnist_digit()]))
    with pytest.raises(ModelNotFound):
        run(dataplane.classify("digits", [mnist_digit()], model_version="2"))
    assert not served["digits"].runner.calls
    assert (served["digits"].statistics.fail.count, served["digits"].leases) == (3, 0)


# The repository and statistics extensions, and the pool

def test_repository_and_statistics_are_the_served_models(dataplane, served):
    assert [entry.name for entry in dataplane.repository_index(ready_only=True)] == ["digits", "digits32", "thirdparty"]
    assert dataplane.repository_index()[-1] == IndexEntry("gone", "", "UNAVAILABLE")
    run(dataplane.load_model("digits"))
    run(dataplane.unload_model("digits32"))
    assert dataplane.manager.loads == [("load", "digits"), ("unload", "digits32")]
    assert dataplane.statistics("thirdparty") == [served["thirdparty"].statistics]


def test_run_in_pool_runs_off_the_event_loop(dataplane):
    def add(a, b):
        return threading.current_thread().name, a + b

    async def scenario():
        return threading.current_thread().name, await dataplane.run_in_pool(add, 2, 3)

    loop_thread, (pool_thread, total) = run(scenario())
    assert total == 5 and pool_thread.startswith("preprocess") and pool_thread != loop_thread


def test_the_servers_model_manager_offers_what_the_data_plane_asks():
    manager = ModelManager(ModelFiles([]), RuntimeOptions(device="cpu"), BatchingOptions())
    for protocol, implementation in ((ManagedModels, manager), (ServedModelVersion, ServedVersion)):
        asked = [name for name in vars(protocol) if not name.startswith("_") or name in ("__enter__", "__exit__")]
        missing = [name for name in asked if not hasattr(implementation, name)]
        assert asked and not missing, f"{type(implementation).__name__ if implementation is manager else implementation.__name__} lacks {missing}"
