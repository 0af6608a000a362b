"""zoo.summary: per-layer rows, the multiply-add convention cross-checked by hand, and the CLI."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch
from torch import nn

from zoo.layers import Conv2D, EdgeDetector
from zoo.models import get_model, list_models
from zoo.shapes import conv_operation_count
from zoo.summary import (
    LayerRow,
    default_input_shape,
    format_table,
    layer_summary,
    main,
    multiply_adds,
    parse_shape,
    totals,
)


def test_lenet_multiply_adds_by_hand():
    rows = layer_summary(get_model("lenet"), (1, 1, 28, 28))
    macs = {row.name: row.multiply_adds for row in rows if row.multiply_adds}
    by_hand = {
        "net.0": 6 * 28 * 28 * (1 * 5 * 5),  # conv1: every output element, 1 channel x 5 x 5
        "net.3": 16 * 10 * 10 * (6 * 5 * 5),  # conv2: 6 input channels x 5 x 5
        "net.7": 120 * 400,
        "net.9": 84 * 120,
        "net.11": 10 * 84,
    }
    assert macs == by_hand
    assert totals(rows).multiply_adds == 117_600 + 240_000 + 48_000 + 10_080 + 840 == 416_520
    # Activations, pooling and the flatten count no multiply-adds by the documented convention.
    assert all(row.multiply_adds == 0 for row in rows if row.kind in {"Sigmoid", "AvgPool2d", "Flatten"})


def test_multiply_adds_agree_with_the_documents_operation_count():
    # The documents count multiplications and additions separately: twice the MACs.
    rows = layer_summary(nn.Sequential(nn.Conv2d(128, 128, 5, padding=2)), (1, 128, 16, 16))
    assert 2 * rows[0].multiply_adds == conv_operation_count(128, 128, (16, 16), 5).total


def test_multiply_adds_scale_with_the_batch():
    single = totals(layer_summary(get_model("lenet5-32"), (1, 1, 32, 32))).multiply_adds
    assert totals(layer_summary(get_model("lenet5-32"), (3, 1, 32, 32))).multiply_adds == 3 * single


def test_grouped_and_strided_convolutions():
    layer = nn.Conv2d(4, 6, (3, 2), stride=2, groups=2)
    rows = layer_summary(nn.Sequential(layer), (2, 4, 9, 8))
    assert rows[0].output_shape == (2, 6, 4, 4)
    assert rows[0].multiply_adds == 2 * 6 * 4 * 4 * (4 // 2) * 3 * 2


def test_parameters_per_row_add_up_to_the_model():
    for name in list_models():
        model = get_model(name)
        rows = layer_summary(model, default_input_shape(name))
        assert totals(rows).parameters == sum(p.numel() for p in model.parameters()), name


def test_lenet_parameters_by_hand():
    rows = layer_summary(get_model("lenet"), (1, 1, 28, 28))
    params = {row.name: row.parameters for row in rows if row.parameters}
    assert params == {
        "net.0": 6 * 25 + 6,
        "net.3": 16 * 6 * 25 + 16,
        "net.7": 400 * 120 + 120,
        "net.9": 120 * 84 + 84,
        "net.11": 84 * 10 + 10,
    }
    assert totals(rows).parameters == 61_706


def test_from_scratch_layers_are_counted():
    rows = layer_summary(nn.Sequential(Conv2D((1, 2)), EdgeDetector("horizontal")), (1, 1, 6, 8))
    assert [(row.kind, row.output_shape) for row in rows] == [("Conv2D", (1, 1, 6, 7)), ("EdgeDetector", (1, 1, 5, 7))]
    assert [row.parameters for row in rows] == [3, 0]  # the detector's kernel is a buffer
    assert [row.multiply_adds for row in rows] == [6 * 7 * 2, 5 * 7 * 2]


def test_feature_map_models_default_to_the_documents_6x8_image():
    assert default_input_shape("edge") == default_input_shape("conv2d") == (1, 1, 6, 8)
    assert default_input_shape("lenet") == (1, 1, 28, 28)
    assert default_input_shape("lenet5-32") == (1, 1, 32, 32)
    rows = layer_summary(get_model("edge"), default_input_shape("edge"))
    assert [(row.kind, row.output_shape, row.parameters, row.multiply_adds) for row in rows] == [
        ("Conv2d", (1, 1, 6, 7), 2, 42 * 2)
    ]


def test_module_called_twice_is_listed_twice_and_counted_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    rows = layer_summary(model, (1, 4))
    assert [row.kind for row in rows] == ["Linear", "ReLU", "Linear"]
    assert [row.parameters for row in rows] == [20, 0, 0]
    assert [row.multiply_adds for row in rows] == [16, 0, 16]


def test_summary_leaves_the_model_as_it_found_it():
    model = get_model("lenet")
    model.train()
    layer_summary(model, (1, 1, 28, 28))
    assert model.training
    assert all(not module._forward_hooks for module in model.modules())
    model.eval()
    layer_summary(model, (1, 1, 28, 28))
    assert not model.training


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"cannot take an input of shape \(1, 1, 20, 20\)"):
        layer_summary(get_model("lenet"), (1, 1, 20, 20))
    with pytest.raises(ValueError, match="positive"):
        layer_summary(get_model("lenet"), (1, 0, 28, 28))
    # No hook is left behind by a failed run either.
    model = get_model("lenet")
    with pytest.raises(ValueError):
        layer_summary(model, (1, 3, 28, 28))
    assert all(not module._forward_hooks for module in model.modules())


def test_multiply_adds_is_zero_for_layers_without_products():
    assert multiply_adds(nn.MaxPool2d(2), torch.zeros(1, 3, 4, 4)) == 0
    assert multiply_adds(nn.ReLU(), torch.zeros(1, 3, 4, 4)) == 0


def test_table_lists_every_layer_and_the_totals():
    rows = layer_summary(get_model("lenet"), (1, 1, 28, 28))
    table = format_table(rows, (1, 1, 28, 28))
    lines = table.splitlines()
    assert lines[0] == "input shape: 1x1x28x28"
    assert lines[1].split() == ["layer", "module", "output", "shape", "parameters", "multiply-adds"]
    assert lines[3].split() == ["0:", "Conv2d", "net.0", "1x6x28x28", "156", "117,600"]
    assert lines[3 + 11].split() == ["11:", "Linear", "net.11", "1x10", "850", "840"]
    assert [line for line in lines if line.startswith("total")][0].split() == ["total", "61,706", "416,520"]


def test_row_label():
    row = LayerRow(position=3, name="net.3", kind="Conv2d", output_shape=(1,), parameters=0, multiply_adds=0)
    assert row.label == "3: Conv2d"


# --- The command line ---------------------------------------------------------------------------


def test_parse_shape():
    assert parse_shape("1,1,28,28") == (1, 1, 28, 28)
    assert parse_shape("2x1x32x32") == (2, 1, 32, 32)
    for bad in ("1,1,a", "", "1,,2", "1,-1,28,28", "1,0,2,2"):
        with pytest.raises(argparse.ArgumentTypeError, match="input shape"):
            parse_shape(bad)


def test_cli_prints_the_table(capsys):
    assert main(["lenet5-32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("input shape: 1x1x32x32")
    assert "1x20x28x28" in out and "266,050" in out and "1,647,000" in out


def test_cli_takes_an_input_shape(capsys):
    assert main(["conv2d", "--input-shape", "2,1,11,5"]) == 0
    out = capsys.readouterr().out
    assert "2x1x11x4" in out and f"{2 * 11 * 4 * 2:,}" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resnet"], "unknown model 'resnet'; known models: conv2d, edge, lenet, lenet-modern, lenet5-32"),
        (["lenet", "--input-shape", "1,1,twenty,28"], "comma-separated positive integers"),
        (["lenet", "--input-shape", "1,1,20,20"], "lenet is built for N,1,28,28"),
        ([], "the following arguments are required: NAME"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_entry_point_exits_with_mains_status():
    # One subprocess (importing torch is slow): a non-zero status shows main() ran and was passed on.
    result = subprocess.run(
        [sys.executable, "-m", "zoo.summary", "nope"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "unknown model 'nope'" in result.stderr
    assert result.stdout == ""
