"""Running one model for the servicers: through the dynamic batcher when its input allows it.

A model with one input whose leading dimension is the batch (every digit classifier, most
third-party classifiers) goes through a DynamicBatcher, so requests from both APIs share batches.
Other models (several inputs, dynamic image sizes such as the edge detector) run one ONNX Runtime
call per request, on the same kind of dedicated inference thread, after the same deadline check.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import (
    InvalidArgument as OrtInvalidArgument,
)

from contracts.errors import InvalidInput
from contracts.model_file import Model
from contracts.sessions import CPU
from serve.core.batching import (
    BatchingOptions,
    BatchObserver,
    DynamicBatcher,
    InferenceFailed,
)
from serve.core.errors import DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)
# ORT's log severity that prints fatal errors only.
_ORT_LOG_FATAL = 4


class ModelRunner:
    def __init__(
        self, model: Model, batching: BatchingOptions, observer: BatchObserver | None = None, instances: int = 1,
    ) -> None:
        self.model = model
        self._observer = observer
        self.batcher: DynamicBatcher | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        if model.batchable:
            if model.provider != CPU:
                # A GPU run's time is the device's: the calling thread mostly waits, so its CPU time
                # says nothing about how long an inline run would hold the event loop. Keep GPU
                # batches in the inference threads.
                batching = dataclasses.replace(batching, inline_max_ms=0.0)
            self.batcher = DynamicBatcher(model.name, model.run_batch, batching, observer, instances)
        else:
            self._executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"infer-{model.name}")
            # Shapes a dynamic-size model cannot take fail inside the graph and are answered
            # INVALID_ARGUMENT; ORT would also print each one to stderr, so that any client could
            # flood the server's log. Its own log stays quiet for these runs; real failures are logged here.
            self._run_options = ort.RunOptions()
            self._run_options.log_severity_level = _ORT_LOG_FATAL

    async def infer(self, feeds: dict[str, np.ndarray], deadline: float | None = None) -> list[np.ndarray]:
        """Every output of the model (in model.outputs order) for these inputs."""
        if self.batcher is not None:
            (inputs,) = feeds.values()
            return await self.batcher.submit(inputs, deadline)
        return await self._infer_alone(feeds, deadline)

    async def _infer_alone(self, feeds: dict[str, np.ndarray], deadline: float | None) -> list[np.ndarray]:
        if self._closing:
            raise Unavailable(f"model {self.model.name} is shutting down: retry on another replica or later")
        loop = asyncio.get_running_loop()
        if deadline is not None and deadline <= loop.time():
            raise DeadlineExceeded(f"the request's deadline passed before model {self.model.name} ran it")
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self.model.run, feeds, self._run_options)
        except OrtInvalidArgument as exc:
            # Shapes the model's dynamic dimensions cannot take (only known once the graph runs).
            raise InvalidInput(f"model {self.model.name} cannot run these inputs: {exc}") from exc
        except Exception as exc:
            log.exception("model %s: inference failed", self.model.name)
            raise InferenceFailed(f"model {self.model.name}: inference failed: {exc}") from exc
        if self._observer:
            seconds = time.perf_counter() - started
            items = int(next(iter(feeds.values())).shape[0]) if feeds else 1
            self._observer.batch_done(self.model.name, items, 1, seconds)
            self._observer.execution_timed(self.model.name, items, [0.0], 0.0, seconds, 0.0)
        return outputs

    def drain(self) -> None:
        if self.batcher is not None:
            self.batcher.drain()

    async def close(self) -> None:
        self._closing = True
        if self.batcher is not None:
            await self.batcher.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
