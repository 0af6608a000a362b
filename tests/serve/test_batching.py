"""The dynamic batcher on its own: coalescing, routing, limits, deadlines, cancellation, shutdown.

Delays and deadlines run on a fake clock that moves only when a scenario says so, so every order of
events below holds however slow the machine.
"""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from loop_testing import FakeClock, settled, until, with_time_passing

from contracts.errors import InvalidInput
from serve.api.metrics import Metrics
from serve.core.batching import BatchingOptions, DynamicBatcher, InferenceFailed
from serve.core.errors import DeadlineExceeded, Unavailable


class RecordingModel:
    """run_batch for the batcher: doubles its input, remembers every batch, can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.fail_next = False

    def __call__(self, inputs: np.ndarray):
        self.started.set()
        assert self.release.wait(10), "test never released the held batch"
        self.batches.append(inputs.copy())
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        return [inputs * 2.0, inputs.sum(axis=(1, 2))]

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    def seen_values(self) -> set[float]:
        return {float(v) for batch in self.batches for v in batch[:, 0, 0]}


def rows(value: float, count: int = 1) -> np.ndarray:
    """`count` rows of shape (2, 3) filled with `value` (a request's identity in the test)."""
    return np.full((count, 2, 3), value, dtype=np.float32)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def test_concurrent_requests_share_batches_and_answers_reach_their_callers():
    model = RecordingModel()

    async def scenario():
        clock = FakeClock()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=64, max_delay_ms=50), clock=clock)
        requests = asyncio.gather(*(batcher.submit(rows(i, 1 + i % 3)) for i in range(20)))
        results = await with_time_passing(clock, requests)
        await batcher.close()
        return batcher, results

    batcher, results = run(scenario())
    for i, (doubled, sums) in enumerate(results):
        assert doubled.shape == (1 + i % 3, 2, 3)
        np.testing.assert_array_equal(doubled, rows(2.0 * i, 1 + i % 3))
        np.testing.assert_array_equal(sums, np.full(1 + i % 3, 6.0 * i, dtype=np.float32))
    assert sum(model.sizes) == sum(1 + i % 3 for i in range(20))
    assert len(model.batches) < 20, "concurrent requests should have been coalesced"
    assert batcher.stats.requests_inferred == 20
    assert batcher.stats.largest_batch == max(model.sizes) > 1


def test_batches_never_exceed_max_batch_size_and_requests_are_never_split():
    model = RecordingModel()

    async def scenario():
        clock = FakeClock()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=8, max_delay_ms=20), clock=clock)
        results = await with_time_passing(clock, asyncio.gather(*(batcher.submit(rows(i, 3)) for i in range(10))))
        await batcher.close()
        return results

    results = run(scenario())
    assert all(size <= 8 for size in model.sizes)
    assert all(size % 3 == 0 for size in model.sizes), "a 3-row request was split across batches"
    assert [float(r[0][0, 0, 0]) for r in results] == [2.0 * i for i in range(10)]


def test_a_request_larger_than_max_batch_size_runs_alone_in_one_call():
    model = RecordingModel()

    async def scenario():
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=8, max_delay_ms=0))
        result = await batcher.submit(rows(7, 20))
        await batcher.close()
        return result

    doubled, _ = run(scenario())
    assert model.sizes == [20]
    np.testing.assert_array_equal(doubled, rows(14, 20))


def test_a_partial_batch_waits_for_company_up_to_the_delay():
    model = RecordingModel()

    async def scenario():
        clock = FakeClock()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=64, max_delay_ms=400), clock=clock)
        first = asyncio.ensure_future(batcher.submit(rows(1)))
        await until(lambda: bool(clock.timers))  # the batcher holds the lone request for company
        clock.advance(0.02)  # well inside the 400 ms delay
        second = asyncio.ensure_future(batcher.submit(rows(2)))
        await until(lambda: batcher.queued_images == 2)
        clock.advance(0.378)
        await settled()
        assert not model.batches, "the batch was cut before the delay was over"
        clock.advance(0.002)
        await asyncio.gather(first, second)
        await batcher.close()

    run(scenario())
    assert model.sizes == [2]


def test_a_full_batch_goes_without_waiting_out_the_delay():
    model = RecordingModel()

    async def scenario():
        # A clock that never moves: only a full batch can go at all.
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=4, max_delay_ms=60_000), clock=FakeClock())
        await asyncio.wait_for(asyncio.gather(*(batcher.submit(rows(i)) for i in range(4))), timeout=10)
        await batcher.close()

    run(scenario())
    assert model.sizes == [4]


def test_requests_past_their_deadline_are_dropped_before_inference():
    model = RecordingModel()

    async def scenario():
        loop = asyncio.get_running_loop()
        clock = FakeClock()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=64, max_delay_ms=0), clock=clock)
        model.release.clear()
        blocker = asyncio.ensure_future(batcher.submit(rows(1)))
        await loop.run_in_executor(None, model.started.wait, 5)
        # Queued behind the held batch, with a deadline that passes while it waits.
        late = asyncio.ensure_future(batcher.submit(rows(99), deadline=clock.time() + 0.05))
        on_time = asyncio.ensure_future(batcher.submit(rows(2), deadline=clock.time() + 30))
        await until(lambda: batcher.queued_images == 2)
        clock.advance(0.15)
        model.release.set()
        await blocker
        with pytest.raises(DeadlineExceeded, match="deadline passed"):
            await late
        await on_time
        await batcher.close()
        return batcher

    batcher = run(scenario())
    assert 99.0 not in model.seen_values(), "an expired request was inferred"
    assert batcher.stats.dropped_expired == 1
    assert model.seen_values() == {1.0, 2.0}


