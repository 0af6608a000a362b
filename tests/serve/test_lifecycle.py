"""The model lifecycle: a versioned repository, versions swapped in under load, refused versions, statistics.

The versions of a model here are tagged classifiers (tests/serve/onnx_models.py): version N always
answers digit N, so every answer says which version computed it, independently of the
response's model_version field (which must agree).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx_models import (
    fails_when_run_model,
    random_linear_classifier,
    tagged_classifier,
    third_party_classifier,
)
from serve_testing import REPO_ROOT

from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.model_file import ModelLoadError, load_model
from contracts.sessions import RuntimeOptions
from serve.client import DigitClient
from serve.core.batching import BatchingOptions
from serve.core.control import LifecycleOptions
from serve.core.warmup import warm_up
from serve.server import BackgroundServer, ServerConfig

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

PIXELS = np.zeros((1, 1, 28, 28), np.float32)
OTHER_TAG = 7
# Calls the steady load makes on each version before the next swap.
CALLS_PER_VERSION = 40


def version_file(repo: Path, name: str, version: int) -> Path:
    folder = repo / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "model.onnx"


def add_version(repo: Path, name: str, version: int, tag: int | None = None) -> Path:
    return tagged_classifier(version_file(repo, name, version), version if tag is None else tag, name=name)


def repository_server(repo: Path, mode: str = "explicit", **lifecycle) -> BackgroundServer:
    if mode == "explicit":
        lifecycle.setdefault("startup_models", ("*",))
    return BackgroundServer(ServerConfig(
        model_repository=repo,
        lifecycle=LifecycleOptions(mode, **lifecycle),
        port=0,
        http_port=0,
        metrics_port=0,
        runtime=RuntimeOptions(device="cpu", instances=1),
        batching=BatchingOptions(max_batch_size=64, max_delay_ms=1.0),
        grace_s=2.0,
    ))


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Whether `condition()` came true within `timeout` seconds (checked every `interval`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def queued_images(server: BackgroundServer, model: str) -> float:
    """Images waiting in the model's batching queue, as the metrics endpoint reports them."""
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics").read().decode()
    for line in metrics.splitlines():
        if line.startswith(f'serve_queue_images{{model="{model}"}} '):
            return float(line.split()[-1])
    return 0.0


def index(client) -> dict[tuple[str, str], str]:
    """(name, version) -> state, from either client's repository index."""
    entries = client.get_model_repository_index()
    if not isinstance(entries, list):  # the gRPC client answers a message
        entries = [{"name": e.name, "version": e.version, "state": e.state} for e in entries.models]
    return {(e["name"], e.get("version", "")): e["state"] for e in entries}


def model_health(target: str, model: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=model)).status


def v2_answer(client, model: str = "digits", version: str = "") -> tuple[str, int]:
    inputs = [grpcclient.InferInput("pixels", list(PIXELS.shape), "FP32")]
    inputs[0].set_data_from_numpy(PIXELS)
    result = client.infer(model, inputs, model_version=version, outputs=[grpcclient.InferRequestedOutput("probabilities")])
    return result.get_response().model_version, int(result.as_numpy("probabilities").argmax())


def blank_png() -> bytes:
    from PIL import Image

    encoded = io.BytesIO()
    Image.new("L", (28, 28)).save(encoded, format="PNG")
    return encoded.getvalue()


def http_v2_answer(client, model: str = "digits", version: str = "") -> tuple[str, int]:
    inputs = [httpclient.InferInput("pixels", list(PIXELS.shape), "FP32")]
    inputs[0].set_data_from_numpy(PIXELS)
    result = client.infer(model, inputs, model_version=version, outputs=[httpclient.InferRequestedOutput("probabilities")])
    return result.get_response()["model_version"], int(result.as_numpy("probabilities").argmax())


