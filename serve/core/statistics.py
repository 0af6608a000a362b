"""Per model version: what it answered and where the time went, as Triton's statistics extension counts.

Per request: success and fail (counted from the data plane's entry to its answer) and the
request's queue, compute_input (stacking the batch), compute_infer (the ONNX Runtime run) and
compute_output (cutting the outputs back into answers) times, each request charged the whole of its
batch's compute times as Triton does. Per execution: inference_count (batch items),
execution_count, and per batch size the executions and their compute times. The statistics
extension (gRPC ModelStatistics, HTTP /v2/models/.../stats) and the Prometheus `nv_inference_*`
metrics both read these numbers: one count, two views.

Updated on the event loop only (the batcher and the data plane live there): no locks. A reader on
another thread (the metrics endpoint) may see one update half applied, never a broken structure.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

_NS = 1_000_000_000


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * _NS)

    def to_dict(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchSizeStatistics:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class VersionStatistics:
    name: str
    version: str
    # Milliseconds since the epoch of the last inference (0: none yet).
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batch_sizes: dict[int, BatchSizeStatistics] = field(default_factory=dict)

    def request_done(self, succeeded: bool, seconds: float) -> None:
        (self.success if succeeded else self.fail).add(seconds)

    def execution_done(
        self, items: int, queue_seconds: Sequence[float], input_s: float, infer_s: float, output_s: float,
    ) -> None:
        """One ONNX Runtime run of `items` batch items for len(queue_seconds) requests."""
        self.last_inference_ms = int(time.time() * 1000)
        self.inference_count += items
        self.execution_count += 1
        requests = len(queue_seconds)
        for seconds in queue_seconds:
            self.queue.add(seconds)
        self.compute_input.add(input_s * requests, requests)
        self.compute_infer.add(infer_s * requests, requests)
        self.compute_output.add(output_s * requests, requests)
        sized = self.batch_sizes.get(items)
        if sized is None:
            sized = self.batch_sizes[items] = BatchSizeStatistics()
        sized.compute_input.add(input_s)
        sized.compute_infer.add(infer_s)
        sized.compute_output.add(output_s)

    def to_dict(self) -> dict:
        """Triton's statistics extension's ModelStatistics, as its HTTP JSON (and gRPC fields) name it."""
        batch_stats = [
            {
                "batch_size": size,
                "compute_input": sized.compute_input.to_dict(),
                "compute_infer": sized.compute_infer.to_dict(),
                "compute_output": sized.compute_output.to_dict(),
            }
            for size, sized in sorted(self.batch_sizes.items())
        ]
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_dict(),
                "fail": self.fail.to_dict(),
                "queue": self.queue.to_dict(),
                "compute_input": self.compute_input.to_dict(),
                "compute_infer": self.compute_infer.to_dict(),
                "compute_output": self.compute_output.to_dict(),
                # No response cache here: both stay zero, present because Triton's clients read them.
                "cache_hit": Duration().to_dict(),
                "cache_miss": Duration().to_dict(),
            },
            "batch_stats": batch_stats,
            "memory_usage": [],
        }
