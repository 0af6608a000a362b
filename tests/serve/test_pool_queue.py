"""PoolQueue: calls run in the pool and come back to their callers; calls queued while the pool is busy
run together in one trip; no more trips run at once than allowed; a closed pool fails calls, never hangs."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from loop_testing import tasks_started

from serve.core.pool_queue import PoolQueue


async def running(started: threading.Event) -> None:
    """Return once a call in the pool has set `started`."""
    assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 10), "the call never started"


class CountingPool(ThreadPoolExecutor):
    """A thread pool that counts the trips submitted to it."""

    def __init__(self, threads: int) -> None:
        super().__init__(threads, thread_name_prefix="pool-queue-test")
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return super().submit(*args, **kwargs)


def test_results_and_exceptions_reach_their_callers():
    def square_or_fail(value: int) -> int:
        if value == 3:
            raise ValueError("three")
        return value * value

    async def main():
        queue = PoolQueue(pool)
        return await asyncio.gather(*(queue.run(square_or_fail, value) for value in range(6)), return_exceptions=True)

    with ThreadPoolExecutor(1) as pool:
        results = asyncio.run(main())
    assert results[:3] == [0, 1, 4] and results[4:] == [16, 25]
    assert isinstance(results[3], ValueError) and str(results[3]) == "three"


def test_calls_queued_while_the_pool_is_busy_go_in_one_trip():
    started, release = threading.Event(), threading.Event()
    threads: set[str] = set()

    def work(value: int) -> int:
        threads.add(threading.current_thread().name)
        if value == 0:
            started.set()
            release.wait(5)
        return value

    async def main():
        queue = PoolQueue(pool, max_trips=1)
        first = asyncio.ensure_future(queue.run(work, 0))
        await running(started)  # the first call holds the only trip
        rest = [asyncio.ensure_future(queue.run(work, value)) for value in range(1, 21)]
        await tasks_started()  # every one of them queued
        release.set()
        return await asyncio.gather(first, *rest)

    with CountingPool(2) as pool:
        assert asyncio.run(main()) == list(range(21))
    assert pool.submitted == 1  # twenty calls, no trip of their own
    assert len(threads) == 1 and next(iter(threads)).startswith("pool-queue-test")


@pytest.mark.parametrize("max_trips", [1, 2])
def test_no_more_calls_run_at_once_than_trips_allowed(max_trips):
    running, most = 0, 0
    lock = threading.Lock()

    def work(value: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        threading.Event().wait(0.002)  # long enough for the other threads to start, if they could
        with lock:
            running -= 1
        return value

    async def main():
        queue = PoolQueue(pool, max_trips=max_trips)
        results = []
        for burst in range(5):
            results += await asyncio.gather(*(queue.run(work, value) for value in range(8)))
            await asyncio.sleep(0)
        return results

    with ThreadPoolExecutor(4) as pool:
        assert asyncio.run(main()) == list(range(8)) * 5
    assert most <= max_trips


def test_a_shut_down_pool_fails_the_call_instead_of_hanging():
    pool = ThreadPoolExecutor(1)
    pool.shutdown()

    async def main():
        return await asyncio.wait_for(PoolQueue(pool).run(int, "7"), timeout=5)

    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(main())


def test_a_cancelled_caller_leaves_the_others_answered():
    started, release = threading.Event(), threading.Event()

    def work(value: int) -> int:
        started.set()
        release.wait(5)
        return value

    async def main():
        queue = PoolQueue(pool)
        calls = [asyncio.ensure_future(queue.run(work, value)) for value in range(4)]
        await running(started)  # all four queued (in one loop turn), the first running
        calls[1].cancel()
        release.set()
        return await asyncio.gather(*calls, return_exceptions=True)

    with ThreadPoolExecutor(1) as pool:
        results = asyncio.run(main())
    assert results[0] == 0 and isinstance(results[1], asyncio.CancelledError) and results[2:] == [2, 3]


def test_max_trips_must_be_positive():
    with pytest.raises(ValueError, match="max_trips must be >= 1"):
        PoolQueue(ThreadPoolExecutor(1), max_trips=0)


def test_calls_waiting_in_a_pool_shut_down_with_cancel_futures_are_cancelled():
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(5)

    async def main():
        pool = ThreadPoolExecutor(1)
        blocker = PoolQueue(pool)  # holds the pool's only thread
        queue = PoolQueue(pool)
        held = asyncio.ensure_future(blocker.run(hold))
        await running(started)
        waiting = asyncio.ensure_future(queue.run(int, "7"))
        await tasks_started()  # its trip is in the pool, waiting for the thread
        pool.shutdown(wait=False, cancel_futures=True)
        release.set()
        results = await asyncio.wait_for(asyncio.gather(held, waiting, return_exceptions=True), timeout=5)
        pool.shutdown(wait=True)
        return results

    held, waiting = asyncio.run(main())
    assert held is True and isinstance(waiting, asyncio.CancelledError)
