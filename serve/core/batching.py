"""Dynamic batching: concurrent requests for one model coalesced into one ONNX Runtime call.

The policy is Triton's dynamic batcher: a batch goes to inference when it holds `max_batch_size`
images, or when its oldest request has waited `max_delay_ms`, whichever comes first; except that a
lone request after a lone request does not wait (nothing suggests company is coming, and a client
alone with the server would pay the delay on every call). Up to `instances` batches are in flight
per model (Triton's instance count): each runs in its own inference thread (ONNX Runtime releases the
GIL, and one session takes concurrent runs), while the next batch gathers on the event loop. Batches
that infer in well under a millisecond run on the loop's own thread instead, where they cost less
than the hand-off to another thread would (see DynamicBatcher._runs_inline). A
request is never split: one larger than `max_batch_size` is a batch on its own. Requests whose
caller went away (cancelled, or past its deadline) are dropped before inference, and the queue is
bounded: beyond `max_queue_images` callers get UNAVAILABLE at once instead of a queue that grows
without end.

Everything here runs on one asyncio event loop except the inference call itself, so the queue
needs no locks. Nothing here knows about gRPC.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from serve.core.errors import DeadlineExceeded, InvalidInput, ServeError, Unavailable

log = logging.getLogger(__name__)

# The inference call: a batch of inputs (leading dimension = images) -> every output, same leading dim.
RunBatch = Callable[[np.ndarray], Sequence[np.ndarray]]


class InferenceFailed(ServeError):
    status = "INTERNAL"


@dataclass(frozen=True)
class BatchingOptions:
    # Most images in one ONNX Runtime call (a single larger request still runs, alone).
    max_batch_size: int = 256
    # Longest time the oldest queued request waits for the batch to fill.
    max_delay_ms: float = 2.0
    # Images waiting for inference beyond which new requests are refused with UNAVAILABLE.
    max_queue_images: int = 8192
    # Batches whose inference has recently taken at most this long run on the event loop's own
    # thread; longer ones run in the inference thread (0: always the inference thread).
    inline_max_ms: float = 0.5

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {self.max_delay_ms}")
        if self.max_queue_images < self.max_batch_size:
            raise ValueError(
                f"max_queue_images ({self.max_queue_images}) must be at least max_batch_size ({self.max_batch_size})"
            )
        if self.inline_max_ms < 0:
            raise ValueError(f"inline_max_ms must be >= 0, got {self.inline_max_ms}")

    @classmethod
    def disabled(cls, max_queue_images: int = 8192, inline_max_ms: float = 0.5) -> "BatchingOptions":
        """One ONNX Runtime call per request: the baseline batching is measured against."""
        return cls(max_batch_size=1, max_delay_ms=0.0, max_queue_images=max_queue_images, inline_max_ms=inline_max_ms)


class BatchObserver(Protocol):
    """Where the batcher reports what it does (the Prometheus metrics implement this)."""

    def batch_done(self, model: str, images: int, requests: int, seconds: float) -> None: ...

    def queue_depth(self, model: str, images: int) -> None: ...

    def dropped(self, model: str, reason: str, requests: int) -> None: ...


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
class _Pending:
    inputs: np.ndarray
    images: int
    future: asyncio.Future
    enqueued_at: float
    deadline: float | None


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        options: BatchingOptions = BatchingOptions(),
        observer: BatchObserver | None = None,
        instances: int = 1,
    ) -> None:
        """`instances`: batches that may run at once, each in its own inference thread (see
        serve.core.sessions.RuntimeOptions.instances for how they share the cores)."""
        if instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        self.name = name
        self.options = options
        self.instances = instances
        self.stats = BatcherStats()
        self._run_batch = run_batch
        self._observer = observer
        self._max_delay_s = options.max_delay_ms / 1000.0
        self._inline_max_s = options.inline_max_ms / 1000.0
        # Recent inference seconds per batch size (a moving average): what decides where a batch runs.
        self._inference_s: dict[int, float] = {}
        self._queue: deque[_Pending] = deque()
        self._queued_images = 0
        self._executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"infer-{name}")
        # Batches in flight, and the stacking buffers not in use by any of them (at most one per instance).
        self._in_flight: set[asyncio.Task] = set()
        self._instance_free: asyncio.Future | None = None
        self._free_buffers: list[np.ndarray] = []
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Future | None = None
        self._batch_full: asyncio.Future | None = None
        self._closing = False
        self._draining = False
        # Whether the last batch held several requests. A request that finds no company in the
        # queue, after a batch that had none either, goes at once: a client alone with the server
        # (concurrency 1) would otherwise wait out the whole delay on every call, for nothing.
        # Until a batch shows otherwise, company is assumed.
        self._company_seen = True

    async def submit(self, inputs: np.ndarray, deadline: float | None = None) -> list[np.ndarray]:
        """Infer `inputs` (images x ...) with other callers' images; returns this caller's rows of every output.

        `deadline` is in the event loop's clock (loop.time()). Cancelling the awaiting task takes the
        request out of the next batch.
        """
        if self._closing:
            raise Unavailable(f"model {self.name} is shutting down: send the request to another replica or retry later")
        images = int(inputs.shape[0])
        if images == 0:
            raise InvalidInput("a request must carry at least one image")
        if self._queue and self._queued_images + images > self.options.max_queue_images:
            self.stats.rejected_queue_full += 1
            if self._observer:
                self._observer.dropped(self.name, "queue_full", 1)
            raise Unavailable(
                f"model {self.name} is overloaded: {self._queued_images} images already wait for inference "
                f"(limit {self.options.max_queue_images}); retry with backoff"
            )
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._run(), name=f"batcher-{self.name}")
        future = loop.create_future()
        now = loop.time()
        self._queue.append(_Pending(inputs, images, future, now, deadline))
        self._queued_images += images
        if self._observer:
            self._observer.queue_depth(self.name, self._queued_images)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if (
            self._batch_full is not None
            and not self._batch_full.done()
            and self._queued_images >= self.options.max_batch_size
        ):
            self._batch_full.set_result(None)
        return await future

    def drain(self) -> None:
        """Stop waiting for batches to fill: the server is shutting down and no new callers will come."""
        self._draining = True
        if self._batch_full is not None and not self._batch_full.done():
            self._batch_full.set_result(None)

    async def close(self) -> None:
        """Refuse new requests, infer what is queued, then stop the inference thread."""
        self._closing = True
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if self._batch_full is not None and not self._batch_full.done():
            self._batch_full.set_result(None)
        if self._task is not None:
            await self._task
        if self._in_flight:
            await asyncio.gather(*self._in_flight)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        try:
            await self._batch_loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug here must not leave callers waiting for ever: fail them, and let the next
            # request start a fresh loop.
            log.exception("model %s: the batching loop failed", self.name)
            error = InferenceFailed(f"model {self.name}: internal batching error (see the server log)")
            while self._queue:
                pending = self._pop()
                if not pending.future.done():
                    pending.future.set_exception(error)
            self._task = None

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while len(self._in_flight) >= self.instances:
                # Every instance is busy: the queue grows into the next batch meanwhile.
                self._instance_free = loop.create_future()
                await self._instance_free
                self._instance_free = None
            if not self._queue:
                if self._closing:
                    return
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            waiting_pays = (
                self._max_delay_s > 0
                and not (self._closing or self._draining)
                and (self._company_seen or len(self._queue) > 1)
            )
            if self._queued_images < self.options.max_batch_size and waiting_pays:
                wait_s = self._queue[0].enqueued_at + self._max_delay_s - loop.time()
                if wait_s > 0:
                    self._batch_full = loop.create_future()
                    timer = loop.call_later(wait_s, _resolve, self._batch_full)
                    await self._batch_full
                    timer.cancel()
                    self._batch_full = None
            batch = self._take_batch(loop.time())
            if batch:
                self._company_seen = len(batch) > 1
                if self._runs_inline(sum(pending.images for pending in batch)):
                    # An inline batch holds the loop anyway: running it as a task would only let
                    # the loop split the queue into smaller batches meanwhile.
                    await self._infer(batch)
                else:
                    # In flight while the loop gathers the next batch; the loop's top waits for a
                    # free instance, so with one instance batches still run one after the other.
                    task = loop.create_task(self._infer(batch))
                    self._in_flight.add(task)
                    task.add_done_callback(lambda done, batch=batch: self._batch_finished(done, batch))

    def _batch_finished(self, task: asyncio.Task, batch: list[_Pending]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug after the run (bookkeeping, the observer) must not leave this batch's callers
            # waiting for ever, as _run guarantees for the queue.
            log.error("model %s: a batch failed after inference", self.name, exc_info=task.exception())
            error = InferenceFailed(f"model {self.name}: internal batching error (see the server log)")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        if self._instance_free is not None and not self._instance_free.done():
            self._instance_free.set_result(None)

    def _take_batch(self, now: float) -> list[_Pending]:
        """Pop the next batch in arrival order, dropping requests nobody waits for any more."""
        batch: list[_Pending] = []
        images = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # the caller was cancelled (client went away or its deadline passed)
                self._pop()
                self.stats.dropped_cancelled += 1
                if self._observer:
                    self._observer.dropped(self.name, "cancelled", 1)
                continue
            if pending.deadline is not None and pending.deadline <= now:
                self._pop()
                self.stats.dropped_expired += 1
                if self._observer:
                    self._observer.dropped(self.name, "deadline", 1)
                waited_ms = (now - pending.enqueued_at) * 1000
                pending.future.set_exception(
                    DeadlineExceeded(
                        f"the request's deadline passed after {waited_ms:.1f} ms in the queue of model {self.name}, "
                        "before inference; allow a longer deadline"
                    )
                )
                continue
            if batch:
                fits = images + pending.images <= self.options.max_batch_size
                same_kind = pending.inputs.shape[1:] == batch[0].inputs.shape[1:] and pending.inputs.dtype == batch[0].inputs.dtype
                if not (fits and same_kind):
                    break
            batch.append(self._pop())
            images += pending.images
            if images >= self.options.max_batch_size:
                break
        if self._observer:
            self._observer.queue_depth(self.name, self._queued_images)
        return batch

    def _pop(self) -> _Pending:
        pending = self._queue.popleft()
        self._queued_images -= pending.images
        return pending

    def _stack(self, batch: list[_Pending]) -> tuple[np.ndarray, np.ndarray | None]:
        """The batch's inputs as one array, and the pooled buffer holding them (to give back after the run)."""
        if len(batch) == 1:
            return batch[0].inputs, None  # a batch of one request: no copy at all
        first = batch[0].inputs
        images = sum(p.images for p in batch)
        # Buffers are reused (allocating a batch-sized array per batch is a page-faulting memset),
        # one per batch in flight, so at most `instances` of them ever exist.
        buffer = self._free_buffers.pop() if self._free_buffers else None
        if buffer is None or buffer.shape[0] < images or buffer.shape[1:] != first.shape[1:] or buffer.dtype != first.dtype:
            capacity = max(images, self.options.max_batch_size)
            buffer = np.empty((capacity, *first.shape[1:]), dtype=first.dtype)
        out = buffer[:images]
        np.concatenate([p.inputs for p in batch], axis=0, out=out)
        return out, buffer

    def _runs_inline(self, images: int) -> bool:
        """Whether a batch of `images` runs on the event loop's thread.

        Handing a batch to the inference thread and its answer back costs two thread wake-ups, and
        the answer then waits for the GIL, which a busy event loop holds for up to its switch
        interval (5 ms). For a batch that infers in a fraction of a millisecond (a small model on
        small batches) that costs more CPU and latency than blocking the loop for the inference
        itself. So batch sizes whose recent inference took at most `inline_max_ms` run inline;
        the others, and sizes not seen yet, run in the inference thread (where the loop keeps
        answering other calls meanwhile). The times are measured either way, so a model that slows
        down (a busy machine) moves back to the thread on its own.

        What is measured is what the loop would be blocked for. Inline, that is the run's wall time.
        In the inference thread the wall time also holds the wait for the GIL after ONNX Runtime
        returns, which under load is longer than the inference itself (measured: batches of 4
        that infer in 0.1 ms took 0.7 ms there, so they never came back inline, and a 64-caller
        load ran 30% slower than with every batch inline); so there the thread's CPU time counts,
        which equals the run's time when ONNX Runtime runs it on the calling thread alone.
        """
        recent = self._inference_s.get(images)
        return recent is not None and recent <= self._inline_max_s

    def _timed_run(self, inputs: np.ndarray) -> tuple[Sequence[np.ndarray], float, float]:
        """The outputs, the wall seconds of the run and the CPU seconds of this thread during it."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        outputs = self._run_batch(inputs)
        return outputs, time.perf_counter() - started, time.thread_time() - cpu_started

    def _remember(self, images: int, seconds: float) -> None:
        recent = self._inference_s.get(images)
        self._inference_s[images] = seconds if recent is None else recent + _RECENT_WEIGHT * (seconds - recent)

    async def _infer(self, batch: list[_Pending]) -> None:
        inputs, buffer = self._stack(batch)
        images = int(inputs.shape[0])
        inline = self._runs_inline(images)
        try:
            if inline:
                outputs, seconds, _ = self._timed_run(inputs)
                blocking_s = seconds
            else:
                loop = asyncio.get_running_loop()
                outputs, seconds, blocking_s = await loop.run_in_executor(self._executor, self._timed_run, inputs)
        except Exception as exc:
            log.exception("model %s: inference failed on a batch of %d images", self.name, inputs.shape[0])
            error = InferenceFailed(f"model {self.name}: inference failed: {exc}")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        finally:
            if buffer is not None:
                # Outputs are ONNX Runtime's own arrays, never views of the inputs: the buffer is free.
                self._free_buffers.append(buffer)
        self._remember(images, blocking_s)
        stats = self.stats
        stats.batches += 1
        stats.inline_batches += inline
        stats.images_inferred += images
        stats.requests_inferred += len(batch)
        stats.largest_batch = max(stats.largest_batch, images)
        stats.recent_batch_sizes.append(images)
        if self._observer:
            self._observer.batch_done(self.name, images, len(batch), seconds)
        offset = 0
        for pending in batch:
            if not pending.future.done():
                end = offset + pending.images
                pending.future.set_result([output[offset:end] for output in outputs])
            offset += pending.images


# Weight of the newest measurement in the moving average of inference times.
_RECENT_WEIGHT = 0.2


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
