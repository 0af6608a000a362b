"""Static INT8 quantization (QDQ) with ONNX Runtime's tools, calibrated on training images.

Choices, for a CPU server (the ONNX Runtime guidance for x86 and ARM):
- QDQ format (QuantizeLinear/DequantizeLinear pairs around float ops): ONNX Runtime fuses them into
  integer kernels, and the file stays a standard ONNX graph that other runtimes can read.
- Activations uint8 (asymmetric: after ReLU or sigmoid they are one-signed), weights int8,
  symmetric, with one scale per output channel (each filter gets its own range).
- MinMax calibration on a sample of training images, never test images.
- Three nodes stay float. The first convolution, which sees the raw digit: quantizing it too
  cost the d2l LeNet-5 about 0.2 points of MNIST accuracy (0.05 with it in float), and it is only
  a quarter of the multiply-adds. And the nodes that produce the graph's outputs: logits
  quantized to 256 levels would create argmax ties, and clients read the probabilities as
  numbers, not as 8-bit steps.
`quant_pre_process` first runs shape inference and ONNX Runtime's basic fusions, as recommended.

Whether INT8 is faster depends on the CPU: with VNNI (AVX-512 VNNI, AVX-VNNI, ARM dot product)
integer kernels win; on plain AVX2 a model this small can be slower than FP32. The speed is
therefore measured, FP32 and INT8 alternately in the same run, and reported, never assumed.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from export.errors import ExportError

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_IMAGES = 1000
CALIBRATION_BATCH = 100
DEFAULT_MAX_ACCURACY_DROP = 0.3  # percentage points
SPEED_BATCH_SIZES = (1, 64)
SPEED_ROUNDS = 7  # rounds of alternating FP32 / INT8 timing; the median is reported
SPEED_MIN_SECONDS = 0.05  # each timed run repeats until it lasts at least this long


class PixelBatches(CalibrationDataReader):
    """Feeds calibration pixels to the graph's input in fixed-size batches."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch_size: int = CALIBRATION_BATCH):
        self.input_name = input_name
        self.pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        self.batch_size = batch_size
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.pixels):
            return None
        batch = self.pixels[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position = 0


COMPUTE_OPS = ("Conv", "Gemm", "MatMul")


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes kept in float: the first compute node, and those that produce the graph's outputs."""
    outputs = {value.name for value in model.graph.output}
    keep = [node.name for node in model.graph.node if outputs.intersection(node.output)]
    # Graph nodes are stored in topological order, so the first compute node is the one nearest the input.
    first_compute = next((node.name for node in model.graph.node if node.op_type in COMPUTE_OPS), None)
    if first_compute is not None and first_compute not in keep:
        keep.insert(0, first_compute)
    return keep


def quantize_int8(fp32_path: Path, int8_path: Path, input_name: str, calibration_pixels: np.ndarray) -> Path:
    """Write the INT8 QDQ model to `int8_path` (without a model card: the caller adds one)."""
    if len(calibration_pixels) == 0:
        raise ExportError("int8 quantization needs calibration images; got none")
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        keep_float = float_nodes(onnx.load(prepared))
        log.info(
            "quantizing %s to INT8 (QDQ, per-channel weights), calibrated on %d training images; "
            "kept in float: %s",
            fp32_path.name,
            len(calibration_pixels),
            ", ".join(keep_float),
        )
        quantize_static(
            str(prepared),
            str(int8_path),
            PixelBatches(input_name, calibration_pixels),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_float,
        )
    return int8_path


@dataclass
class SpeedComparison:
    batch_size: int
    fp32_ms: float  # median milliseconds per batch
    int8_ms: float

    @property
    def speedup(self) -> float:
        """FP32 time over INT8 time: above 1 means INT8 is faster."""
        return self.fp32_ms / self.int8_ms


def _time_per_run(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> float:
    runs, start = 0, time.perf_counter()
    while True:
        session.run(None, feed)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= SPEED_MIN_SECONDS:
            return elapsed / runs


def compare_speed(
    fp32: ort.InferenceSession, int8: ort.InferenceSession, pixels: np.ndarray, batch_sizes=SPEED_BATCH_SIZES
) -> list[SpeedComparison]:
    """Median time per batch of both models, measured alternately in this run so load affects both alike."""
    input_name = fp32.get_inputs()[0].name
    results = []
    for batch_size in batch_sizes:
        feed = {input_name: np.ascontiguousarray(pixels[:batch_size], dtype=np.float32)}
        for session in (fp32, int8):  # warm-up: first runs allocate and pick kernels
            session.run(None, feed)
        fp32_times, int8_times = [], []
        for _ in range(SPEED_ROUNDS):
            fp32_times.append(_time_per_run(fp32, feed))
            int8_times.append(_time_per_run(int8, feed))
        results.append(
            SpeedComparison(batch_size, 1000 * float(np.median(fp32_times)), 1000 * float(np.median(int8_times)))
        )
    return results
