"""Load-generator processes: the one way a load is launched, for the benchmarks and the tests alike.

`LoadGenerators(n)` spawns n long-lived client processes (spawned, so they share nothing with the
parent, and their CPU is not the server's). `run(specs)` hands one LoadSpec to each of the first
len(specs) processes; each sets up (connects, computes its offline answers) and says it is ready;
once every one is, they all start at the same wall-clock instant, and `during(start_at)` runs
meanwhile in the caller's thread (to read the server at the window's edges, or to inject a fault
at a chosen moment). `run_load(specs)` does the same with processes of its own.
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue as queue_module
import time
from typing import Callable

from .spec import LoadResult, LoadSpec, ReplayTraffic

READY = "ready"
STARTUP_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 180.0
# Time between the last process saying it is ready and the common start.
START_DELAY_S = 0.2


class LoadError(RuntimeError):
    """A load process could not set up or did not report; the message says what it saw."""


async def _prepare(spec: LoadSpec, channels: dict):
    if isinstance(spec.traffic, ReplayTraffic):
        from . import replay

        return await replay.prepare(spec, channels)
    from . import mixed

    return await mixed.prepare(spec, channels)


def _error_result(spec: LoadSpec, exc: BaseException) -> LoadResult:
    return LoadResult(worker=spec.worker, setup_error=f"{type(exc).__name__}: {exc}")


def worker_main(index: int, inbox: mp.Queue, outbox: mp.Queue) -> None:
    """A load process: for each spec it is sent, set up, say READY, wait for the start time (None:
    abandon), run, answer a LoadResult. None instead of a spec ends it."""
    from . import mixed, replay

    replay.warm_up_imports(), mixed.warm_up_imports()
    outbox.put((index, READY))
    loop = asyncio.new_event_loop()
    channels: dict = {}  # kept between loads: a benchmark's scenarios reuse their connections
    try:
        while True:
            spec = inbox.get()
            if spec is None:
                break
            try:
                run = loop.run_until_complete(_prepare(spec, channels))
            except Exception as exc:  # reported to the parent, which fails the load with it
                outbox.put((index, _error_result(spec, exc)))
                continue
            outbox.put((index, READY))
            start_at = inbox.get()
            if start_at is None:  # another process could not set up: a start already past sends nothing
                loop.run_until_complete(run(time.time() - spec.duration_s - spec.warmup_s))
                outbox.put((index, LoadResult(worker=spec.worker)))
                continue
            try:
                result = loop.run_until_complete(run(start_at))
            except Exception as exc:
                result = _error_result(spec, exc)
            outbox.put((index, result))
    finally:
        for channel in channels.values():
            loop.run_until_complete(channel.close())  # a grpc.aio channel or an aiohttp session
        loop.close()


class LoadGenerators:
    """`processes` long-lived load processes; a context manager that never leaves them running."""

    def __init__(self, processes: int) -> None:
        context = mp.get_context("spawn")
        self._inboxes = [context.Queue() for _ in range(processes)]
        self._outbox = context.Queue()
        self._processes = [
            context.Process(target=worker_main, args=(i, inbox, self._outbox), name=f"load-{i}", daemon=True)
            for i, inbox in enumerate(self._inboxes)
        ]
        for process in self._processes:
            process.start()
        try:
            self._answers(range(processes), STARTUP_TIMEOUT_S, "start")
        except LoadError:
            self.close()
            raise

    @property
    def count(self) -> int:
        return len(self._processes)

    def _answers(self, indices, timeout_s: float, what: str) -> dict[int, object]:
        """One message from each process in `indices`, within timeout_s."""
        waiting, answers = set(indices), {}
        deadline = time.monotonic() + timeout_s
        while waiting:
            try:
                index, message = self._outbox.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except queue_module.Empty:
                dead = [p.name for i, p in enumerate(self._processes) if i in waiting and not p.is_alive()]
                if dead or time.monotonic() > deadline:
                    raise LoadError(f"load processes did not {what} within {timeout_s:.0f} s"
                                    + (f" (exited: {dead})" if dead else "")) from None
                continue
            answers[index] = message
            waiting.discard(index)
        return answers

    def run(self, specs: list[LoadSpec], during: Callable[[float], None] | None = None,
            setup_timeout_s: float = SETUP_TIMEOUT_S) -> list[LoadResult]:
        """Every spec's load, started together once every process is set up; their results, in order.

        `during(start_at)` runs in this thread once the start time is set (wall-clock, time.time()).
        LoadError when a process cannot set up or its load fails.
        """
        if len(specs) > self.count:
            raise ValueError(f"{len(specs)} load specs for {self.count} load processes")
        indices = range(len(specs))
        for index in indices:
            self._inboxes[index].put(specs[index])
        setup = self._answers(indices, setup_timeout_s, "set up")
        failed = {index: answer for index, answer in setup.items() if answer != READY}
        if failed:
            ready = [index for index in indices if index not in failed]
            for index in ready:
                self._inboxes[index].put(None)
            self._answers(ready, 60.0, "stand down")
            raise LoadError("; ".join(f"load process {index}: {answer.setup_error}" for index, answer in failed.items()))
        start_at = time.time() + START_DELAY_S
        for index in indices:
            self._inboxes[index].put(start_at)
        if during is not None:
            during(start_at)
        longest = max(spec.warmup_s + spec.duration_s + spec.call_timeout_s for spec in specs)
        results = self._answers(indices, max(0.0, start_at - time.time()) + longest + 60, "finish")
        failed_runs = [results[index].setup_error for index in indices if results[index].setup_error]
        if failed_runs:
            raise LoadError(f"a load process failed: {failed_runs[0]}")
        return [results[index] for index in indices]

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)

    def __enter__(self) -> "LoadGenerators":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def run_load(specs: list[LoadSpec], during: Callable[[float], None] | None = None) -> list[LoadResult]:
    """`specs` from processes of their own (started for this load, ended after it)."""
    with LoadGenerators(len(specs)) as generators:
        return generators.run(specs, during)
