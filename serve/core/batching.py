"""Dynamic batching: concurrent requests for one model coalesced into one ONNX Runtime call.

The policy is Triton's dynamic batcher: a batch goes to inference when it holds `max_batch_size`
images, or when its oldest request has waited `max_delay_ms`, whichever comes first; except that a
lone request after a lone request does not wait (nothing suggests company is coming, and a client
alone with the server would pay the delay on every call). The work is split by job: the queue
(serve.core.batch_queue: bounds, batch formation, dropping requests nobody waits for) and the
executor (serve.core.batch_executor: instances, inline or threaded runs, buffers, answers); this
module decides when a batch is cut.

Everything here runs on one asyncio event loop except the inference call itself, so the queue
needs no locks. Nothing here knows about a protocol.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from contracts.errors import InvalidInput
from contracts.model_config import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_DELAY_MS,
    ModelConfig,
)
from serve.core.batch_executor import BatchExecutor, InferenceFailed, RunBatch, fail
from serve.core.batch_queue import (
    BatcherStats,
    BatchObserver,
    BatchQueue,
    Clock,
    Pending,
)
from serve.core.errors import Unavailable

log = logging.getLogger(__name__)

__all__ = [
    "BatchingOptions", "batching_for", "BatchObserver", "BatcherStats", "Clock", "DynamicBatcher", "InferenceFailed",
]


@dataclass(frozen=True)
class BatchingOptions:
    # Most images in one ONNX Runtime call (a single larger request still runs, alone).
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    # Longest time the oldest queued request waits for the batch to fill.
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS
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


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        options: BatchingOptions = BatchingOptions(),
        observer: BatchObserver | None = None,
        instances: int = 1,
        clock: Clock | None = None,
    ) -> None:
        """`instances`: batches that may run at once, each in its own inference thread (see
        contracts.sessions.RuntimeOptions.instances for how they share the cores). `clock`: what
        delays and deadlines are measured by; the running event loop unless given."""
        self.name = name
        self.options = options
        self.stats = BatcherStats()
        self._clock = clock
        self._queue = BatchQueue(name, options.max_batch_size, options.max_queue_images, self.stats, observer)
        self._executor = BatchExecutor(name, run_batch, instances, options.max_batch_size, options.inline_max_ms,
                                       self.stats, observer, clock)
        self.instances = instances
        self._max_delay_s = options.max_delay_ms / 1000.0
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

    @property
    def queued_images(self) -> int:
        """Images waiting for a batch to take them (what the queue-depth metric reports)."""
        return self._queue.images

    async def submit(self, inputs: np.ndarray, deadline: float | None = None) -> list[np.ndarray]:
        """Infer `inputs` (images x ...) with other callers' images; returns this caller's rows of every output.

        `deadline` is in the batcher's clock: the event loop's (loop.time()) unless one was given.
        Cancelling the awaiting task takes the request out of the next batch.
        """
        if self._closing:
            raise Unavailable(f"model {self.name} is shutting down: send the request to another replica or retry later")
        images = int(inputs.shape[0])
        if images == 0:
            raise InvalidInput("a request must carry at least one image")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(Pending(inputs, images, future, (self._clock or loop).time(), deadline))
        if self._task is None:
            self._task = loop.create_task(self._run(), name=f"batcher-{self.name}")
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if self._batch_full is not None and not self._batch_full.done() and self._queue.images >= self.options.max_batch_size:
            self._batch_full.set_result(None)
        return await future

    def drain(self) -> None:
        """Stop waiting for batches to fill: the server is shutting down and no new callers will come."""
        self._draining = True
        if self._batch_full is not None and not self._batch_full.done():
            self._batch_full.set_result(None)

    async def close(self) -> None:
        """Refuse new requests, infer what is queued, then stop the inference threads."""
        self._closing = True
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if self._batch_full is not None and not self._batch_full.done():
            self._batch_full.set_result(None)
        if self._task is not None:
            await self._task
        await self._executor.close()

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
                fail([self._queue.pop()], error)
            self._task = None

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self._clock or loop
        queue = self._queue
        while True:
            # Every instance busy: the queue grows into the next batch meanwhile.
            await self._executor.wait_for_free_instance()
            if not queue:
                if self._closing:
                    return
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            waiting_pays = (
                self._max_delay_s > 0
                and not (self._closing or self._draining)
                and (self._company_seen or len(queue) > 1)
            )
            if queue.images < self.options.max_batch_size and waiting_pays:
                wait_s = queue.oldest_enqueued_at + self._max_delay_s - clock.time()
                if wait_s > 0:
                    self._batch_full = loop.create_future()
                    timer = clock.call_later(wait_s, _resolve, self._batch_full)
                    await self._batch_full
                    timer.cancel()
                    self._batch_full = None
            batch = queue.take_batch(clock.time())
            if batch:
                self._company_seen = len(batch) > 1
                await self._executor.run(batch)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def batching_for(config: ModelConfig | None, default: BatchingOptions) -> BatchingOptions:
    """The server's batching options, with what the model's config says in place of the defaults."""
    if config is None:
        return default
    changes: dict = {}
    if config.max_batch_size > 0:
        changes["max_batch_size"] = config.max_batch_size
        changes["max_queue_images"] = max(default.max_queue_images, config.max_batch_size)
    elif config.max_batch_size == 0 and config.input:
        # Triton's "no batching": one request per inference call.
        changes["max_batch_size"] = 1
        changes["max_delay_ms"] = 0.0
    if config.HasField("dynamic_batching"):
        changes["max_delay_ms"] = config.dynamic_batching.max_queue_delay_microseconds / 1000.0
    return dataclasses.replace(default, **changes) if changes else default
