"""Small ONNX models built with onnx.helper, so the serve and harness tests need neither torch nor `export`.

- `linear_classifier`: pixels (N x 1 x H x W in [0, 1]) -> logits, probabilities, with a model card:
  a real digit classifier (one linear layer, weights given) in the format `export` writes.
- `mnist_centroid_classifier`: the same layer fitted to MNIST's training digits (about 80% right).
  Either may carry verdict thresholds in its card (`verdict_thresholds=`), as `export` writes them.
- `third_party_classifier`: no card, its own input/output names and an INT64 side output.
- `two_input_model`: two inputs, no batch dimension shared: served through v2 without the batcher.
- `dynamic_size_conv_model`: the edge detector's interface (any H and W), with a feature-map card.
- `tagged_classifier`: a digit classifier that answers one fixed digit whatever it is shown, so that
  the versions of a model in a repository can be told apart by their answers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from contracts.mnist_idx import (
    TRAIN_IMAGES_FILE,
    TRAIN_LABELS_FILE,
    mnist_raw_dir,
    read_idx_images,
    read_idx_labels,
)
from contracts.model_card import ModelCard

# ONNX Runtime 1.2x reads IR version 10 (onnx >= 1.17 writes newer by default).
IR_VERSION = 10
OPSET = 17
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CENTROID_TRAIN_IMAGES = 20_000  # enough for stable class means; reading all 60,000 costs more than it gains


def _save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path


def linear_classifier(
    path: Path,
    weights: np.ndarray,
    bias: np.ndarray,
    *,
    name: str = "linear",
    input_size: int = 28,
    labels: list[str] | None = None,
    variant_of: str | None = None,
    verdict_thresholds: dict[str, float] | None = None,
) -> Path:
    """logits = ((pixels - mean) / std).flatten() @ weights + bias; probabilities = softmax(logits).

    `weights` is (input_size * input_size, classes); `verdict_thresholds` as
    contracts.verdicts.VerdictThresholds.to_meta() writes them (None: a card without, judged by the defaults).
    """
    features, classes = weights.shape
    assert features == input_size * input_size
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, input_size, input_size])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])
    initializers = [
        numpy_helper.from_array(np.array([MNIST_MEAN], np.float32), "mean"),
        numpy_helper.from_array(np.array([MNIST_STD], np.float32), "std"),
        numpy_helper.from_array(weights.astype(np.float32), "weights"),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Sub", ["pixels", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalised"]),
        helper.make_node("Flatten", ["normalised"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(nodes, name, [pixels], [logits, probabilities], initializers)
    card = ModelCard(
        model_name=name,
        task="classification",
        input_name="pixels",
        output_names=["logits", "probabilities"],
        input_size=[input_size, input_size],
        labels=labels if labels is not None else [str(i) for i in range(classes)],
        mean=[MNIST_MEAN],
        std=[MNIST_STD],
        test_accuracy=None,
        dataset="mnist",
        variant_of=variant_of,
        verdict_thresholds=dict(verdict_thresholds or {}),
    )
    return _save(graph, path, card.to_metadata_props())


def random_linear_classifier(
    path: Path, *, name: str = "linear", input_size: int = 28, seed: int = 0, variant_of: str | None = None
) -> Path:
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.05, size=(input_size * input_size, 10)).astype(np.float32)
    bias = rng.normal(0, 0.1, size=10).astype(np.float32)
    return linear_classifier(path, weights, bias, name=name, input_size=input_size, variant_of=variant_of)


def tagged_classifier(path: Path, tag: int, *, name: str = "tagged", input_size: int = 28) -> Path:
    """A classifier with a model card whose most probable digit is always `tag` (0..9)."""
    weights = np.zeros((input_size * input_size, 10), np.float32)
    bias = np.zeros(10, np.float32)
    bias[tag] = 5.0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return linear_classifier(path, weights, bias, name=name, input_size=input_size)


def centroid_classifier(path: Path, images: np.ndarray, labels: np.ndarray, *, name: str = "centroid",
                        verdict_thresholds: dict[str, float] | None = None) -> Path:
    """A classifier that actually reads digits (about 80% on MNIST): nearest class mean, as a linear layer.

    argmin_c |x - m_c|^2 = argmax_c (2 m_c . x - |m_c|^2), here on normalised pixels.
    """
    normalised = (images.reshape(len(images), -1).astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD
    means = np.stack([normalised[labels == c].mean(axis=0) for c in range(10)])
    weights = (2.0 * means).T
    bias = -(means**2).sum(axis=1)
    # Scaled down so the softmax is not saturated: the probabilities then mean something.
    return linear_classifier(path, weights / 50.0, bias / 50.0, name=name, verdict_thresholds=verdict_thresholds)


def mnist_centroid_classifier(path: Path, mnist_root: Path, *, name: str = "centroid",
                              verdict_thresholds: dict[str, float] | None = None) -> Path:
    """centroid_classifier fitted to MNIST's first training digits, read from MNIST_ROOT/MNIST/raw."""
    raw = mnist_raw_dir(mnist_root)
    images = read_idx_images(raw / TRAIN_IMAGES_FILE)[:CENTROID_TRAIN_IMAGES]
    labels = read_idx_labels(raw / TRAIN_LABELS_FILE)[:CENTROID_TRAIN_IMAGES]
    return centroid_classifier(path, images, labels, name=name, verdict_thresholds=verdict_thresholds)


