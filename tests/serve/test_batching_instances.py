"""Several batches of one model in flight at once (instances), and how they share the cores."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from loop_testing import settled, until

from contracts.sessions import RuntimeOptions, session_options, usable_cpus
from serve.core.batching import BatchingOptions, DynamicBatcher, InferenceFailed


def rows(value: float, count: int = 1) -> np.ndarray:
    return np.full((count, 2, 3), value, dtype=np.float32)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


# Large enough that every batch goes to an inference thread (inline runs are for sub-millisecond batches).
THREADED = BatchingOptions(max_batch_size=4, max_delay_ms=0, inline_max_ms=0)


def test_two_instances_run_two_batches_at_the_same_time():
    # Each run waits for the other at a barrier: with one batch in flight at a time it would break.
    barrier = threading.Barrier(2, timeout=5)
    threads = set()

    def run_batch(inputs):
        threads.add(threading.get_ident())
        barrier.wait()
        return [inputs * 2.0]

    async def scenario():
        batcher = DynamicBatcher("m", run_batch, THREADED, instances=2)
        results = await asyncio.gather(batcher.submit(rows(1, 4)), batcher.submit(rows(2, 4)))
        await batcher.close()
        return results

    (first,), (second,) = run(scenario())
    np.testing.assert_array_equal(first, rows(2, 4))
    np.testing.assert_array_equal(second, rows(4, 4))
    assert len(threads) == 2 and not barrier.broken


def test_one_instance_never_overlaps_two_batches():
    running, overlaps = [0], []
    release = threading.Event()

    def run_batch(inputs):
        running[0] += 1
        overlaps.append(running[0])
        assert release.wait(10), "the test never released the first batch"
        running[0] -= 1
        return [inputs * 2.0]

    async def scenario():
        batcher = DynamicBatcher("m", run_batch, THREADED, instances=1)
        requests = asyncio.gather(*(batcher.submit(rows(i, 4)) for i in range(4)))
        # The first batch is held while the other three wait: a second instance would take one.
        await until(lambda: len(overlaps) == 1 and batcher.queued_images == 12)
        await settled()
        assert len(overlaps) == 1, "a second batch started while the only instance was busy"
        release.set()
        await requests
        await batcher.close()

    run(scenario())
    assert overlaps == [1, 1, 1, 1]


def test_batches_in_flight_never_share_a_stacking_buffer():
    # Each run reads its inputs, waits until the other batch in flight has been stacked too, then
    # reads them again: a buffer shared between batches in flight would have changed under it.
    both_stacked = threading.Barrier(2, timeout=10)
    changed = []
    # The arrays the stacked batches are views of: one per batch in flight at most, reused after.
    buffers, lock = [], threading.Lock()

    def run_batch(inputs):
        before = inputs.copy()
        both_stacked.wait()
        changed.append(not np.array_equal(before, inputs))
        with lock:
            if inputs.base is not None and not any(inputs.base is buffer for buffer in buffers):
                buffers.append(inputs.base)
        return [inputs * 2.0]

    async def scenario():
        batcher = DynamicBatcher("m", run_batch, BatchingOptions(max_batch_size=4, max_delay_ms=5, inline_max_ms=0),
                                 instances=2)
        requests = [batcher.submit(rows(i, 2)) for i in range(24)]
        results = await asyncio.gather(*requests)
        await batcher.close()
        return batcher, results

    batcher, results = run(scenario())
    for i, (doubled,) in enumerate(results):
        np.testing.assert_array_equal(doubled, rows(2.0 * i, 2))
    assert batcher.stats.largest_batch == 4, "requests should have been stacked into shared batches"
    assert len(changed) == 12 and not any(changed)
    assert 1 <= len(buffers) <= 2, "more stacking buffers than batches in flight"


def test_close_waits_for_every_batch_in_flight():
    release = threading.Event()
    started = []

    def run_batch(inputs):
        started.append(len(inputs))
        assert release.wait(10)
        return [inputs + 1.0]

    async def scenario():
        batcher = DynamicBatcher("m", run_batch, THREADED, instances=2)
        pending = [asyncio.ensure_future(batcher.submit(rows(i, 4))) for i in range(3)]
        await until(lambda: len(started) == 2 and batcher.queued_images == 4)
        closing = asyncio.ensure_future(batcher.close())
        await settled()
        assert not closing.done(), "close() returned with batches still running"
        release.set()
        await closing
        return [p.result() for p in pending]

    results = run(scenario())
    assert [float(r[0][0, 0, 0]) for r in results] == [1.0, 2.0, 3.0]


class FailingObserver:
    """A metrics observer with a bug in batch_done: a failure after the run itself."""

    def batch_done(self, model, images, requests, seconds):
        raise RuntimeError("observer bug")

    def queue_depth(self, model, images):
        pass

    def dropped(self, model, reason, requests):
        pass


@pytest.mark.parametrize("instances", [1, 2])
def test_a_failure_after_the_run_fails_its_callers_instead_of_leaving_them_waiting(instances):
    async def scenario():
        batcher = DynamicBatcher("m", lambda x: [x * 2.0], THREADED, FailingObserver(), instances=instances)
        outcomes = await asyncio.wait_for(
            asyncio.gather(batcher.submit(rows(1, 4)), batcher.submit(rows(2, 4)), return_exceptions=True), 10
        )
        await batcher.close()
        return outcomes

    outcomes = run(scenario())
    assert all(isinstance(o, InferenceFailed) and o.status == "INTERNAL" for o in outcomes), outcomes


def test_instances_must_be_positive():
    with pytest.raises(ValueError, match="instances must be >= 1, got 0"):
        DynamicBatcher("m", lambda x: [x], instances=0)
    with pytest.raises(ValueError, match="instances must be >= 1, got 0"):
        RuntimeOptions(instances=0)


def test_instances_share_the_cores_unless_threads_are_given():
    cpus = usable_cpus()
    assert RuntimeOptions().threads_per_run() == 0, "one instance keeps ONNX Runtime's own default"
    assert RuntimeOptions(instances=2).threads_per_run() == max(1, cpus // 2)
    assert RuntimeOptions(instances=4 * cpus).threads_per_run() == 1
    assert RuntimeOptions(instances=2, intra_op_threads=3).threads_per_run() == 3
    assert session_options(RuntimeOptions(instances=2)).intra_op_num_threads == max(1, cpus // 2)
