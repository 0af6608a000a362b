"""What the data-plane tests order events with instead of sleeping: a clock the test moves by hand,
and waits for a condition on the event loop."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class FakeTimer:
    when: float
    callback: Callable[..., Any]
    args: tuple
    active: bool = True

    def cancel(self) -> None:
        self.active = False


class FakeClock:
    """A batcher clock (serve.core.batching.Clock) that stands still until the test advances it.

    A delay or deadline then passes exactly where the test says, however slow the machine: a
    request the batcher is holding for company waits until `advance` moves time past its delay.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(self.now + max(delay, 0.0), callback, args)
        self._timers.append(timer)
        return timer

    @property
    def timers(self) -> list[FakeTimer]:
        """The timers set and neither fired nor cancelled: what is waiting for time to pass."""
        return [timer for timer in self._timers if timer.active]

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, firing every timer that falls due, earliest first."""
        self.now += seconds
        due = sorted((timer for timer in self.timers if timer.when <= self.now), key=lambda timer: timer.when)
        for timer in due:
            timer.active = False
            timer.callback(*timer.args)
        self._timers = self.timers


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Let the event loop (and the threads it waits for) run until `condition()` holds.

    Yields to the loop first, then polls every millisecond, so that a condition met by another
    thread does not spin a core; fails after `timeout_s` of real time.
    """
    give_up = time.monotonic() + timeout_s
    yields = 0
    while not condition():
        assert time.monotonic() < give_up, f"still not true after {timeout_s} s: {condition}"
        await asyncio.sleep(0 if yields < 100 else 0.001)
        yields += 1


async def tasks_started() -> None:
    """Return once every task created so far has run to its first wait.

    The loop runs ready tasks in the order they were scheduled: a yield puts this one behind them.
    No time passes.
    """
    await asyncio.sleep(0)


async def settled(iterations: int = 20) -> None:
    """Give the loop `iterations` turns with nothing else happening: time for something that must
    not happen (a batch cut too early, a close that does not wait) to show itself."""
    for _ in range(iterations):
        await asyncio.sleep(0)


async def with_time_passing(clock: FakeClock, awaitable) -> Any:
    """Await `awaitable`, moving `clock` on to the next timer whenever one is set: the delays pass
    at once and in order, and time passes only for what waits on it."""
    task = asyncio.ensure_future(awaitable)
    while not task.done():
        await until(lambda: task.done() or bool(clock.timers))
        if not task.done():
            clock.advance(min(timer.when for timer in clock.timers) - clock.now)
    return task.result()
