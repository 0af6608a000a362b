"""inference.GRPCInferenceService (KServe v2 / Open Inference Protocol) over gRPC: tensors in, tensors out.

Inputs arrive as raw little-endian bytes (`raw_input_contents`, what Triton's clients send) or as
typed lists (`contents`); answers come back the same way the request came (raw bytes for raw
requests, typed lists otherwise). Every model is served here, third-party ones included, under its
own input and output names; the repository and statistics extensions come from
serve.api.grpc_extensions. The provider that runs a model is sent as the response metadata
`x-execution-provider` of ModelMetadata (the v2 message has no field for it).
"""
from __future__ import annotations

import logging

import numpy as np

from contracts.errors import InvalidInput
from contracts.generated.inference import grpc_service_pb2 as pb
from contracts.generated.inference import grpc_service_pb2_grpc as pb_grpc
from contracts.model_file import Model
from serve.api.grpc_calls import deadline_from, unary
from serve.api.grpc_extensions import TritonExtensionRpcs
from serve.api.metrics import Metrics
from serve.api.services import INFERENCE_SERVICE
from serve.core import tensors
from serve.core.admission import Admission
from serve.core.dataplane import DataPlane, InferRequest
from serve.core.tensors import InferInput

log = logging.getLogger(__name__)

PROVIDER_METADATA_KEY = "x-execution-provider"

# The InferTensorContents field that carries each datatype (the small integers travel widened).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _tensor_metadata(spec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def _contents_input(tensor: pb.ModelInferRequest.InferInputTensor) -> InferInput:
    field_name = CONTENTS_FIELD.get(tensor.datatype)
    if field_name is None:
        # Not a contents datatype (FP16, or an unknown name, which the datatype check names first).
        return InferInput(tensor.name, tensor.datatype, tensor.shape, values=(), source="contents",
                          hint=f" ({tensor.datatype} tensors can only be sent as raw_input_contents)")
    populated = [f.name for f, _ in tensor.contents.ListFields()]
    hint = f" (the request filled {', '.join(populated)})" if populated and field_name not in populated else ""
    return InferInput(tensor.name, tensor.datatype, tensor.shape, values=getattr(tensor.contents, field_name),
                      source=f"contents.{field_name}", hint=hint)


def core_inputs(request: pb.ModelInferRequest) -> tuple[list[InferInput], bool]:
    """The request's inputs for the data plane, and whether they came raw."""
    raw_contents = request.raw_input_contents
    uses_raw = len(raw_contents) > 0
    if uses_raw and len(raw_contents) != len(request.inputs):
        raise InvalidInput(
            f"the request has {len(request.inputs)} inputs but {len(raw_contents)} raw_input_contents entries; "
            "send one raw entry per input, in the order of `inputs`"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        if uses_raw:
            if tensor.HasField("contents") and tensor.contents.ListFields():
                raise InvalidInput(
                    f"input {tensor.name!r} has both `contents` and raw_input_contents; send its data one way only"
                )
            inputs.append(InferInput(tensor.name, tensor.datatype, tensor.shape, raw=raw_contents[index]))
        else:
            inputs.append(_contents_input(tensor))
    return inputs, uses_raw


def decode_inputs(request: pb.ModelInferRequest, model: Model, max_batch: int) -> tuple[dict, bool]:
    """The request's inputs as numpy arrays by name, checked; and whether they came raw."""
    inputs, uses_raw = core_inputs(request)
    return tensors.decode_inputs(model, inputs, max_batch), uses_raw


def requested_outputs(request: pb.ModelInferRequest, model: Model) -> list[int]:
    return tensors.requested_outputs(model, [wanted.name for wanted in request.outputs])


def fill_contents(contents, array: np.ndarray, datatype: str) -> None:
    """Write an output array into the typed InferTensorContents field of its datatype."""
    field_name = CONTENTS_FIELD.get(datatype)
    if field_name is None:
        raise InvalidInput(f"output datatype {datatype} can only be returned as raw_output_contents; send raw inputs")
    getattr(contents, field_name).extend(array.ravel().tolist())


class KServeServicer(TritonExtensionRpcs, pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, metrics: Metrics | None = None, admission: Admission | None = None) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.admission = admission

    @unary(INFERENCE_SERVICE)
    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @unary(INFERENCE_SERVICE)
    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @unary(INFERENCE_SERVICE)
    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    @unary(INFERENCE_SERVICE)
    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        metadata = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(name=metadata.name, version=metadata.version, extensions=metadata.extensions)

    @unary(INFERENCE_SERVICE)
    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        metadata = self.dataplane.inference_metadata(request.name, request.version)
        await context.send_initial_metadata(((PROVIDER_METADATA_KEY, metadata.execution_provider),))
        return pb.ModelMetadataResponse(
            name=metadata.name,
            versions=metadata.versions,
            platform=metadata.platform,
            inputs=[_tensor_metadata(spec) for spec in metadata.inputs],
            outputs=[_tensor_metadata(spec) for spec in metadata.outputs],
        )

    @unary(INFERENCE_SERVICE)
    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        self.dataplane.model(request.model_name, request.model_version)  # an unknown model is NOT_FOUND first
        inputs, uses_raw = core_inputs(request)
        result = await self.dataplane.infer(
            InferRequest(request.model_name, inputs, request.model_version, request.id,
                         [wanted.name for wanted in request.outputs]),
            deadline_from(context),
        )
        model = result.model
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        # Field by field: protobuf's keyword arguments cost more than assignments, on every call.
        add_output, raw_outputs = response.outputs.add, response.raw_output_contents
        for spec, array in result.outputs:
            tensor = add_output()
            tensor.name = spec.name
            tensor.datatype = spec.datatype
            tensor.shape.extend(array.shape)
            if uses_raw:
                raw_outputs.append(tensors.to_raw(array))
            else:
                fill_contents(tensor.contents, array, spec.datatype)
        return response
