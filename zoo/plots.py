"""Pictures of a training run, written as PNG files: curves, confusion matrix, filters, kernels.

Every function draws on its own `Figure` with the Agg canvas, never through pyplot: no global
figure state, no display needed, safe on a headless machine and in tests.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, training against test (entries as in metrics.json)."""
    epochs = [entry["epoch"] for entry in history]
    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [entry["train_loss"] for entry in history], "o-", label="train")
    loss_axes.plot(epochs, [entry["test_loss"] for entry in history], "o-", label="test")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    accuracy_axes.plot(epochs, [100 * entry["train_accuracy"] for entry in history], "o-", label="train")
    accuracy_axes.plot(epochs, [100 * entry["test_accuracy"] for entry in history], "o-", label="test")
    final = history[-1]  # the checkpoint's accuracy: the run keeps its last weights, not its best
    accuracy_axes.annotate(
        f"final {100 * final['test_accuracy']:.2f}%",
        (final["epoch"], 100 * final["test_accuracy"]),
        textcoords="offset points",
        xytext=(0, -16),
        ha="right",
    )
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_confusion_matrix(matrix: torch.Tensor, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Counts of (true class, predicted class); the diagonal is what the model got right."""
    counts = np.asarray(matrix, dtype=np.int64)
    figure = Figure(figsize=(7, 6))
    axes = figure.subplots()
    # A log colour scale, so that the few errors are visible next to thousands of right answers.
    image = axes.imshow(np.log1p(counts), cmap="Blues")
    threshold = np.log1p(counts).max() / 2
    for true in range(counts.shape[0]):
        for predicted in range(counts.shape[1]):
            if counts[true, predicted]:
                colour = "white" if np.log1p(counts[true, predicted]) > threshold else "black"
                axes.text(predicted, true, str(counts[true, predicted]), ha="center", va="center", fontsize=8, color=colour)
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=45 if max(map(len, classes)) > 2 else 0)
    axes.set_yticks(ticks, classes)
    axes.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    figure.colorbar(image, ax=axes, label="log(1 + count)")
    return _save(figure, path)


def plot_filters(weight: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """The kernels of a convolution (C_out, C_in, kh, kw): one small image per (output, input) pair."""
    kernels = weight.detach().cpu().float().flatten(0, 1)  # (C_out * C_in, kh, kw)
    count = kernels.shape[0]
    columns = min(count, 10)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(1.2 * columns, 1.3 * rows + 0.4))
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    # One symmetric colour scale for all: red is positive, blue negative, white zero.
    limit = float(kernels.abs().max()) or 1.0
    for index, axes in enumerate(grid):
        axes.axis("off")
        if index < count:
            axes.imshow(kernels[index].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes.set_title(str(index), fontsize=8)
    figure.suptitle(title or f"first-layer filters ({tuple(weight.shape)})")
    return _save(figure, path)


def plot_misclassified(
    images: torch.Tensor,
    true_labels: torch.Tensor,
    predicted_labels: torch.Tensor,
    classes: Sequence[str],
    path: str | Path,
    limit: int = 40,
) -> Path:
    """The first `limit` test images the model got wrong, each titled "true -> predicted"."""
    wrong = torch.nonzero(true_labels != predicted_labels).flatten()[:limit]
    columns = 10
    rows = max(1, math.ceil(len(wrong) / columns))
    figure = Figure(figsize=(columns * 1.1, rows * 1.25 + 0.4))
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes in grid:
        axes.axis("off")
    for axes, index in zip(grid, wrong.tolist()):
        axes.imshow(images[index].cpu().numpy(), cmap="gray", vmin=0, vmax=255)
        axes.set_title(f"{classes[true_labels[index]]}\u2192{classes[predicted_labels[index]]}", fontsize=8, color="crimson")
    total = int((true_labels != predicted_labels).sum())
    figure.suptitle(f"misclassified test images: first {len(wrong)} of {total} (true\u2192predicted)")
    return _save(figure, path)


def plot_kernel(
    learned: torch.Tensor,
    true: torch.Tensor,
    losses: Sequence[float],
    path: str | Path,
    bias: float | None = None,
) -> Path:
    """The learned kernel next to the one that generated the data, and the loss per iteration."""
    learned = learned.detach().cpu().float().reshape(true.shape)
    true = true.detach().cpu().float()
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    learned_axes, true_axes, loss_axes = figure.subplots(1, 3, width_ratios=(1, 1, 1.4))
    limit = float(max(learned.abs().max(), true.abs().max()))
    for axes, kernel, name in ((learned_axes, learned, "learned"), (true_axes, true, "true")):
        axes.imshow(kernel.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        for (row, col), value in np.ndenumerate(kernel.numpy()):
            colour = "white" if abs(value) > limit / 2 else "black"
            axes.text(col, row, f"{value:+.3f}", ha="center", va="center", fontsize=11, color=colour)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(f"{name} kernel" + (f" (bias {bias:+.3f})" if name == "learned" and bias is not None else ""))
    iterations = range(1, len(losses) + 1)
    loss_axes.plot(iterations, losses, "o-", markersize=3)
    loss_axes.set(xlabel="iteration", ylabel="summed squared error", yscale="log", title="loss")
    loss_axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_risk_coverage(
    scores: np.ndarray, correct: np.ndarray, threshold: float, path: str | Path, title: str = ""
) -> Path:
    """Error among the answered images against the share answered, answering the highest scores first."""
    from contracts.calibration import risk_coverage

    curve = risk_coverage(scores, correct)
    scores = np.asarray(scores, dtype=np.float64)
    answered = scores >= threshold
    coverage = float(answered.mean())
    risk = float((~np.asarray(correct, dtype=bool)[answered]).mean()) if answered.any() else 0.0
    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    axes.plot(100 * curve.coverage, 100 * curve.risk, "-", label="answer when top probability >= t")
    axes.plot([100 * coverage], [100 * risk], "o", label=f"min_confidence {threshold:.3f}: "
              f"{100 * coverage:.2f}% answered, {100 * risk:.2f}% wrong")
    axes.set(xlabel="coverage: images answered (%)", ylabel="risk: wrong among answered (%)", title=title)
    axes.set_xlim(left=max(0.0, 100 * float(curve.coverage.min()) - 1))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    return _save(figure, path)
