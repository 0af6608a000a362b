"""The dynamic batcher's executor: where and how a batch runs, and its answers handed back.

Up to `instances` batches of a model run at once (Triton's instance count), each in its own
inference thread: ONNX Runtime releases the GIL, and one session takes concurrent runs. Batches
that recently inferred in well under a millisecond run on the event loop's own thread instead,
where they cost less than the hand-off to another thread would (see `runs_inline`). Batches are
stacked into pooled buffers, one per batch in flight, and each caller gets its rows of every output.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from contracts.errors import StatusError
from serve.core.batch_queue import BatcherStats, BatchObserver, Clock, Pending

log = logging.getLogger(__name__)

# The inference call: a batch of inputs (leading dimension = images) -> every output, same leading dim.
RunBatch = Callable[[np.ndarray], Sequence[np.ndarray]]
# Weight of the newest measurement in the moving average of inference times.
_RECENT_WEIGHT = 0.2


class InferenceFailed(StatusError):
    status = "INTERNAL"


class BatchExecutor:
    def __init__(self, name: str, run_batch: RunBatch, instances: int, max_batch_size: int, inline_max_ms: float,
                 stats: BatcherStats, observer: BatchObserver | None, clock: Clock | None = None) -> None:
        if instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        self.name = name
        self.instances = instances
        self._run_batch = run_batch
        self._max_batch_size = max_batch_size
        self._inline_max_s = inline_max_ms / 1000.0
        self._stats = stats
        self._observer = observer
        self._clock = clock  # what the requests' time in the queue is measured by (the running loop unless given)
        # Recent inference seconds per batch size (a moving average): what decides where a batch runs.
        self._inference_s: dict[int, float] = {}
        self._threads = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"infer-{name}")
        # Batches in flight, and the stacking buffers not in use by any of them (at most one per instance).
        self._in_flight: set[asyncio.Task] = set()
        self._instance_free: asyncio.Future | None = None
        self._free_buffers: list[np.ndarray] = []

    async def wait_for_free_instance(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._in_flight) >= self.instances:
            self._instance_free = loop.create_future()
            await self._instance_free
            self._instance_free = None

    async def run(self, batch: list[Pending]) -> None:
        """Start a batch: inline batches have finished when this returns, the others are in flight."""
        if self.runs_inline(sum(pending.images for pending in batch)):
            # An inline batch holds the loop anyway: running it as a task would only let the loop
            # split the queue into smaller batches meanwhile.
            await self._infer(batch)
            return
        task = asyncio.get_running_loop().create_task(self._infer(batch))
        self._in_flight.add(task)
        task.add_done_callback(lambda done, batch=batch: self._batch_finished(done, batch))

    async def close(self) -> None:
        """Wait for every batch in flight, then stop the inference threads."""
        if self._in_flight:
            await asyncio.gather(*self._in_flight)
        self._threads.shutdown(wait=True)

    def runs_inline(self, images: int) -> bool:
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
        returns, which under load is longer than the inference itself; so there the thread's CPU
        time counts, which equals the run's time when ONNX Runtime runs it on the calling thread alone.
        """
        recent = self._inference_s.get(images)
        return recent is not None and recent <= self._inline_max_s

    def _batch_finished(self, task: asyncio.Task, batch: list[Pending]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug after the run (bookkeeping, the observer) must not leave this batch's callers
            # waiting for ever.
            log.error("model %s: a batch failed after inference", self.name, exc_info=task.exception())
            fail(batch, InferenceFailed(f"model {self.name}: internal batching error (see the server log)"))
        if self._instance_free is not None and not self._instance_free.done():
            self._instance_free.set_result(None)

    def _stack(self, batch: list[Pending]) -> tuple[np.ndarray, np.ndarray | None]:
        """The batch's inputs as one array, and the pooled buffer holding them (to give back after the run)."""
        if len(batch) == 1:
            return batch[0].inputs, None  # a batch of one request: no copy at all
        first = batch[0].inputs
        images = sum(p.images for p in batch)
        # Buffers are reused (allocating a batch-sized array per batch is a page-faulting memset),
        # one per batch in flight, so at most `instances` of them ever exist.
        buffer = self._free_buffers.pop() if self._free_buffers else None
        if buffer is None or buffer.shape[0] < images or buffer.shape[1:] != first.shape[1:] or buffer.dtype != first.dtype:
            capacity = max(images, self._max_batch_size)
            buffer = np.empty((capacity, *first.shape[1:]), dtype=first.dtype)
        out = buffer[:images]
        np.concatenate([p.inputs for p in batch], axis=0, out=out)
        return out, buffer

    def _timed_run(self, inputs: np.ndarray) -> tuple[Sequence[np.ndarray], float, float]:
        """The outputs, the wall seconds of the run and the CPU seconds of this thread during it."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        outputs = self._run_batch(inputs)
        return outputs, time.perf_counter() - started, time.thread_time() - cpu_started

    def _remember(self, images: int, seconds: float) -> None:
        recent = self._inference_s.get(images)
        self._inference_s[images] = seconds if recent is None else recent + _RECENT_WEIGHT * (seconds - recent)

    async def _infer(self, batch: list[Pending]) -> None:
        started = (self._clock or asyncio.get_running_loop()).time()
        stacking_started = time.perf_counter()
        inputs, buffer = self._stack(batch)
        input_s = time.perf_counter() - stacking_started
        images = int(inputs.shape[0])
        inline = self.runs_inline(images)
        try:
            if inline:
                outputs, seconds, _ = self._timed_run(inputs)
                blocking_s = seconds
            else:
                loop = asyncio.get_running_loop()
                outputs, seconds, blocking_s = await loop.run_in_executor(self._threads, self._timed_run, inputs)
        except Exception as exc:
            log.exception("model %s: inference failed on a batch of %d images", self.name, inputs.shape[0])
            fail(batch, InferenceFailed(f"model {self.name}: inference failed: {exc}"))
            return
        finally:
            if buffer is not None:
                # Outputs are ONNX Runtime's own arrays, never views of the inputs: the buffer is free.
                self._free_buffers.append(buffer)
        self._remember(images, blocking_s)
        stats = self._stats
        stats.batches += 1
        stats.inline_batches += inline
        stats.images_inferred += images
        stats.requests_inferred += len(batch)
        stats.largest_batch = max(stats.largest_batch, images)
        stats.recent_batch_sizes.append(images)
        if self._observer:
            self._observer.batch_done(self.name, images, len(batch), seconds)
        answering_started = time.perf_counter()
        offset = 0
        for pending in batch:
            if not pending.future.done():
                end = offset + pending.images
                pending.future.set_result([output[offset:end] for output in outputs])
            offset += pending.images
        if self._observer:
            self._observer.execution_timed(
                self.name, images, [started - pending.enqueued_at for pending in batch], input_s, seconds,
                time.perf_counter() - answering_started,
            )


def fail(batch: list[Pending], error: Exception) -> None:
    """Answer every caller of `batch` still waiting with `error`."""
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
