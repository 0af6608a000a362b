"""The drain behind a graceful SIGTERM (serve.core.admission.Admission), without a network.

The drain's periods run on a fake clock that moves only when a scenario says so, and it polls
without pausing (poll_s=0), so no real time needs to pass for any of them.
"""
from __future__ import annotations

import asyncio

import pytest
from loop_testing import FakeClock, settled, tasks_started, until

from serve.core.admission import Admission
from serve.core.errors import Unavailable


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=10))


def test_admission_counts_calls_and_refuses_new_ones_while_draining():
    clock = FakeClock()
    admission = Admission(clock.time)
    admission.enter()
    admission.enter()
    assert admission.active == 2

    async def drain_while_calls_finish() -> bool:
        draining = asyncio.ensure_future(admission.drain(timeout=5.0, quiet_s=0.01, poll_s=0))
        await until(lambda: admission.draining)
        with pytest.raises(Unavailable, match="shutting down"):
            admission.enter()
        admission.leave()
        admission.leave()
        clock.advance(0.009)
        await settled()
        assert not draining.done(), "the drain ended before arrivals had been quiet for quiet_s"
        clock.advance(0.002)
        return await draining

    assert run(drain_while_calls_finish()) is True
    assert admission.active == 0 and admission.refused == 1


def test_admission_serves_on_during_the_lame_duck_and_gives_up_at_the_timeout():
    clock = FakeClock()
    admission = Admission(clock.time)

    async def lame_duck() -> None:
        draining = asyncio.ensure_future(admission.drain(timeout=5.0, lame_duck_s=0.2, quiet_s=0.01, poll_s=0))
        await tasks_started()
        admission.enter()  # a call that arrives right after the signal is still served...
        clock.advance(0.05)
        await settled()
        assert not admission.draining
        admission.leave()
        # ...and once it is done and nothing else comes, the lame duck ends early: the clock stays
        # short of its 0.2 s.
        await draining

    run(lame_duck())

    stuck = Admission(clock.time)
    stuck.enter()  # a call that never ends: drain gives up at its timeout and says so

    async def give_up() -> bool:
        draining = asyncio.ensure_future(stuck.drain(timeout=0.1, poll_s=0))
        await until(lambda: stuck.draining)
        clock.advance(0.099)
        await settled()
        assert not draining.done(), "the drain gave up before its timeout"
        clock.advance(0.002)
        return await draining

    assert run(give_up()) is False
