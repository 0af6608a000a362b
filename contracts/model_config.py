"""A model's config.pbtxt: Triton's model configuration, read by the server and written by export.

One file per model folder of a repository (REPO/NAME/config.pbtxt). The server reads the version
policy, max_batch_size, dynamic_batching's delay and instance_group's count from it; export writes
one whose platform, tensors and batching match the ONNX file, so the same repository also loads in
Triton Inference Server. Fields outside our subset of Triton's schema are skipped when reading.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from google.protobuf import text_format

from contracts.generated.inference import model_config_pb2 as mc

CONFIG_FILE = "config.pbtxt"
DEFAULT_MODEL_FILE = "model.onnx"
PLATFORM = "onnxruntime_onnx"  # the platform name Triton gives ONNX Runtime models
# The dynamic batching a served model gets unless its config says otherwise (export writes them too).
DEFAULT_MAX_BATCH_SIZE = 256
DEFAULT_MAX_DELAY_MS = 2.0

# KServe v2 datatype names -> Triton's config enum (BYTES is Triton's TYPE_STRING).
_CONFIG_TYPES = {
    "BOOL": mc.TYPE_BOOL, "UINT8": mc.TYPE_UINT8, "UINT16": mc.TYPE_UINT16, "UINT32": mc.TYPE_UINT32,
    "UINT64": mc.TYPE_UINT64, "INT8": mc.TYPE_INT8, "INT16": mc.TYPE_INT16, "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64, "FP16": mc.TYPE_FP16, "FP32": mc.TYPE_FP32, "FP64": mc.TYPE_FP64,
    "BYTES": mc.TYPE_STRING,
}

ModelConfig = mc.ModelConfig


class ModelConfigError(ValueError):
    """A config.pbtxt that cannot be used; the message names the file and the field."""


def config_datatype(datatype: str) -> int:
    return _CONFIG_TYPES[datatype]


def read_config(path: Path) -> ModelConfig:
    """The config in `path`, checked for values this server cannot honour."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"cannot read {path}: {exc}") from exc
    config = ModelConfig()
    try:
        text_format.Parse(text, config, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise ModelConfigError(f"{path} is not a valid Triton model configuration: {exc}") from exc
    if config.platform and config.platform != PLATFORM:
        raise ModelConfigError(f"{path}: platform {config.platform!r} is not served here; use {PLATFORM!r}")
    if config.backend and config.backend != "onnxruntime":
        raise ModelConfigError(f"{path}: backend {config.backend!r} is not served here; use \"onnxruntime\"")
    if config.max_batch_size < 0:
        raise ModelConfigError(f"{path}: max_batch_size must be >= 0, got {config.max_batch_size}")
    for group in config.instance_group:
        if group.count < 0:
            raise ModelConfigError(f"{path}: instance_group count must be >= 1, got {group.count}")
    policy = config.version_policy
    if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 1:
        raise ModelConfigError(f"{path}: version_policy latest needs num_versions >= 1")
    return config


def write_config(config: ModelConfig, path: Path) -> None:
    Path(path).write_text(text_format.MessageToString(config))


def model_file_name(config: ModelConfig | None) -> str:
    return (config.default_model_filename if config is not None else "") or DEFAULT_MODEL_FILE


def select_versions(config: ModelConfig | None, available: Sequence[int]) -> list[int]:
    """The versions to serve under the config's version policy (Triton's default: the newest one)."""
    newest_first = sorted(set(available), reverse=True)
    policy = config.version_policy if config is not None else None
    choice = policy.WhichOneof("policy_choice") if policy is not None else None
    if choice == "all":
        return sorted(newest_first)
    if choice == "specific":
        return sorted(set(policy.specific.versions) & set(newest_first))
    count = policy.latest.num_versions if choice == "latest" else 1
    return sorted(newest_first[:count])


def describe_policy(config: ModelConfig | None) -> str:
    policy = config.version_policy if config is not None else None
    choice = policy.WhichOneof("policy_choice") if policy is not None else None
    if choice == "all":
        return "all versions"
    if choice == "specific":
        return "versions " + ", ".join(str(v) for v in policy.specific.versions)
    count = policy.latest.num_versions if choice == "latest" else 1
    return "the newest version" if count == 1 else f"the newest {count} versions"


def instances_for(config: ModelConfig | None, default: int) -> int:
    """Model instances: the sum of the instance groups' counts (Triton's meaning), else the server's."""
    if config is None or not config.instance_group:
        return default
    return max(1, sum(group.count or 1 for group in config.instance_group))


def triton_config(
    name: str,
    inputs: Sequence[tuple[str, str, Sequence[int]]],
    outputs: Sequence[tuple[str, str, Sequence[int]]],
    instances: int,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS,
) -> ModelConfig:
    """The config.pbtxt Triton needs for an ONNX model whose tensors are (name, v2 datatype, shape).

    A leading dimension that is dynamic in every tensor is the batch dimension: max_batch_size is
    then the batching limit and dims leave it out (Triton's convention); otherwise max_batch_size
    is 0 and dims are the full shapes. Dynamic batching is configured only when each input's other
    dimensions are fixed (requests of different sizes cannot be stacked).
    """
    tensors = [*inputs, *outputs]
    batched = all(len(shape) >= 1 and shape[0] == -1 for _, _, shape in tensors)
    config = ModelConfig(name=name, platform=PLATFORM, max_batch_size=max_batch_size if batched else 0)
    config.version_policy.latest.num_versions = 1
    for tensor_name, datatype, shape in inputs:
        config.input.add(name=tensor_name, data_type=config_datatype(datatype), dims=list(shape[1:] if batched else shape))
    for tensor_name, datatype, shape in outputs:
        config.output.add(name=tensor_name, data_type=config_datatype(datatype), dims=list(shape[1:] if batched else shape))
    stackable = batched and all(all(d > 0 for d in shape[1:]) for _, _, shape in inputs)
    if stackable and max_batch_size > 1:
        config.dynamic_batching.max_queue_delay_microseconds = round(max_delay_ms * 1000)
    config.instance_group.add(count=instances)
    return config
