"""ONNX Runtime's offline-optimised graph: the fusions a session would do at load time, done once and saved.

"extended" (the default) adds ONNX Runtime's contrib fusions (FusedConv, FusedGemm, in the
com.microsoft domain) to the "basic" ones (constant folding, redundant node removal): the result
runs only on ONNX Runtime. "basic" keeps standard ONNX operators. "all" is not offered: its
layout transforms (NCHWc) are specific to the CPU that ran the optimisation.
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnx
import onnxruntime as ort

from export.providers import CPU

log = logging.getLogger(__name__)

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}
DEFAULT_LEVEL = "extended"


def save_optimized(model_path: Path, optimized_path: Path, level: str = DEFAULT_LEVEL) -> onnx.ModelProto:
    """Optimise `model_path` for the CPU provider and return the saved graph (metadata is for the caller)."""
    if level not in LEVELS:
        raise ValueError(f"optimisation level must be one of {sorted(LEVELS)}, got {level!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.optimized_model_filepath = str(optimized_path)
    ort.InferenceSession(str(model_path), options, providers=[CPU])
    model = onnx.load(optimized_path)
    prune_unused_domains(model)
    log.info(
        "ONNX Runtime %s (%s level) optimised %s: %d nodes -> %d",
        ort.__version__,
        level,
        model_path.name,
        len(onnx.load(model_path).graph.node),
        len(model.graph.node),
    )
    return model


def prune_unused_domains(model: onnx.ModelProto) -> None:
    """ONNX Runtime declares every domain it knows in the saved file; keep the ones the graph uses."""
    used = {node.domain for node in model.graph.node} | {""}
    kept = [opset for opset in model.opset_import if opset.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
