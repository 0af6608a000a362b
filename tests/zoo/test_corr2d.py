"""The cross-correlation chapter's worked examples: corr2d, edge detection, learning a kernel, strict
convolution and receptive fields (seeds 000, 001 "Convolutions for Images", 002, 003)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.layers import Conv2D, EdgeDetector
from zoo.ops import reference, vectorised
from zoo.shapes import Window, receptive_field

CORR2D_IMPLEMENTATIONS = [
    pytest.param(reference.corr2d, id="reference"),
    pytest.param(vectorised.corr2d, id="vectorised"),
]


def doc_input() -> torch.Tensor:
    return torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])


def doc_kernel() -> torch.Tensor:
    return torch.tensor([[0.0, 1.0], [2.0, 3.0]])


def edge_image() -> torch.Tensor:
    """The 6x8 image: white (1) everywhere except the black (0) middle columns 2..5."""
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    return X


EDGE_KERNEL = torch.tensor([[1.0, -1.0]])


def edge_response() -> torch.Tensor:
    """What the documents print for corr2d(X, K): 1 at the white-to-black edge, -1 at black-to-white."""
    return torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]] * 6)


@pytest.mark.parametrize("corr2d", CORR2D_IMPLEMENTATIONS)
def test_corr2d_of_the_3x3_example(corr2d):
    torch.testing.assert_close(corr2d(doc_input(), doc_kernel()), torch.tensor([[19.0, 25.0], [37.0, 43.0]]))


def test_each_element_is_the_documents_sum_of_products():
    X, K = doc_input(), doc_kernel()
    Y = reference.corr2d(X, K)
    # 0x0+1x1+3x2+4x3=19, 1x0+2x1+4x2+5x3=25, 3x0+4x1+6x2+7x3=37, 4x0+5x1+7x2+8x3=43
    assert 0 * 0 + 1 * 1 + 3 * 2 + 4 * 3 == 19 == Y[0, 0]
    assert 1 * 0 + 2 * 1 + 4 * 2 + 5 * 3 == 25 == Y[0, 1]
    assert 3 * 0 + 4 * 1 + 6 * 2 + 7 * 3 == 37 == Y[1, 0]
    assert 4 * 0 + 5 * 1 + 7 * 2 + 8 * 3 == 43 == Y[1, 1]
    # ...and those are the window of X at each position times K.
    for i in range(2):
        for j in range(2):
            assert (X[i : i + 2, j : j + 2] * K).sum() == Y[i, j]


@pytest.mark.parametrize("corr2d", CORR2D_IMPLEMENTATIONS)
def test_output_is_input_minus_kernel_plus_one(corr2d):
    # (n_h - k_h + 1) x (n_w - k_w + 1)
    assert corr2d(torch.rand(7, 9), torch.rand(3, 2)).shape == (7 - 3 + 1, 9 - 2 + 1)


# The edge image of 001_76a328f7b69cf327.txt ("Object Edge Detection in Images") is printed with typos:
# X with 7 columns instead of 8, Y with 7 rows instead of 6, and corr2d(X.t(), K) with 9 rows
# instead of 8. The code in the same document (ones((6, 8)), and 000/002 which print the same
# example) gives 6x8, 6x7 and 8x5: the tests assert the mathematics, not the misprints.
@pytest.mark.parametrize("corr2d", CORR2D_IMPLEMENTATIONS)
def test_edge_detection_marks_both_edges(corr2d):
    X = edge_image()
    assert X.shape == (6, 8)
    assert X[0].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    Y = corr2d(X, EDGE_KERNEL)
    assert Y.shape == (6, 7)
    torch.testing.assert_close(Y, edge_response())


@pytest.mark.parametrize("corr2d", CORR2D_IMPLEMENTATIONS)
def test_vertical_edge_kernel_misses_horizontal_edges(corr2d):
    Y = corr2d(edge_image().t(), EDGE_KERNEL)
    assert Y.shape == (8, 5)
    assert torch.count_nonzero(Y) == 0


@pytest.mark.parametrize("corr2d", CORR2D_IMPLEMENTATIONS)
def test_transposed_kernel_detects_horizontal_edges(corr2d):
    Y = corr2d(edge_image().t(), EDGE_KERNEL.t())
    torch.testing.assert_close(Y, edge_response().t())


def test_edge_detector_layer_vertical_and_horizontal():
    X = edge_image()
    torch.testing.assert_close(EdgeDetector("vertical")(X), edge_response())
    torch.testing.assert_close(EdgeDetector("horizontal")(X.t()), edge_response().t())
    assert torch.count_nonzero(EdgeDetector("horizontal")(X)) == 0


def test_diagonal_edge_is_seen_by_both_orientations():
    # The chapter's exercise: an image with a diagonal edge (X[i, j] = 1 where j <= i).
    X = torch.tril(torch.ones(6, 6))
    # x[i, j] - x[i, j + 1] is 1 exactly where j == i: the edge crossed left to right.
    torch.testing.assert_close(reference.corr2d(X, EDGE_KERNEL), torch.eye(6, 5))
    # x[i, j] - x[i + 1, j] is -1 exactly where j == i + 1: the same edge crossed top to bottom.
    torch.testing.assert_close(reference.corr2d(X, EDGE_KERNEL.t()), -torch.diag(torch.ones(5), 1)[:5])


# --- Learning a kernel ------------------------------------------------------------------------

LEARNING_RATE = 3e-2
SEEDS = range(8)  # the kernel must be learned from any initialisation, not a lucky one


def learn_edge_kernel(layer: nn.Module, iterations: int) -> list[float]:
    """The documents' loop verbatim: squared error summed, plain SGD on weight.data, no optimiser.

    Only the weight is updated, as in the documents. (With a summed loss over the 42 outputs, a
    scalar bias has curvature 2 * 42 = 84, so the same learning rate on it, 3e-2 * 84 > 2, would
    diverge; torch's layer has no bias here and the from-scratch one keeps its bias at zero.)
    """
    X = edge_image().reshape((1, 1, 6, 8))
    Y = edge_response().reshape((1, 1, 6, 7))
    losses = []
    for _ in range(iterations):
        Y_hat = layer(X)
        loss = (Y_hat - Y) ** 2
        layer.zero_grad()
        loss.sum().backward()
        layer.weight.data[:] -= LEARNING_RATE * layer.weight.grad
        losses.append(float(loss.detach().sum()))
    return losses


def torch_layer() -> nn.Module:
    return nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)


def scratch_layer() -> nn.Module:
    return Conv2D((1, 2))


LAYERS = [pytest.param(torch_layer, id="nn.Conv2d"), pytest.param(scratch_layer, id="zoo.Conv2D")]


def learned_kernel(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().reshape(2)


@pytest.mark.parametrize("make_layer", LAYERS)
@pytest.mark.parametrize("seed", SEEDS)
def test_learning_the_kernel_loss_falls_at_every_printed_iteration(make_layer, seed):
    torch.manual_seed(seed)
    losses = learn_edge_kernel(make_layer(), iterations=10)
    printed = [losses[i - 1] for i in (2, 4, 6, 8, 10)]  # the documents print every second epoch
    assert all(later < earlier for earlier, later in zip(printed, printed[1:])), printed
    # The documents end at 0.012 to 0.147 depending on the initialisation.
    assert printed[-1] < 1.0


@pytest.mark.parametrize("make_layer", LAYERS)
@pytest.mark.parametrize("seed", SEEDS)
def test_learned_kernel_approaches_the_edge_kernel(make_layer, seed):
    torch.manual_seed(seed)
    layer = make_layer()
    learn_edge_kernel(layer, iterations=10)
    # After 10 iterations the documents print [0.9510, -1.0295], [0.9809, -1.0006], [0.9530, -1.0167].
    torch.testing.assert_close(learned_kernel(layer), torch.tensor([1.0, -1.0]), atol=0.15, rtol=0)
    learn_edge_kernel(layer, iterations=10)
    # After 20 iterations 000_55d8c69464c26305.txt prints [1.0013, -0.9983] and loss 0.000.
    torch.testing.assert_close(learned_kernel(layer), torch.tensor([1.0, -1.0]), atol=0.05, rtol=0)


def test_scratch_conv2d_gradients_match_the_reference_loops():
    # The chapter's exercise asks what autograd says about Conv2D: with the vectorised corr2d it
    # trains, and its gradient is the one the documents' loop corr2d gives.
    torch.manual_seed(0)
    X, Y = edge_image(), edge_response()
    layer = Conv2D((1, 2))
    ((layer(X) - Y) ** 2).sum().backward()
    weight = layer.weight.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    ((reference.corr2d(X, weight) + bias - Y) ** 2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, weight.grad)
    torch.testing.assert_close(layer.bias.grad, bias.grad)


# --- Cross-correlation and convolution --------------------------------------------------------


@pytest.mark.parametrize("ops", [reference, vectorised], ids=["reference", "vectorised"])
def test_strict_convolution_is_cross_correlation_with_the_flipped_kernel(ops):
    X, K = doc_input(), doc_kernel()
    flipped = torch.flip(K, dims=(0, 1))
    assert flipped.tolist() == [[3.0, 2.0], [1.0, 0.0]]
    torch.testing.assert_close(ops.conv2d_strict(X, K), ops.corr2d(X, flipped))
    # 0x3+1x2+3x1+4x0 = 5, and so on: the strict convolution of the 3x3 example.
    torch.testing.assert_close(ops.conv2d_strict(X, K), torch.tensor([[5.0, 11.0], [23.0, 29.0]]))


def test_strict_convolution_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    generator = torch.Generator().manual_seed(0)
    for shape, kernel_shape in [((3, 3), (2, 2)), ((6, 8), (1, 2)), ((7, 5), (3, 4))]:
        X = torch.randn(shape, generator=generator, dtype=torch.float64)
        K = torch.randn(kernel_shape, generator=generator, dtype=torch.float64)
        expected = torch.from_numpy(signal.convolve2d(X.numpy(), K.numpy(), mode="valid"))
        torch.testing.assert_close(reference.conv2d_strict(X, K), expected)
        torch.testing.assert_close(vectorised.conv2d_strict(X, K), expected)


def test_flipped_kernel_gives_the_same_output():
    # A layer doing strict convolution that learned K' = flip(K) outputs what cross-correlation with K does.
    X, K = doc_input(), doc_kernel()
    torch.testing.assert_close(reference.conv2d_strict(X, torch.flip(K, dims=(0, 1))), reference.corr2d(X, K))


def test_a_strict_convolution_layer_learns_the_flipped_edge_kernel():
    torch.manual_seed(0)
    X, Y = edge_image(), edge_response()
    weight = torch.rand(1, 2, requires_grad=True)
    for _ in range(20):
        loss = ((vectorised.conv2d_strict(X, weight) - Y) ** 2).sum()
        weight.grad = None
        loss.backward()
        weight.data -= LEARNING_RATE * weight.grad
    torch.testing.assert_close(weight.detach(), torch.tensor([[-1.0, 1.0]]), atol=0.05, rtol=0)


# --- Receptive field --------------------------------------------------------------------------


def input_elements_reaching(output_element: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Which input elements can affect `output_element`: where its gradient is non-zero."""
    (grad,) = torch.autograd.grad(output_element, X, retain_graph=True)
    return grad != 0


def test_receptive_field_of_two_stacked_2x2_convolutions():
    # The 2x2 output Y of the 3x3 example fed to another 2x2 convolution gives one element z that
    # sees all four elements of Y and all nine input elements.
    # Kernels without zeros, so that "may affect" shows as a non-zero gradient (the documents'
    # kernel has a 0 in the corner, which would hide X[0, 0] from z).
    torch.manual_seed(0)
    X = doc_input().requires_grad_(True)
    Y = vectorised.corr2d(X, torch.rand(2, 2) + 0.1)
    z = vectorised.corr2d(Y, torch.rand(2, 2) + 0.1)
    assert z.shape == (1, 1)
    assert input_elements_reaching(z[0, 0], X).all()
    assert receptive_field([Window(2), Window(2)]) == 3
    # One layer alone: the element 19 sees the 2x2 shaded corner only.
    assert input_elements_reaching(Y[0, 0], X).tolist() == [[True, True, False], [True, True, False], [False] * 3]
    assert receptive_field([Window(2)]) == 2


def test_receptive_field_of_lenets_convolution_block():
    from zoo.models import get_model

    torch.manual_seed(0)
    features = get_model("lenet").net[:6]  # conv 5, pool 2/2, conv 5, pool 2/2
    field = receptive_field([Window(5), Window(2, 2), Window(5), Window(2, 2)])
    assert field == 16
    X = torch.rand(1, 1, 28, 28, requires_grad=True)
    output = features(X)
    assert output.shape == (1, 16, 5, 5)
    # A central output element (away from the zero padding) sees exactly a field x field square.
    seen = input_elements_reaching(output[0, 0, 2, 2], X)[0, 0]
    rows, cols = seen.any(dim=1).nonzero().flatten(), seen.any(dim=0).nonzero().flatten()
    assert len(rows) == len(cols) == field
    assert seen.sum() == field * field
