"""The gate a graceful shutdown closes: the calls in progress, on every protocol, and whether new ones
are let in."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from serve.core.errors import Unavailable


class Admission:
    """The calls of our APIs in progress, and whether new ones are let in: a graceful shutdown's gate.

    Why the server drains here before it stops gRPC: when gRPC core starts shutting down it cancels
    every call it has received but not yet handed to Python, and under load the event loop is that
    call's queue, tens to hundreds of milliseconds deep. Those callers would get CANCELLED (not
    retried, and ambiguous) for requests they sent before the signal. So `drain` first serves on
    for a short lame-duck period (health already says NOT_SERVING: clients that watch it move away,
    and the queue of calls received before the signal is worked off), then answers each newcomer
    UNAVAILABLE at once (retryable: it was not processed), lets the calls in progress finish, and
    waits for arrivals to stop before core shuts the door, so that nothing is left to cancel.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """`clock`: seconds that the drain's periods are measured in (a test passes one it moves by hand)."""
        self.active = 0
        self.draining = False
        self.refused = 0
        self._clock = clock
        self._last_arrival = clock()

    def enter(self) -> None:
        """Count a call in, or raise Unavailable while draining (then do not call leave())."""
        self._last_arrival = self._clock()
        if self.draining:
            self.refused += 1
            raise Unavailable("the server is shutting down: retry on another replica or later")
        self.active += 1

    def leave(self) -> None:
        self.active -= 1

    def _quiet_for(self, seconds: float) -> bool:
        return self._clock() - self._last_arrival >= seconds

    async def drain(self, timeout: float, lame_duck_s: float = 0.0, quiet_s: float = 0.05,
                    max_settle_s: float = 0.5, poll_s: float = 0.005) -> bool:
        """Serve on for up to `lame_duck_s` (less when calls stop coming), then refuse new calls,
        wait for those in progress to end, then for `quiet_s` without arrivals (at most
        `max_settle_s`: a client that retries without end must not hold the shutdown up).

        Bounded by `timeout` seconds in all; returns whether the calls in progress all ended in time.
        """
        now = self._clock()
        give_up = now + timeout
        lame_duck_ends = now + min(lame_duck_s, timeout)
        while self._clock() < lame_duck_ends and not (self.active == 0 and self._quiet_for(quiet_s)):
            await asyncio.sleep(poll_s)
        self.draining = True
        while self.active > 0 and self._clock() < give_up:
            await asyncio.sleep(poll_s)
        finished = self.active == 0
        settled_by = min(give_up, self._clock() + max_settle_s)
        while not self._quiet_for(quiet_s) and self._clock() < settled_by:
            await asyncio.sleep(poll_s)
        return finished
