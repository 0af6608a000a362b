"""Test data in the ONNX model zoo's layout, so any ONNX backend can check the file on its own.

DIR/test_data_set_0/input_0.pb holds the input batch and output_<i>.pb the torch outputs, in the
graph's output order, each a TensorProto named after its graph tensor. ONNX Runtime's
`onnx_test_runner` and the ONNX backend test harness read this layout.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export.errors import CheckFailed
from export.parity import abs_diff, run_session
from export.providers import CPU, open_session

TEST_DATA_SET = "test_data_set_0"


def write_test_data(
    directory: str | Path, input_name: str, inputs: np.ndarray, outputs: dict[str, np.ndarray]
) -> Path:
    """Write one test data set (replacing an older one) and return its folder."""
    set_dir = Path(directory) / TEST_DATA_SET
    if set_dir.exists():
        shutil.rmtree(set_dir)
    set_dir.mkdir(parents=True)
    _write_tensor(set_dir / "input_0.pb", np.ascontiguousarray(inputs, dtype=np.float32), input_name)
    for index, (name, value) in enumerate(outputs.items()):
        _write_tensor(set_dir / f"output_{index}.pb", value, name)
    return set_dir


def _write_tensor(path: Path, value: np.ndarray, name: str) -> None:
    path.write_bytes(numpy_helper.from_array(np.ascontiguousarray(value), name=name).SerializeToString())


def _read_tensor(path: Path) -> tuple[str, np.ndarray]:
    tensor = onnx.TensorProto()
    try:
        tensor.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CheckFailed(f"{path} is not a TensorProto: {exc}") from exc
    return tensor.name, numpy_helper.to_array(tensor)


def load_test_data(set_dir: str | Path) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """(inputs, outputs) of a test data set, each a list of (tensor name, array) in file order."""
    set_dir = Path(set_dir)
    inputs = [_read_tensor(path) for path in sorted(set_dir.glob("input_*.pb"), key=_index)]
    outputs = [_read_tensor(path) for path in sorted(set_dir.glob("output_*.pb"), key=_index)]
    if not inputs or not outputs:
        raise CheckFailed(f"{set_dir} holds no input_*.pb / output_*.pb files")
    return inputs, outputs


def _index(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def validate_test_data(
    model_path: str | Path, set_dir: str | Path, atol: float, provider: str = CPU
) -> dict[str, float]:
    """Run the model on the stored input; the largest difference per output, or CheckFailed beyond `atol`."""
    inputs, expected = load_test_data(set_dir)
    session = open_session(model_path, provider)
    graph_inputs = [value.name for value in session.get_inputs()]
    if [name for name, _ in inputs] != graph_inputs:
        raise CheckFailed(f"{set_dir} has inputs {[name for name, _ in inputs]} but the model takes {graph_inputs}")
    got = run_session(session, inputs[0][1])
    graph_outputs = [value.name for value in session.get_outputs()]
    differences = {}
    for index, (name, value) in enumerate(expected):
        name = name or graph_outputs[index]
        if name not in got:
            raise CheckFailed(f"{set_dir}/output_{index}.pb is for {name!r}, which the model does not output")
        if got[name].shape != value.shape:
            raise CheckFailed(f"output {name!r}: the model gives shape {got[name].shape}, the test data {value.shape}")
        differences[name] = float(abs_diff(got[name], value).max(initial=0.0))
        if not differences[name] <= atol:
            raise CheckFailed(
                f"output {name!r} differs from the test data in {set_dir} by {differences[name]:.3g} (tolerance {atol:g})"
            )
    return differences