def http_digits_answer(http_url: str, model: str, png: bytes, version: str = "") -> tuple[str, int]:
    path = f"/digits/v1/models/{model}" + (f"/versions/{version}" if version else "") + "/classify"
    request = urllib.request.Request(http_url + path, data=png, headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        document = json.loads(answer.read())
    return document["model_version"], document["predictions"][0]["digit"]


class Load:
    """Steady concurrent calls to one model over both protocols: v2 and the digits API, on gRPC and HTTP."""

    def __init__(self, target: str, http_url: str, model: str, threads_per_api: int = 1) -> None:
        self.target, self.http_url, self.model = target, http_url, model
        self.calls: list[tuple[float, float, str, int]] = []  # sent, answered, model_version, digit
        self.errors: list[str] = []
        self._answered = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=caller, daemon=True)
                         for caller in (self._v2, self._digits, self._http_v2, self._http_digits)
                         for _ in range(threads_per_api)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def wait_for_calls(self, count: int, timeout: float = 30.0) -> None:
        """Return once `count` more calls have been answered (or any failed)."""
        with self._answered:
            target = len(self.calls) + count
            answered = self._answered.wait_for(lambda: len(self.calls) >= target or self.errors, timeout)
        assert answered and not self.errors, f"{len(self.calls)} calls answered, errors: {self.errors[:3]}"

    def _record(self, call) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                version, digit = call()
            except Exception as exc:  # every failure is a finding: kept, reported by the test
                with self._answered:
                    self.errors.append(repr(exc)[:300])
                    self._answered.notify_all()
                continue
            with self._answered:
                self.calls.append((sent, time.monotonic(), version, digit))
                self._answered.notify_all()

    def _v2(self) -> None:
        client = grpcclient.InferenceServerClient(url=self.target)
        try:
            self._record(lambda: v2_answer(client, self.model))
        finally:
            client.close()

    def _http_v2(self) -> None:
        client = httpclient.InferenceServerClient(url=self.http_url.removeprefix("http://"))
        try:
            self._record(lambda: http_v2_answer(client, self.model))
        finally:
            client.close()

    def _http_digits(self) -> None:
        png = blank_png()
        self._record(lambda: http_digits_answer(self.http_url, self.model, png))

    def _digits(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = digits_pb2_grpc.DigitClassifierStub(channel)
            # An encoded image: decoded on the server's worker threads between the version lookup
            # and the queue, the widest window a swap can fall into.
            request = digits_pb2.ClassifyRequest(model=self.model, images=[digits_pb2.Image(encoded=blank_png())])

            def classify():
                response = stub.Classify(request, timeout=10)
                return response.model_version, response.predictions[0].digit

            self._record(classify)


def test_versions_replaced_and_a_model_reloaded_under_load_lose_no_call(tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, "digits", 1)
    add_version(repo, "other", 1, tag=OTHER_TAG)
    with repository_server(repo) as server:
        triton = grpcclient.InferenceServerClient(url=server.target)
        triton_http = httpclient.InferenceServerClient(url=server.http_url.removeprefix("http://"))
        assert index(triton) == {("digits", "1"): "READY", ("other", "1"): "READY"}
        swaps: list[tuple[int, float, float]] = []  # version, load asked, load answered
        with Load(server.target, server.http_url, "digits") as load:
            load.wait_for_calls(CALLS_PER_VERSION)
            for version in (2, 3, 4):
                add_version(repo, "digits", version)
                asked = time.monotonic()
                (triton if version % 2 else triton_http).load_model("digits")
                swaps.append((version, asked, time.monotonic()))
                states = index(triton_http if version % 2 else triton)
                assert states[("digits", str(version))] == "READY"
                assert all(states[("digits", str(old))] == "UNAVAILABLE" for old in range(1, version))
                load.wait_for_calls(CALLS_PER_VERSION)
            # The other model goes (test_queued_calls_finish_on_the_version_they_were_queued_on
            # shows its queue is drained first) and comes back, while the first stays under load.
            assert v2_answer(triton, "other") == ("1", OTHER_TAG)
            triton_http.unload_model("other")
            assert index(triton)[("other", "1")] == "UNAVAILABLE"
            assert model_health(server.target, "other") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert not triton.is_model_ready("other")
            with pytest.raises(InferenceServerException, match="not being served"):
                v2_answer(triton, "other")
            triton.load_model("other")
            assert index(triton_http)[("other", "1")] == "READY"
            assert model_health(server.target, "other") == health_pb2.HealthCheckResponse.SERVING
            assert v2_answer(triton, "other") == ("1", OTHER_TAG)
            load.wait_for_calls(CALLS_PER_VERSION)
        assert load.errors == []
        calls = load.calls
        assert len(calls) > 100, f"only {len(calls)} calls: the load was not steady"
        for sent, answered, version, digit in calls:
            # Which version computed the answer is in the answer itself; the reply's field agrees.
            assert int(version) == digit
            for new, asked, done in swaps:
                if sent > done:  # asked after the swap: the new version (or a later one)
                    assert digit >= new, (sent, done, digit)
                if answered < asked:  # answered before the load began: an older one
                    assert digit < new, (answered, asked, digit)
        answered_by = {digit for *_, digit in calls}
        assert answered_by == {1, 2, 3, 4}, f"every version took calls while it was current: {answered_by}"
        triton.close()
        triton_http.close()


def _truncated(repo: Path, version: int) -> None:
    path = add_version(repo, "digits", version)
    path.write_bytes(path.read_bytes()[:200])


def _wrong_input_shape(repo: Path, version: int) -> None:
    tagged_classifier(version_file(repo, "digits", version), version, name="digits", input_size=32)


def _missing_card(repo: Path, version: int) -> None:
    third_party_classifier(version_file(repo, "digits", version))


def _card_of_another_model(repo: Path, version: int) -> None:
    tagged_classifier(version_file(repo, "digits", version), version, name="lenet")


@pytest.mark.parametrize("corrupt, expected", [
    (_truncated, "not a loadable ONNX model"),
    (_wrong_input_shape, "cannot replace version 1"),
    (_missing_card, "carries a model card and version 2 does not"),
    (_card_of_another_model, "its card names the model 'lenet'"),
])
def test_a_corrupt_version_is_refused_and_the_old_one_keeps_serving(tmp_path, corrupt, expected):
    repo = tmp_path / "repo"
    add_version(repo, "digits", 1)
    with repository_server(repo) as server:
        triton = grpcclient.InferenceServerClient(url=server.target)
        corrupt(repo, 2)
        with pytest.raises(InferenceServerException) as refused:
            triton.load_model("digits")
        assert expected in refused.value.message() and "Versions serving now: 1" in refused.value.message()
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        entries = {(e.name, e.version): e for e in triton.get_model_repository_index().models}
        assert entries[("digits", "1")].state == "READY"
        assert entries[("digits", "2")].state == "UNAVAILABLE" and expected in entries[("digits", "2")].reason
        assert v2_answer(triton) == ("1", 1)
        assert triton.get_model_metadata("digits", as_json=True)["versions"] == ["1"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics").read().decode()
        assert 'serve_model_load_failures_total{model="digits",version="2"} 1.0' in metrics
        # Fixed in place, the version loads on the next request.
        shutil.rmtree(repo / "digits" / "2")
        add_version(repo, "digits", 2)
        triton.load_model("digits")
        assert v2_answer(triton) == ("2", 2)
        triton.close()


def test_a_version_that_fails_its_warm_up_is_refused(tmp_path):
    model = load_model(fails_when_run_model(tmp_path / "broken.onnx"), RuntimeOptions(device="cpu"))
    with pytest.raises(ModelLoadError, match=r"failed its warm-up on blank inputs of its declared shape \(x \[1, 4\]\)"):
        warm_up(model, 8)
    assert warm_up(load_model(third_party_classifier(tmp_path / "fine.onnx"), RuntimeOptions(device="cpu")), 8) == 4


def test_a_repository_that_cannot_be_served_stops_start_up(tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, "digits", 1)
    _truncated(repo, 1)
    with pytest.raises(ModelLoadError, match="model digits: version 1: model file .* is not a loadable ONNX model"):
        repository_server(repo, mode="none").start()


def test_queued_calls_finish_on_the_version_they_were_queued_on(tmp_path):
    """A swap, then an unload, while calls wait in a queue: the version they wait for answers them."""
    repo = tmp_path / "repo"
    add_version(repo, "digits", 1)
    (repo / "digits" / "config.pbtxt").write_text("dynamic_batching { max_queue_delay_microseconds: 1000000 }\n")
    with repository_server(repo) as server:
        clients = [grpcclient.InferenceServerClient(url=server.target) for _ in range(4)]
        answers: list = []
        queued = [threading.Thread(target=lambda c=c: answers.append(v2_answer(c))) for c in clients[:3]]
        for thread in queued:
            thread.start()
        # They wait in version 1's queue for its 1 s batching delay.
        assert wait_until(lambda: queued_images(server, "digits") == 3), "the calls did not queue"
        add_version(repo, "digits", 2)
        loaded_at = time.monotonic()
        clients[3].load_model("digits")
        # Version 2 serves now. No lone call checks it: its batcher would then send the next lone
        # calls at once instead of queueing them; the three calls below are its first.
        assert clients[3].get_model_metadata("digits", as_json=True)["versions"] == ["2"]
        for thread in queued:
            thread.join(10)
        assert answers == [("1", 1)] * 3
        assert time.monotonic() - loaded_at < 5
        answers.clear()
        queued = [threading.Thread(target=lambda c=c: answers.append(v2_answer(c))) for c in clients[:3]]
        for thread in queued:
            thread.start()
        assert wait_until(lambda: queued_images(server, "digits") == 3), "the calls did not queue on version 2"
        clients[3].unload_model("digits")  # drains the queue: the calls in it are answered, not dropped
        assert index(clients[3]) == {("digits", "1"): "UNAVAILABLE", ("digits", "2"): "UNAVAILABLE"}
        for thread in queued:
            thread.join(10)
        assert answers == [("2", 2)] * 3
        for client in clients:
            client.close()


def test_version_policies_metadata_and_named_versions(tmp_path):
    repo = tmp_path / "repo"
    for version in (1, 2, 3):
        add_version(repo, "digits", version)
    (repo / "digits" / "config.pbtxt").write_text("version_policy { latest { num_versions: 2 } }\n")
    with repository_server(repo) as server:
        triton = grpcclient.InferenceServerClient(url=server.target)
        assert triton.get_model_metadata("digits", as_json=True)["versions"] == ["2", "3"]
        assert v2_answer(triton) == ("3", 3) and v2_answer(triton, version="2") == ("2", 2)
        with pytest.raises(InferenceServerException, match="no version '1' being served"):
            v2_answer(triton, version="1")
        with grpc.insecure_channel(server.target) as channel:
            stub = digits_pb2_grpc.DigitClassifierStub(channel)
            image = digits_pb2.Image(raw=digits_pb2.RawPixels(pixels=bytes(784), height=28, width=28, already_mnist=True))
            answer = stub.Classify(digits_pb2.ClassifyRequest(images=[image], model_version="2"))
            assert (answer.model, answer.model_version, answer.predictions[0].digit) == ("digits", "2", 2)
            with pytest.raises(grpc.RpcError) as missing:
                stub.Classify(digits_pb2.ClassifyRequest(model="digits", images=[image], model_version="9"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        # The same over HTTP: v2 metadata and inference, and the digits API by path, query and JSON.
        triton_http = httpclient.InferenceServerClient(url=server.http_url.removeprefix("http://"))
        assert triton_http.get_model_metadata("digits")["versions"] == ["2", "3"]
        assert http_v2_answer(triton_http) == ("3", 3) and http_v2_answer(triton_http, version="2") == ("2", 2)
        triton_http.close()
        png = blank_png()
        assert http_digits_answer(server.http_url, "digits", png) == ("3", 3)
        assert http_digits_answer(server.http_url, "digits", png, version="2") == ("2", 2)
        by_json = urllib.request.Request(
            server.http_url + "/digits/v1/classify?model_version=2", headers={"Content-Type": "application/json"},
            data=json.dumps({"model": "digits", "images": [{"pixels": [0] * 784, "height": 28, "width": 28}]}).encode())
        with urllib.request.urlopen(by_json, timeout=10) as answer:
            assert json.loads(answer.read())["model_version"] == "2"
        with pytest.raises(urllib.error.HTTPError) as missing:
            http_digits_answer(server.http_url, "digits", png, version="9")
        assert missing.value.code == 404
        with DigitClient(server.target) as client:
            (newest,) = client.classify_raw(np.zeros((28, 28), np.uint8))
            (named,) = client.classify([np.zeros((28, 28), np.uint8)], model_version="2", already_mnist=True)
        assert (newest.model_version, newest.digit, named.model_version, named.digit) == ("3", 3, "2", 2)
        # Specific versions, then a roll back: the newest version's folder goes, the one before serves.
        (repo / "digits" / "config.pbtxt").write_text("version_policy { specific { versions: [1, 3] } }\n")
        triton.load_model("digits")
        assert triton.get_model_metadata("digits", as_json=True)["versions"] == ["1", "3"]
        (repo / "digits" / "config.pbtxt").unlink()
        shutil.rmtree(repo / "digits" / "3")
        triton.load_model("digits")
        assert triton.get_model_metadata("digits", as_json=True)["versions"] == ["2"]
        assert v2_answer(triton) == ("2", 2)
        triton.close()


def test_statistics_extension_and_triton_metrics_agree(tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, "digits", 1)
    third_party_classifier(version_file(repo, "thirdparty", 1))
    with repository_server(repo) as server:
        triton = grpcclient.InferenceServerClient(url=server.target)
        triton_http = httpclient.InferenceServerClient(url=server.http_url.removeprefix("http://"))
        for _ in range(5):
            v2_answer(triton)
        wrong = [grpcclient.InferInput("pixels", [1, 1, 28, 28], "FP64")]
        wrong[0].set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float64))
        with pytest.raises(InferenceServerException):
            triton.infer("digits", wrong)
        over_grpc = triton.get_inference_statistics("digits", as_json=True)["model_stats"]
        over_http = triton_http.get_inference_statistics("digits")["model_stats"]
        assert [s["name"] for s in over_grpc] == [s["name"] for s in over_http] == ["digits"]
        grpc_stats, http_stats = over_grpc[0], over_http[0]
        assert http_stats["version"] == "1"
        inference = http_stats["inference_stats"]
        assert inference["success"]["count"] == 5 and inference["fail"]["count"] == 1
        assert inference["queue"]["count"] == inference["compute_infer"]["count"] == 5
        assert inference["compute_infer"]["ns"] > 0 and inference["success"]["ns"] >= inference["compute_infer"]["ns"]
        assert http_stats["inference_count"] == 5 and 1 <= http_stats["execution_count"] <= 5
        assert sum(int(b["compute_infer"]["count"]) for b in http_stats["batch_stats"]) == http_stats["execution_count"]
        assert int(grpc_stats["inference_stats"]["success"]["count"]) == 5  # the gRPC JSON writes uint64 as strings
        assert {s["name"] for s in triton_http.get_inference_statistics()["model_stats"]} == {"digits", "thirdparty"}
        assert triton_http.get_inference_statistics("digits", "1")["model_stats"][0]["version"] == "1"
        with pytest.raises(InferenceServerException, match="no version '7'"):
            triton_http.get_inference_statistics("digits", "7")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics").read().decode()
        expected = {
            "nv_inference_request_success": 5, "nv_inference_request_failure": 1, "nv_inference_count": 5,
            "nv_inference_exec_count": http_stats["execution_count"],
            "nv_inference_compute_infer_duration_us": inference["compute_infer"]["ns"] // 1000,
            "nv_inference_queue_duration_us": inference["queue"]["ns"] // 1000,
            "nv_inference_request_duration_us": (inference["success"]["ns"] + inference["fail"]["ns"]) // 1000,
        }
        for name, value in expected.items():
            assert f'{name}{{model="digits",version="1"}} {float(value)}' in metrics, name
        assert 'nv_inference_request_success{model="thirdparty",version="1"} 0.0' in metrics
        triton.close()
        triton_http.close()


def test_control_modes(tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, "digits", 1)
    add_version(repo, "other", 1, tag=OTHER_TAG)
    with repository_server(repo, startup_models=("digits",)) as explicit:
        triton = grpcclient.InferenceServerClient(url=explicit.target)
        states = index(triton)
        assert states == {("digits", "1"): "READY", ("other", ""): "UNAVAILABLE"}
        ready_only = urllib.request.Request(f"{explicit.http_url}/v2/repository/index", data=b'{"ready": true}')
        assert json.loads(urllib.request.urlopen(ready_only).read()) == [{"name": "digits", "version": "1", "state": "READY"}]
        with pytest.raises(InferenceServerException) as unknown:
            triton.load_model("nope")
        assert unknown.value.status() == "StatusCode.NOT_FOUND" and "has no model 'nope'" in unknown.value.message()
        triton.close()
    with repository_server(repo, mode="poll", poll_s=0.2) as polling:
        triton = grpcclient.InferenceServerClient(url=polling.target)
        with pytest.raises(InferenceServerException) as refused:
            triton.unload_model("digits")
        assert refused.value.status() == "StatusCode.FAILED_PRECONDITION" and "--model-control-mode poll" in refused.value.message()
        add_version(repo, "digits", 2)
        shutil.rmtree(repo / "other")
        assert wait_until(lambda: index(triton).get(("other", "1")) == "UNAVAILABLE")
        assert index(triton) == {("digits", "1"): "UNAVAILABLE", ("digits", "2"): "READY", ("other", "1"): "UNAVAILABLE"}
        assert v2_answer(triton) == ("2", 2)
        triton.close()


def test_model_files_are_version_1_and_cannot_be_reloaded(tmp_path):
    path = random_linear_classifier(tmp_path / "plain.onnx", name="plain")
    config = ServerConfig(model_paths=(path,), port=0, http_port=0, runtime=RuntimeOptions(device="cpu"), grace_s=1.0)
    with BackgroundServer(config) as server:
        triton_http = httpclient.InferenceServerClient(url=server.http_url.removeprefix("http://"))
        assert triton_http.get_model_repository_index() == [{"name": "plain", "version": "1", "state": "READY"}]
        with pytest.raises(InferenceServerException, match="given as files"):
            triton_http.load_model("plain")
        triton_http.close()
        triton = grpcclient.InferenceServerClient(url=server.target)
        assert triton.get_server_metadata(as_json=True)["extensions"] == ["model_repository", "statistics"]
        assert triton.get_model_metadata("plain", as_json=True)["versions"] == ["1"]
        triton.close()


def test_our_model_config_proto_is_tritons():
    """Every message and enum of our config subset has the names, numbers and types of Triton's."""
    from tritonclient.grpc import model_config_pb2 as theirs

    from contracts.generated.inference import model_config_pb2 as ours

    def fields(message):
        return {f.name: (f.number, f.type, f.is_repeated) for f in message.fields}

    def check(our_message, their_message):
        our_fields, their_fields = fields(our_message), fields(their_message)
        assert all(our_fields[name] == their_fields[name] for name in our_fields), our_message.full_name
        for nested in our_message.nested_types:
            check(nested, their_message.nested_types_by_name[nested.name])
        for enum in our_message.enum_types:
            assert [(v.name, v.number) for v in enum.values] == [
                (v.name, v.number) for v in their_message.enum_types_by_name[enum.name].values
            ][: len(enum.values)]

    for name, message in ours.DESCRIPTOR.message_types_by_name.items():
        check(message, theirs.DESCRIPTOR.message_types_by_name[name])
    our_types = ours.DESCRIPTOR.enum_types_by_name["DataType"]
    their_types = theirs.DESCRIPTOR.enum_types_by_name["DataType"]
    assert [(v.name, v.number) for v in our_types.values] == [(v.name, v.number) for v in their_types.values]
    # A config Triton reads, with fields outside our subset, parses here too.
    triton_text = 'name: "m" platform: "onnxruntime_onnx" max_batch_size: 8 optimization { priority: PRIORITY_MAX }'
    parsed = text_format.Parse(triton_text, ours.ModelConfig(), allow_unknown_field=True)
    assert (parsed.name, parsed.max_batch_size) == ("m", 8)


def test_sighup_reloads_the_repository(tmp_path):
    repo = tmp_path / "repo"
    add_version(repo, "digits", 1)
    port_file = tmp_path / "ports"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "serve", "--model-repository", str(repo), "--port", "0", "--http-port", "0",
         "--device", "cpu", "--port-file", str(port_file), "--log-level", "WARNING"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: port_file.exists() or process.poll() is not None, timeout=60, interval=0.1)
        assert port_file.exists(), process.stdout.read().decode() if process.poll() is not None else "no port file"
        grpc_port = int(port_file.read_text().split()[0])
        triton = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
        assert v2_answer(triton) == ("1", 1)
        add_version(repo, "digits", 2)
        process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: triton.get_model_metadata("digits", as_json=True)["versions"] == ["2"], timeout=60)
        assert v2_answer(triton) == ("2", 2)
        triton.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
