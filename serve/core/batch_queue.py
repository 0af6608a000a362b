"""The dynamic batcher's queue: bounded, in arrival order, cut into batches that callers still wait for.

Requests whose caller went away (cancelled, or past its deadline) are dropped as batches are cut,
never inferred; the queue is bounded, and beyond `max_queue_images` a new caller gets UNAVAILABLE
at once instead of a queue that grows without end. Runs on the event loop only: no locks.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from serve.core.errors import DeadlineExceeded, Unavailable


class BatchObserver(Protocol):
    """Where the batcher reports what it does (the Prometheus metrics implement this)."""

    def batch_done(self, model: str, images: int, requests: int, seconds: float) -> None: ...

    def execution_timed(
        self, model: str, images: int, queue_seconds: Sequence[float], input_s: float, infer_s: float, output_s: float,
    ) -> None:
        """Where a batch's time went: each request's wait in the queue, then stacking, the run, the answers."""

    def queue_depth(self, model: str, images: int) -> None: ...

    def dropped(self, model: str, reason: str, requests: int) -> None: ...


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time the batcher measures waits and deadlines in, and wakes itself up by.

    The running event loop is one (loop.time, loop.call_later), and the one the server uses; the
    seam lets a test move time on by hand instead of sleeping.
    """

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer: ...


@dataclass
class BatcherStats:
    batches: int = 0
    images_inferred: int = 0
    requests_inferred: int = 0
    dropped_cancelled: int = 0
    dropped_expired: int = 0
    rejected_queue_full: int = 0
    # Batches run on the event loop's thread (the rest ran in the inference thread).
    inline_batches: int = 0
    largest_batch: int = 0
    # Size of every batch since start, capped so that a long-running server keeps a bounded list.
    recent_batch_sizes: deque = field(default_factory=lambda: deque(maxlen=4096))


@dataclass
class Pending:
    """One caller's request: its images, and the future its answer goes to."""

    inputs: np.ndarray
    images: int
    future: asyncio.Future
    enqueued_at: float
    deadline: float | None


class BatchQueue:
    def __init__(self, name: str, max_batch_size: int, max_queue_images: int, stats: BatcherStats,
                 observer: BatchObserver | None) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_queue_images = max_queue_images
        self.images = 0
        self._pending: deque[Pending] = deque()
        self._stats = stats
        self._observer = observer

    def __bool__(self) -> bool:
        return bool(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def oldest_enqueued_at(self) -> float:
        return self._pending[0].enqueued_at

    def put(self, pending: Pending) -> None:
        """Queue a request, or raise Unavailable when it would overfill the queue."""
        if self._pending and self.images + pending.images > self.max_queue_images:
            self._stats.rejected_queue_full += 1
            if self._observer:
                self._observer.dropped(self.name, "queue_full", 1)
            raise Unavailable(
                f"model {self.name} is overloaded: {self.images} images already wait for inference "
                f"(limit {self.max_queue_images}); retry with backoff"
            )
        self._pending.append(pending)
        self.images += pending.images
        if self._observer:
            self._observer.queue_depth(self.name, self.images)

    def take_batch(self, now: float) -> list[Pending]:
        """Pop the next batch in arrival order, dropping requests nobody waits for any more.

        A request is never split: one larger than max_batch_size is a batch on its own, and only
        requests of one shape and dtype share a batch.
        """
        batch: list[Pending] = []
        images = 0
        while self._pending:
            pending = self._pending[0]
            if pending.future.done():  # the caller was cancelled (client went away or its deadline passed)
                self.pop()
                self._drop("cancelled")
                continue
            if pending.deadline is not None and pending.deadline <= now:
                self.pop()
                self._drop("deadline")
                waited_ms = (now - pending.enqueued_at) * 1000
                pending.future.set_exception(
                    DeadlineExceeded(
                        f"the request's deadline passed after {waited_ms:.1f} ms in the queue of model {self.name}, "
                        "before inference; allow a longer deadline"
                    )
                )
                continue
            if batch:
                fits = images + pending.images <= self.max_batch_size
                same_kind = pending.inputs.shape[1:] == batch[0].inputs.shape[1:] and pending.inputs.dtype == batch[0].inputs.dtype
                if not (fits and same_kind):
                    break
            batch.append(self.pop())
            images += pending.images
            if images >= self.max_batch_size:
                break
        if self._observer:
            self._observer.queue_depth(self.name, self.images)
        return batch

    def pop(self) -> Pending:
        pending = self._pending.popleft()
        self.images -= pending.images
        return pending

    def _drop(self, reason: str) -> None:
        if reason == "cancelled":
            self._stats.dropped_cancelled += 1
        else:
            self._stats.dropped_expired += 1
        if self._observer:
            self._observer.dropped(self.name, reason, 1)
