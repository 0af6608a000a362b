"""The LeNet layer shapes the documents print, read off the summary tool's rows."""
from __future__ import annotations

import torch
from torch import nn

from zoo.models import get_model
from zoo.summary import layer_summary


def kinds_and_shapes(model_name: str, input_shape) -> list[tuple[str, tuple[int, ...]]]:
    return [(row.kind, row.output_shape) for row in layer_summary(get_model(model_name), input_shape)]


def test_lenet_on_28x28_prints_what_the_chapter_prints():
    # d2l "LeNet": model.layer_summary((1, 1, 28, 28)). The chapter's listing stops at the 84-wide
    # Linear; the final Sigmoid and the 10-way Linear follow.
    assert kinds_and_shapes("lenet", (1, 1, 28, 28)) == [
        ("Conv2d", (1, 6, 28, 28)),
        ("Sigmoid", (1, 6, 28, 28)),
        ("AvgPool2d", (1, 6, 14, 14)),
        ("Conv2d", (1, 16, 10, 10)),
        ("Sigmoid", (1, 16, 10, 10)),
        ("AvgPool2d", (1, 16, 5, 5)),
        ("Flatten", (1, 400)),
        ("Linear", (1, 120)),
        ("Sigmoid", (1, 120)),
        ("Linear", (1, 84)),
        ("Sigmoid", (1, 84)),
        ("Linear", (1, 10)),
    ]


def test_lenet_modern_has_the_same_shapes_with_relu_and_max_pooling():
    rows = kinds_and_shapes("lenet-modern", (1, 1, 28, 28))
    assert [shape for _, shape in rows] == [shape for _, shape in kinds_and_shapes("lenet", (1, 1, 28, 28))]
    assert {kind for kind, _ in rows} == {"Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"}


def test_lenet5_32_on_32x32_prints_what_the_notebook_prints():
    # 000_55d8c69464c26305.txt prints after conv1, the first pooling, conv2, the second pooling,
    # the flatten and the last layer; its ReLUs are functional calls and are not printed.
    printed = [
        ("Conv2d", (1, 20, 28, 28)),
        ("MaxPool2d", (1, 20, 14, 14)),
        ("Conv2d", (1, 20, 10, 10)),
        ("MaxPool2d", (1, 20, 5, 5)),
        ("Flatten", (1, 500)),
    ]
    rows = kinds_and_shapes("lenet5-32", (1, 1, 32, 32))
    assert [row for row in rows if row[0] in {"Conv2d", "MaxPool2d", "Flatten"}] == printed
    assert rows[-1] == ("Linear", (1, 10))
    # The hidden layer fc1 = Linear(500, 500) that the notebook does not print.
    assert ("Linear", (1, 500)) in rows


def test_lenet5_32_has_the_notebooks_parameters():
    # The notebook's LeNet5: conv1 Conv2d(1, 20, 5, 1), conv2 Conv2d(20, 20, 5, 1),
    # fc1 Linear(20*5*5, 500), fc2 Linear(500, 10).
    notebook_layers = [nn.Conv2d(1, 20, 5, 1), nn.Conv2d(20, 20, 5, 1), nn.Linear(20 * 5 * 5, 500), nn.Linear(500, 10)]
    expected = sum(p.numel() for layer in notebook_layers for p in layer.parameters())
    assert sum(p.numel() for p in get_model("lenet5-32").parameters()) == expected == 266_050


def test_lenet_takes_a_batch():
    rows = layer_summary(get_model("lenet"), (5, 1, 28, 28))
    assert rows[0].output_shape == (5, 6, 28, 28) and rows[-1].output_shape == (5, 10)
    assert get_model("lenet")(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
