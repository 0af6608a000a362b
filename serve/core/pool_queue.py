"""Calls run in a thread pool off the event loop, those queued meanwhile taken together per trip.

A call handed to a pool on its own costs a wake-up of a pool thread and then one of the event loop,
and with many calls in flight the two (and a second pool thread) hand the GIL back and forth for
each: on 2 cores that costs more CPU than decoding a small image. So calls wait in a queue on the
loop; a trip to the pool runs every call queued when it starts, one after another, and hands their
results back to the loop in one callback, then takes what was queued meanwhile, until the queue is
empty. At most `max_trips` trips run at once (one per pool thread that may decode in parallel).
"""
from __future__ import annotations

import asyncio
import functools
from collections import deque
from concurrent.futures import Executor, Future
from typing import Any, Callable

_Call = tuple[Callable[..., Any], tuple, asyncio.Future]
_Outcome = tuple[asyncio.Future, Any, BaseException | None]


class PoolQueue:
    def __init__(self, executor: Executor, max_trips: int = 1) -> None:
        if max_trips < 1:
            raise ValueError(f"max_trips must be >= 1, got {max_trips}")
        self._executor = executor
        self._max_trips = max_trips
        self._queued: deque[_Call] = deque()  # appended on the loop, taken in the pool
        self._trips = 0  # trips under way; read and written on the loop only

    async def run(self, function: Callable[..., Any], *args) -> Any:
        """function(*args) in the pool; its result, or the exception it raised."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queued.append((function, args, future))
        if self._trips < self._max_trips:
            self._start_trip(loop)
        return await future

    def _start_trip(self, loop: asyncio.AbstractEventLoop) -> None:
        self._trips += 1
        try:
            trip = self._executor.submit(self._trip, loop)
        except RuntimeError as error:  # the pool is shut down: nothing queued will run
            self._trips -= 1
            self._fail_queued(lambda future, error=error: future.set_exception(error))
            return
        trip.add_done_callback(functools.partial(self._trip_done, loop))

    def _trip_done(self, loop: asyncio.AbstractEventLoop, trip: Future) -> None:
        if trip.cancelled():
            self._on_loop(loop, self._trip_cancelled)

    def _fail_queued(self, fail: Callable[[asyncio.Future], Any]) -> None:
        while self._queued:
            _, _, future = self._queued.popleft()
            if not future.done():
                fail(future)

    def _trip_cancelled(self) -> None:
        # A pool shut down with its waiting work cancelled: the trip never ran, nor will its calls.
        self._trips -= 1
        self._fail_queued(asyncio.Future.cancel)

    @staticmethod
    def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], Any]) -> None:
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _trip(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a pool thread: the queued calls, in batches of what was queued at each batch's start."""
        try:
            while batch_size := len(self._queued):
                outcomes: list[_Outcome] = []
                for _ in range(batch_size):
                    try:
                        function, args, future = self._queued.popleft()
                    except IndexError:  # another trip took the rest
                        break
                    try:
                        outcomes.append((future, function(*args), None))
                    except Exception as error:  # the caller's to handle, as run_in_executor would hand it over
                        outcomes.append((future, None, error))
                self._on_loop(loop, functools.partial(_settle, outcomes))
        finally:
            self._on_loop(loop, functools.partial(self._trip_ended, loop))

    def _trip_ended(self, loop: asyncio.AbstractEventLoop) -> None:
        # On the loop: a call queued after the trip found the queue empty, while it still counted as
        # under way, started no trip of its own, so one starts here.
        self._trips -= 1
        if self._queued and self._trips < self._max_trips:
            self._start_trip(loop)


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
