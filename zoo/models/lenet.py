"""The LeNet family: the d2l LeNet-5, its modernised exercise variant, and the 32x32 variant."""
from __future__ import annotations

from torch import nn

from zoo.models.registry import CLASSIFICATION, register_model
from zoo.shapes import conv_output_shape, pool_output_shape

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}
POOLINGS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class LeNet(nn.Module):
    """Two convolution blocks (conv, activation, 2x2 pooling), then a dense block; returns logits.

    Softmax and argmax are left to the predict step (and to the exported graph's second output).
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (6, 16),
        hidden: tuple[int, ...] = (120, 84),
        kernel_size: int = 5,
        first_padding: int = 2,
        activation: str = "sigmoid",
        pooling: str = "avg",
        input_size: int = 28,
        num_classes: int = 10,
        init: str = "xavier",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
        layers: list[nn.Module] = []
        in_channels, hw = 1, (input_size, input_size)
        for index, out_channels in enumerate(channels):
            padding = first_padding if index == 0 else 0
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding),
                ACTIVATIONS[activation](),
                POOLINGS[pooling](kernel_size=2, stride=2),
            ]
            hw = pool_output_shape(conv_output_shape(hw, kernel_size, padding), 2)
            in_channels = out_channels
        layers.append(nn.Flatten())
        features = in_channels * hw[0] * hw[1]
        for width in hidden:
            layers += [nn.Linear(features, width), ACTIVATIONS[activation]()]
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.net = nn.Sequential(*layers)
        if init == "xavier":
            self.apply(_xavier_uniform)
        elif init != "default":
            raise ValueError(f"init must be 'xavier' or 'default', got {init!r}")

    def forward(self, x):
        return self.net(x)


def _xavier_uniform(module: nn.Module) -> None:
    # The d2l `init_cnn`: Xavier-uniform weights for every convolution and dense layer.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)


@register_model(
    "lenet",
    task=CLASSIFICATION,
    input_size=(28, 28),
    description="LeNet-5 of the d2l chapter: 6/16 channels, 5x5, sigmoid, 2x2 average pooling, dense 120-84-10",
)
def lenet(**config) -> LeNet:
    return LeNet(**config)


@register_model(
    "lenet-modern",
    task=CLASSIFICATION,
    input_size=(28, 28),
    description="The chapter's exercise: LeNet-5 with ReLU and max pooling",
)
def lenet_modern(**config) -> LeNet:
    return LeNet(**{"activation": "relu", "pooling": "max", **config})


@register_model(
    "lenet5-32",
    task=CLASSIFICATION,
    input_size=(32, 32),
    description="LeNet-5 on 32x32 input: 20/20 channels, 5x5, ReLU, max pooling, dense 500-10",
)
def lenet5_32(**config) -> LeNet:
    defaults = dict(
        channels=(20, 20), hidden=(500,), first_padding=0, activation="relu", pooling="max",
        input_size=32, init="default",
    )
    return LeNet(**{**defaults, **config})
