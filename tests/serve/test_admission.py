"""The drain behind a graceful SIGTERM (serve.core.admission.Admission), without a network."""
from __future__ import annotations

import asyncio

import pytest

from serve.core.admission import Admission
from serve.core.errors import Unavailable


def test_admission_counts_calls_and_refuses_new_ones_while_draining():
    admission = Admission()
    admission.enter()
    admission.enter()
    assert admission.active == 2

    async def drain_while_calls_finish() -> bool:
        draining = asyncio.ensure_future(admission.drain(timeout=5.0, quiet_s=0.01))
        await asyncio.sleep(0.02)
        assert admission.draining
        with pytest.raises(Unavailable, match="shutting down"):
            admission.enter()
        admission.leave()
        admission.leave()
        return await draining

    assert asyncio.run(drain_while_calls_finish()) is True
    assert admission.active == 0 and admission.refused == 1


def test_admission_serves_on_during_the_lame_duck_and_gives_up_at_the_timeout():
    admission = Admission()

    async def lame_duck() -> None:
        draining = asyncio.ensure_future(admission.drain(timeout=5.0, lame_duck_s=0.2, quiet_s=0.01))
        await asyncio.sleep(0)
        admission.enter()  # a call that arrives right after the signal is still served...
        await asyncio.sleep(0.05)
        assert not admission.draining
        admission.leave()
        await draining  # ...and once it is done and nothing else comes, the lame duck ends early

    asyncio.run(asyncio.wait_for(lame_duck(), 2.0))

    stuck = Admission()
    stuck.enter()  # a call that never ends: drain gives up at its timeout and says so
    assert asyncio.run(asyncio.wait_for(stuck.drain(timeout=0.1), 2.0)) is False
