"""The model zoo test data: written in the right layout, validated against the model, by any backend."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from export.cases import random_cases
from export.errors import CheckFailed
from export.test_data import (
    TEST_DATA_SET,
    load_test_data,
    validate_test_data,
    write_test_data,
)


def _write(source, path, tmp_path):
    case = random_cases(source, seed=5)[1]  # a batch of 7
    input_name = "pixels" if source.spec.is_classifier else "image"
    return write_test_data(tmp_path / "model.test_data", input_name, case.inputs, case.reference)


@pytest.mark.parametrize("name", ["lenet", "conv2d"])
def test_test_data_layout_and_validation(name, random_export, tmp_path):
    source, path = random_export(name)
    set_dir = _write(source, path, tmp_path)
    assert set_dir.name == TEST_DATA_SET
    expected_files = {"input_0.pb", "output_0.pb"} | ({"output_1.pb"} if source.spec.is_classifier else set())
    assert {file.name for file in set_dir.iterdir()} == expected_files
    inputs, outputs = load_test_data(set_dir)
    graph = onnx.load(path).graph
    assert [name for name, _ in inputs] == [value.name for value in graph.input]
    assert [name for name, _ in outputs] == [value.name for value in graph.output]
    differences = validate_test_data(path, set_dir, atol=1e-5)
    assert set(differences) == {value.name for value in graph.output}


@pytest.mark.parametrize("name", ["lenet", "conv2d"])
def test_test_data_holds_for_the_onnx_reference_backend(name, random_export, tmp_path):
    """ONNX's own reference implementation, not ONNX Runtime, reproduces the stored outputs."""
    source, path = random_export(name)
    inputs, outputs = load_test_data(_write(source, path, tmp_path))
    got = ReferenceEvaluator(str(path)).run(None, dict(inputs))
    for value, (output_name, expected) in zip(got, outputs):
        np.testing.assert_allclose(value, expected, atol=1e-4, err_msg=output_name)


def test_tampered_test_data_is_caught(random_export, tmp_path):
    source, path = random_export("lenet")
    set_dir = _write(source, path, tmp_path)
    tensor = onnx.TensorProto()
    tensor.ParseFromString((set_dir / "output_0.pb").read_bytes())
    values = numpy_helper.to_array(tensor).copy()
    values[3, 4] += 0.5
    (set_dir / "output_0.pb").write_bytes(numpy_helper.from_array(values, name="logits").SerializeToString())
    with pytest.raises(CheckFailed, match="'logits' differs from the test data"):
        validate_test_data(path, set_dir, atol=1e-4)


def test_rewriting_replaces_the_old_set(random_export, tmp_path):
    source, path = random_export("conv2d")
    set_dir = _write(source, path, tmp_path)
    (set_dir / "output_7.pb").write_bytes(b"stale")
    set_dir = _write(source, path, tmp_path)
    assert not (set_dir / "output_7.pb").exists()
