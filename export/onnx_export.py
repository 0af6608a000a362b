"""torch -> ONNX with the maintained (dynamo) exporter, then the checks a file must pass before use.

Opset 20 by default: it is torch 2.15's own default for this exporter, and ONNX Runtime has run it
since 1.17. The exporter implements opsets 18 to 23; outside that range it converts the graph
with the onnx version converter after the fact, which can fail or change operators, so we refuse
it (and ONNX Runtime 1.31 stops at 26 anyway).
"""
from __future__ import annotations

import logging
import warnings

import onnx
import torch

from export.errors import ExportError
from export.graphs import example_input, export_graph, input_name, output_names
from export.source import ExportSource

log = logging.getLogger(__name__)

DEFAULT_OPSET = 20
MIN_OPSET = 18
MAX_OPSET = 23

BATCH_DIM = "batch"
HEIGHT_DIM = "height"
WIDTH_DIM = "width"


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset {opset} is not supported: choose {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET}); "
            "the torch exporter implements these without converting versions"
        )
    return opset


def _dynamic_shapes(source: ExportSource) -> dict[str, dict[int, torch.export.Dim]]:
    dims = {0: torch.export.Dim(BATCH_DIM)}
    if not source.spec.is_classifier:
        dims.update({2: torch.export.Dim(HEIGHT_DIM), 3: torch.export.Dim(WIDTH_DIM)})
    return {input_name(source): dims}


def export_onnx(source: ExportSource, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The exported, checked graph (without its model card yet)."""
    check_opset(opset)
    graph = export_graph(source)
    log.info("exporting %s with torch %s (dynamo exporter, opset %d)", source.name, torch.__version__, opset)
    try:
        with warnings.catch_warnings():
            # The exporter warns about its own internals (deprecations, fallbacks) on every call.
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            program = torch.onnx.export(
                graph,
                (example_input(source),),
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(source),
                input_names=[input_name(source)],
                output_names=output_names(source),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
        raise ExportError(f"torch.onnx.export failed for {source.name!r}: {type(exc).__name__}: {exc}") from exc
    model = program.model_proto
    check_model(model)
    check_signature(model, source)
    return model


def check_model(model: onnx.ModelProto) -> None:
    """The ONNX checker (full: includes shape inference) and strict shape inference."""
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph of {model.graph.name!r} fails the ONNX checks: {exc}") from exc


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [dim.dim_param or dim.dim_value for dim in value_info.type.tensor_type.shape.dim]


def check_signature(model: onnx.ModelProto, source: ExportSource) -> None:
    """The graph's inputs and outputs are the ones the model card promises, with the promised dynamic axes.

    The exporter specialises a dimension silently when the model's code pins it (a reshape to a
    constant batch, say): a server would then reject every other batch size.
    """
    expected_in = input_name(source)
    inputs = [value.name for value in model.graph.input]
    outputs = [value.name for value in model.graph.output]
    if inputs != [expected_in] or outputs != output_names(source):
        raise ExportError(
            f"exported graph has inputs {inputs} and outputs {outputs}; expected [{expected_in!r}] and {output_names(source)}"
        )
    input_dims = _dims(model.graph.input[0])
    if source.spec.is_classifier:
        expected = [BATCH_DIM, 1, *source.preprocessing.input_size]
    else:
        expected = [BATCH_DIM, 1, HEIGHT_DIM, WIDTH_DIM]
    if input_dims != expected:
        raise ExportError(f"exported input {expected_in!r} has shape {input_dims}, expected {expected}")
    for output in model.graph.output:
        dims = _dims(output)
        if not dims or dims[0] != BATCH_DIM:
            raise ExportError(f"exported output {output.name!r} has shape {dims}: its batch dimension is not dynamic")
        if source.spec.is_classifier and dims[1:] != [len(source.labels)]:
            raise ExportError(
                f"output {output.name!r} has shape {dims} but the checkpoint names {len(source.labels)} labels"
            )
