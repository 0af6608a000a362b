"""inference.GRPCInferenceService (KServe v2 / Open Inference Protocol): tensors in, tensors out.

Inputs arrive as raw little-endian bytes (`raw_input_contents`, what Triton's clients send) or as
typed lists (`contents`); answers come back the same way the request came (raw bytes for raw
requests, typed lists otherwise). Every model is served here, third-party ones included, under its
own input and output names. The provider that runs a model is sent as the response metadata
`x-execution-provider` of ModelMetadata (the v2 message has no field for it).
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping

from serve.core import tensors
from serve.core.errors import InvalidInput, ModelNotFound
from serve.generated.inference import grpc_service_pb2 as pb
from serve.generated.inference import grpc_service_pb2_grpc as pb_grpc
from serve.core.runner import ModelRunner
from serve.api.metrics import Metrics
from serve.core.repository import PLATFORM, Model, ModelRepository
from serve.api.grpc_calls import deadline_from, unary
from serve.core.admission import Admission

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "digit-zoo"
PROVIDER_METADATA_KEY = "x-execution-provider"


def _tensor_metadata(spec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def decode_inputs(request: pb.ModelInferRequest, model: Model, max_batch: int) -> tuple[dict, bool]:
    """The request's inputs as numpy arrays by name, checked; and whether they came raw."""
    raw_contents = request.raw_input_contents
    uses_raw = len(raw_contents) > 0
    if uses_raw and len(raw_contents) != len(request.inputs):
        raise InvalidInput(
            f"the request has {len(request.inputs)} inputs but {len(raw_contents)} raw_input_contents entries; "
            "send one raw entry per input, in the order of `inputs`"
        )
    expected_names = [spec.name for spec in model.inputs]
    feeds = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        try:
            spec = model.input(name)
        except KeyError:
            raise InvalidInput(f"model {model.name} has no input {name!r}; its inputs are {expected_names}") from None
        if name in feeds:
            raise InvalidInput(f"input {name!r} appears twice in the request")
        tensors.check_datatype(name, tensor.datatype, spec)
        shape = tensors.check_shape(name, tensor.shape, spec, max_batch)
        if uses_raw:
            if tensor.HasField("contents") and tensor.contents.ListFields():
                raise InvalidInput(
                    f"input {name!r} has both `contents` and raw_input_contents; send its data one way only"
                )
            array = tensors.from_raw(name, raw_contents[index], shape, spec)
        else:
            array = tensors.from_contents(name, tensor.contents, shape, spec)
        value_range = model.card.value_range if model.card is not None else None
        tensors.check_values(name, array, spec.datatype, value_range)
        feeds[name] = array
    missing = [name for name in expected_names if name not in feeds]
    if missing:
        raise InvalidInput(f"model {model.name} needs inputs {missing} that the request lacks; its inputs are {expected_names}")
    tensors.check_named_dimensions(feeds, model.inputs)
    return feeds, uses_raw


def requested_outputs(request: pb.ModelInferRequest, model: Model) -> list[int]:
    """Indices into model.outputs of the outputs to return (all of them when none are named)."""
    if not request.outputs:
        return list(range(len(model.outputs)))
    indices = []
    for wanted in request.outputs:
        try:
            indices.append(model.output_index(wanted.name))
        except KeyError:
            names = [spec.name for spec in model.outputs]
            raise InvalidInput(f"model {model.name} has no output {wanted.name!r}; its outputs are {names}") from None
    return indices


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        repository: ModelRepository,
        runners: Mapping[str, ModelRunner],
        max_images_per_request: int,
        version: str,
        is_ready: Callable[[], bool],
        metrics: Metrics | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.repository = repository
        self.runners = runners
        self.metrics = metrics
        self.admission = admission
        self._max_batch = max_images_per_request
        self._version = version
        self._is_ready = is_ready

    @unary(SERVICE)
    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @unary(SERVICE)
    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._is_ready())

    @unary(SERVICE)
    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:
        # As Triton does: an unknown model (or version) is simply not ready.
        try:
            self.repository.get(request.name, request.version)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self._is_ready())

    @unary(SERVICE)
    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._version, extensions=[])

    @unary(SERVICE)
    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:
        model = self.repository.get(request.name, request.version)
        await context.send_initial_metadata(((PROVIDER_METADATA_KEY, model.provider),))
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[model.version],
            platform=PLATFORM,
            inputs=[_tensor_metadata(spec) for spec in model.inputs],
            outputs=[_tensor_metadata(spec) for spec in model.outputs],
        )

    @unary(SERVICE)
    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        model = self.repository.get(request.model_name, request.model_version)
        feeds, uses_raw = decode_inputs(request, model, self._max_batch)
        wanted = requested_outputs(request, model)
        outputs = await self.runners[model.name].infer(feeds, deadline_from(context))
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for index in wanted:
            spec, array = model.outputs[index], outputs[index]
            tensor = response.outputs.add(name=spec.name, datatype=spec.datatype, shape=array.shape)
            if uses_raw:
                response.raw_output_contents.append(tensors.to_raw(array))
            else:
                tensors.fill_contents(tensor.contents, array, spec.datatype)
        return response