def test_cancelled_requests_are_dropped_before_inference():
    model = RecordingModel()

    async def scenario():
        loop = asyncio.get_running_loop()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=64, max_delay_ms=0))
        model.release.clear()
        blocker = asyncio.ensure_future(batcher.submit(rows(1)))
        await loop.run_in_executor(None, model.started.wait, 5)
        abandoned = asyncio.ensure_future(batcher.submit(rows(42)))
        kept = asyncio.ensure_future(batcher.submit(rows(3)))
        await until(lambda: batcher.queued_images == 2)
        abandoned.cancel()
        model.release.set()
        await asyncio.gather(blocker, kept)
        await batcher.close()
        return batcher

    batcher = run(scenario())
    assert 42.0 not in model.seen_values()
    assert batcher.stats.dropped_cancelled == 1


def test_a_full_queue_refuses_new_requests_with_unavailable():
    model = RecordingModel()

    async def scenario():
        loop = asyncio.get_running_loop()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=4, max_delay_ms=0, max_queue_images=8))
        model.release.clear()
        blocker = asyncio.ensure_future(batcher.submit(rows(0, 4)))
        await loop.run_in_executor(None, model.started.wait, 5)
        queued = [asyncio.ensure_future(batcher.submit(rows(i, 4))) for i in (1, 2)]
        await until(lambda: batcher.queued_images == 8)
        with pytest.raises(Unavailable, match="overloaded"):
            await batcher.submit(rows(3, 1))
        model.release.set()
        await asyncio.gather(blocker, *queued)
        # Once drained, the queue takes requests again.
        await batcher.submit(rows(4))
        await batcher.close()
        return batcher

    batcher = run(scenario())
    assert batcher.stats.rejected_queue_full == 1


def test_batching_disabled_runs_one_call_per_request():
    model = RecordingModel()

    async def scenario():
        batcher = DynamicBatcher("m", model, BatchingOptions.disabled())
        await asyncio.gather(*(batcher.submit(rows(i, 2)) for i in range(6)))
        await batcher.close()

    run(scenario())
    assert model.sizes == [2] * 6


def test_an_inference_failure_fails_its_batch_and_the_batcher_keeps_serving():
    model = RecordingModel()

    async def scenario():
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=8, max_delay_ms=0))
        model.fail_next = True
        with pytest.raises(InferenceFailed, match="boom") as failure:
            await batcher.submit(rows(1))
        assert failure.value.status == "INTERNAL"
        doubled, _ = await batcher.submit(rows(2))
        await batcher.close()
        return doubled

    np.testing.assert_array_equal(run(scenario()), rows(4))


def test_close_infers_what_is_queued_then_refuses_new_requests():
    model = RecordingModel()

    async def scenario():
        clock = FakeClock()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=64, max_delay_ms=60_000), clock=clock)
        pending = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(3)]
        await until(lambda: batcher.queued_images == 3 and bool(clock.timers))  # held for company
        await asyncio.wait_for(batcher.close(), timeout=10)  # the clock never moves: close does not wait the delay out
        results = await asyncio.gather(*pending)
        with pytest.raises(Unavailable, match="shutting down"):
            await batcher.submit(rows(9))
        return results

    results = run(scenario())
    assert [float(r[0][0, 0, 0]) for r in results] == [0.0, 2.0, 4.0]


def test_drain_stops_waiting_for_batches_to_fill():
    model = RecordingModel()

    async def scenario():
        clock = FakeClock()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=64, max_delay_ms=60_000), clock=clock)
        pending = asyncio.ensure_future(batcher.submit(rows(5)))
        await until(lambda: bool(clock.timers))  # held for company; the clock never moves
        batcher.drain()
        result = await asyncio.wait_for(pending, timeout=10)
        await batcher.close()
        return result

    np.testing.assert_array_equal(run(scenario())[0], rows(10))


def test_an_empty_request_is_invalid():
    async def scenario():
        batcher = DynamicBatcher("m", RecordingModel())
        with pytest.raises(InvalidInput):
            await batcher.submit(np.empty((0, 2, 3), np.float32))
        await batcher.close()

    run(scenario())


def test_batch_sizes_and_drops_reach_the_metrics():
    model = RecordingModel()
    metrics = Metrics()

    async def scenario():
        clock = FakeClock()
        batcher = DynamicBatcher("m", model, BatchingOptions(max_batch_size=64, max_delay_ms=50), observer=metrics,
                                 clock=clock)
        await with_time_passing(clock, asyncio.gather(*(batcher.submit(rows(i)) for i in range(5))))
        await batcher.close()

    run(scenario())
    registry = metrics.registry
    assert registry.get_sample_value("serve_batch_size_count", {"model": "m"}) == len(model.batches)
    assert registry.get_sample_value("serve_batch_size_sum", {"model": "m"}) == 5
    assert registry.get_sample_value("serve_queue_images", {"model": "m"}) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_delay_ms": -1}, "max_delay_ms"),
        ({"max_batch_size": 16, "max_queue_images": 8}, "max_queue_images"),
    ],
)
def test_batching_options_reject_nonsense(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchingOptions(**kwargs)
