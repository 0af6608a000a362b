"""The batcher's fast paths: where a batch runs (event loop or inference thread), and when it waits."""
from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import numpy as np
import pytest
from loop_testing import FakeClock, until
from onnx_models import random_linear_classifier

from contracts.generated.digits.v1 import digits_pb2
from contracts.model_file import load_model
from contracts.sessions import RuntimeOptions
from contracts.verdicts import DEFAULT_THRESHOLDS, judge_table
from serve.api.grpc_digits import write_predictions
from serve.core.batching import BatchingOptions, DynamicBatcher
from serve.core.dataplane import Classification, top_k
from serve.core.runner import ModelRunner


class ThreadRecordingModel:
    """run_batch that remembers which thread ran each batch, and can be made slow.

    `seconds` of computing (the CPU busy, as inference keeps it); `waits` of waiting instead, on
    the first `waits_for` calls (as a thread waits for the GIL: time that is not inference).
    """

    def __init__(self, seconds: float = 0.0, waits: float = 0.0, waits_for: int = 0) -> None:
        self.seconds = seconds
        self.waits, self.waits_for = waits, waits_for
        self.threads: list[str] = []
        self.sizes: list[int] = []

    def __call__(self, inputs: np.ndarray):
        self.threads.append(threading.current_thread().name)
        self.sizes.append(len(inputs))
        if self.seconds:
            busy_until = time.perf_counter() + self.seconds
            while time.perf_counter() < busy_until:
                pass
        if len(self.threads) <= self.waits_for:
            time.sleep(self.waits)
        return [inputs + 1.0]


def rows(value: float, count: int = 1) -> np.ndarray:
    return np.full((count, 2), value, dtype=np.float32)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


def sequential_requests(model, options: BatchingOptions, count: int):
    async def scenario():
        batcher = DynamicBatcher("m", model, options)
        answers = [await batcher.submit(rows(i)) for i in range(count)]
        await batcher.close()
        return batcher, answers, threading.current_thread().name

    return run(scenario())


def test_fast_small_batches_run_on_the_event_loop_after_their_first_timing():
    model = ThreadRecordingModel()
    batcher, answers, loop_thread = sequential_requests(model, BatchingOptions(max_delay_ms=0, inline_max_ms=50), 5)
    # A size never timed goes to the inference thread (which times it); then it runs inline.
    assert model.threads[0].startswith("infer-m")
    assert model.threads[1:] == [loop_thread] * 4
    assert batcher.stats.inline_batches == 4
    assert [float(a[0][0, 0]) for a in answers] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_slow_batches_stay_on_the_inference_thread():
    model = ThreadRecordingModel(seconds=0.02)
    batcher, answers, _ = sequential_requests(model, BatchingOptions(max_delay_ms=0, inline_max_ms=1), 3)
    assert all(name.startswith("infer-m") for name in model.threads)
    assert batcher.stats.inline_batches == 0
    assert [float(a[0][0, 0]) for a in answers] == [1.0, 2.0, 3.0]


def test_waiting_in_the_inference_thread_does_not_count_as_inference():
    # The first run, in the thread, takes 50 ms of wall time but almost no CPU (a wait for the
    # GIL looks like this): the batch is cheap, and the next ones run inline.
    model = ThreadRecordingModel(waits=0.05, waits_for=1)
    batcher, answers, loop_thread = sequential_requests(model, BatchingOptions(max_delay_ms=0, inline_max_ms=5), 4)
    assert model.threads[0].startswith("infer-m")
    assert model.threads[1:] == [loop_thread] * 3
    assert [float(a[0][0, 0]) for a in answers] == [1.0, 2.0, 3.0, 4.0]


def test_gpu_models_keep_every_batch_on_the_inference_threads(tmp_path):
    # On a GPU the calling thread mostly waits for the device: its CPU time cannot say how long an
    # inline run would hold the event loop, so GPU batches never run inline. The same CPU model
    # (told it runs on CUDA) shows the difference.
    cpu_model = load_model(random_linear_classifier(tmp_path / "linear.onnx"), RuntimeOptions(device="cpu"))
    gpu_model = dataclasses.replace(cpu_model, provider="CUDAExecutionProvider")
    pixels = np.zeros((1, 1, 28, 28), np.float32)

    async def inline_batches(model) -> int:
        runner = ModelRunner(model, BatchingOptions(max_delay_ms=0, inline_max_ms=50), instances=2)
        for _ in range(5):
            await runner.infer({model.inputs[0].name: pixels})
        await runner.close()
        return runner.batcher.stats.inline_batches

    assert run(inline_batches(cpu_model)) == 4
    assert run(inline_batches(gpu_model)) == 0


