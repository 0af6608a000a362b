"""KServe v2 tensor decoding and checks, without a network."""
from __future__ import annotations

import numpy as np
import pytest

from contracts.errors import InvalidInput, TooLarge
from contracts.generated.inference import grpc_service_pb2 as pb
from contracts.model_file import TensorSpec
from serve.api.grpc_kserve import _contents_input, fill_contents
from serve.core import tensors

PIXELS = TensorSpec("pixels", "FP32", np.dtype(np.float32), (-1, 1, 28, 28))
INT8_IN = TensorSpec("codes", "INT8", np.dtype(np.int8), (-1, 3))


def test_raw_bytes_become_an_array_without_a_copy():
    values = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    raw = values.tobytes()
    array = tensors.from_raw("pixels", raw, (2, 1, 28, 28), PIXELS)
    np.testing.assert_array_equal(array, values)
    assert not array.flags.owndata, "raw input contents should be viewed, not copied"


def test_raw_byte_count_must_match_the_shape():
    with pytest.raises(InvalidInput, match=r"holds 10 bytes; shape \[1, 1, 28, 28\] of FP32 needs 3136"):
        tensors.from_raw("pixels", b"\0" * 10, (1, 1, 28, 28), PIXELS)


def from_contents(name, contents, shape, spec):
    """What the gRPC front door makes of typed `contents`, decoded by the core."""
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=spec.datatype, shape=shape, contents=contents)
    given = _contents_input(tensor)
    return tensors.from_values(name, given.values, tuple(shape), spec, given.source, given.hint)


def test_typed_contents_become_an_array():
    contents = pb.InferTensorContents(fp32_contents=[0.5] * 784)
    array = from_contents("pixels", contents, (1, 1, 28, 28), PIXELS)
    assert array.dtype == np.float32 and array.shape == (1, 1, 28, 28)


def test_typed_contents_count_must_match_and_the_message_names_the_wrong_field():
    contents = pb.InferTensorContents(fp64_contents=[0.5] * 784)
    with pytest.raises(InvalidInput, match=r"contents.fp32_contents holds 0 values.*needs 784.*fp64_contents"):
        from_contents("pixels", contents, (1, 1, 28, 28), PIXELS)


def test_small_integers_are_range_checked():
    ok = from_contents("codes", pb.InferTensorContents(int_contents=[-128, 0, 127]), (1, 3), INT8_IN)
    assert ok.dtype == np.int8 and ok.tolist() == [[-128, 0, 127]]
    with pytest.raises(InvalidInput, match=r"must fit INT8 \[-128, 127\], got \[0, 300\]"):
        from_contents("codes", pb.InferTensorContents(int_contents=[0, 300, 1]), (1, 3), INT8_IN)


@pytest.mark.parametrize(
    "shape, message",
    [
        ([1, 28, 28], r"3 dimensions\); the model expects 4"),
        ([1, 3, 28, 28], r"axis 1 must be 1, got 3"),
        ([1, 1, 32, 32], r"axis 2 must be 28, got 32"),
        ([-1, 1, 28, 28], r"negative dimension"),
        ([0, 1, 28, 28], r"empty batch"),
    ],
)
def test_shapes_are_checked_against_the_model(shape, message):
    with pytest.raises(InvalidInput, match=message):
        tensors.check_shape("pixels", shape, PIXELS, max_batch=64)


def test_a_batch_beyond_the_limit_is_too_large():
    with pytest.raises(TooLarge, match="batch of 65; the limit is 64"):
        tensors.check_shape("pixels", [65, 1, 28, 28], PIXELS, max_batch=64)


def test_datatype_must_match():
    with pytest.raises(InvalidInput, match="datatype INT64; the model expects FP32"):
        tensors.check_datatype("pixels", "INT64", PIXELS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    array = np.zeros((1, 1, 28, 28), np.float32)
    array[0, 0, 3, 4] = bad
    with pytest.raises(InvalidInput, match="1 NaN or infinite values"):
        tensors.check_values("pixels", array, "FP32", None)


def test_values_outside_the_card_range_are_refused_with_a_hint():
    array = np.full((1, 1, 28, 28), 255.0, np.float32)
    with pytest.raises(InvalidInput, match=r"must lie in \[0, 1\], got \[255, 255\]; divide 8-bit pixels by 255"):
        tensors.check_values("pixels", array, "FP32", [0.0, 1.0])
    tensors.check_values("pixels", array, "FP32", None)  # third-party models: any finite value


def test_outputs_round_trip_through_raw_and_contents():
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert np.frombuffer(tensors.to_raw(array), "<i8").tolist() == list(range(6))
    contents = pb.InferTensorContents()
    fill_contents(contents, array, "INT64")
    assert list(contents.int64_contents) == list(range(6))