def third_party_classifier(path: Path) -> Path:
    """No card; input "input_1" FP32 N x 4, outputs "scores" FP32 N x 3 and "label" INT64 N."""
    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])
    weights = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0, "w")
    nodes = [
        helper.make_node("MatMul", ["input_1", "w"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
    ]
    return _save(helper.make_graph(nodes, "third_party", [x], [scores, label], [weights]), path)


def two_input_model(path: Path) -> Path:
    """No card; "a" INT32 N x 2 and "b" INT32 N x 2 -> "sum" INT32 N x 2 (not batchable: two inputs)."""
    a = helper.make_tensor_value_info("a", TensorProto.INT32, ["N", 2])
    b = helper.make_tensor_value_info("b", TensorProto.INT32, ["N", 2])
    total = helper.make_tensor_value_info("sum", TensorProto.INT32, ["N", 2])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], "adder", [a, b], [total])
    return _save(graph, path)


def fails_when_run_model(path: Path) -> Path:
    """No card; "x" FP32 N x 4 -> "y" N x 5: a valid graph whose Reshape fails on every real input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    shape = numpy_helper.from_array(np.array([-1, 5], np.int64), "shape")
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    return _save(helper.make_graph([node], "fails_when_run", [x], [y], [shape]), path)


def batch_mean_model(path: Path) -> Path:
    """No card; "x" FP32 N x 4 -> "mean" FP32 4: an output that is not per item, so never batched."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    mean = helper.make_tensor_value_info("mean", TensorProto.FLOAT, [4])
    node = helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=0)  # opset 17: axes attribute
    return _save(helper.make_graph([node], "batch_mean", [x], [mean]), path)


def dynamic_size_conv_model(path: Path, *, name: str = "edgelike") -> Path:
    """The edge detector's interface: "image" FP32 N x 1 x H x W (any H, W) -> "feature_map" N x 1 x H x W-1.

    A 1 x 2 convolution with kernel [1, -1] and a feature-map card, as `export` writes for `edge`:
    served unbatched (dynamic sizes), and H or W too small for the kernel fails inside the graph.
    """
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])
    feature_map = helper.make_tensor_value_info("feature_map", TensorProto.FLOAT, ["N", 1, "H", "W_out"])
    kernel = numpy_helper.from_array(np.array([[[[1.0, -1.0]]]], np.float32), "kernel")
    node = helper.make_node("Conv", ["image", "kernel"], ["feature_map"], kernel_shape=[1, 2])
    card = ModelCard(model_name=name, task="feature-map", input_name="image", output_names=["feature_map"],
                     input_size=None)
    return _save(helper.make_graph([node], name, [image], [feature_map], [kernel]), path, card.to_metadata_props())