def test_inline_max_ms_zero_keeps_every_batch_on_the_inference_thread():
    model = ThreadRecordingModel()
    batcher, _, _ = sequential_requests(model, BatchingOptions(max_delay_ms=0, inline_max_ms=0), 4)
    assert all(name.startswith("infer-m") for name in model.threads)
    assert batcher.stats.inline_batches == 0


def test_a_lone_client_stops_waiting_out_the_delay_and_company_brings_the_wait_back():
    model = ThreadRecordingModel()
    delay_s = 0.5

    async def waited_for_company(clock: FakeClock, batcher: DynamicBatcher, *requests) -> None:
        """`requests` (an image each) are queued together and held until the delay is over, then answered."""
        answers = asyncio.gather(*requests)
        await until(lambda: batcher.queued_images == len(requests) and bool(clock.timers))
        assert not answers.done()
        clock.advance(delay_s)
        await answers

    async def answered_at_once(clock: FakeClock, request) -> bool:
        """Whether `request` is answered while the clock stands still (it did not wait for company)."""
        answer = asyncio.ensure_future(request)
        await until(lambda: answer.done() or bool(clock.timers))
        return answer.done()

    async def scenario():
        clock = FakeClock()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_delay_ms=1000 * delay_s), clock=clock)
        # Company is assumed at first: this one waits the delay out.
        await waited_for_company(clock, batcher, batcher.submit(rows(0)))
        for i in range(1, 4):
            assert await answered_at_once(clock, batcher.submit(rows(i))), f"lone request {i} waited for company"
        # Two in the queue together: company again, so the partial batch waits for more.
        await waited_for_company(clock, batcher, batcher.submit(rows(4)), batcher.submit(rows(5)))
        # After a batch with company, a lone request waits, and the next one catches it.
        late = asyncio.ensure_future(batcher.submit(rows(6)))
        await until(lambda: bool(clock.timers))
        clock.advance(delay_s / 5)
        await waited_for_company(clock, batcher, late, batcher.submit(rows(7)))
        await batcher.close()

    run(scenario())
    assert model.sizes == [1, 1, 1, 1, 2, 2]


def test_inline_max_ms_must_not_be_negative():
    with pytest.raises(ValueError, match="inline_max_ms"):
        BatchingOptions(inline_max_ms=-1)


def reference_top_k(row: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(row)), key=lambda c: (-row[c], c))[:k]


@pytest.mark.parametrize("images", [1, 3, 40])  # both ranking paths: plain Python below 16 rows, numpy above
def test_predictions_are_written_in_place_most_probable_first_ties_to_the_lower_class(images):
    rng = np.random.default_rng(images)
    probabilities = (0.9 * rng.random((images, 10))).astype(np.float32)
    probabilities[:, 7] = probabilities[:, 2] = 0.99  # a tie at the top
    labels = [f"digit {i}" for i in range(10)]
    response = digits_pb2.ClassifyResponse(model="m")
    classes, top = top_k(probabilities, 3)
    verdicts = judge_table(probabilities, np.zeros(images, bool), DEFAULT_THRESHOLDS, labels)
    write_predictions(response.predictions, Classification(None, labels, probabilities, classes, top, None, verdicts))
    assert len(response.predictions) == images
    for row, prediction in zip(probabilities, response.predictions):
        expected = reference_top_k(row, 3)
        assert [c.digit for c in prediction.top_k] == expected
        assert expected[:2] == [2, 7]
        assert [c.label for c in prediction.top_k] == [labels[c] for c in expected]
        assert [c.probability for c in prediction.top_k] == pytest.approx([float(row[c]) for c in expected])
        assert (prediction.digit, prediction.label) == (2, "digit 2")
        assert prediction.probability == pytest.approx(0.99)
        assert (prediction.verdict, list(prediction.candidates)) == (digits_pb2.VERDICT_DIGIT, [2])
        assert prediction.reason == "reads digit 2 with probability 0.99"
