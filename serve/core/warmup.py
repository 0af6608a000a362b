"""Warm-up: a model runs a few batches before it takes a call, and must answer them sensibly.

ONNX Runtime's first runs of a session are its slow ones (memory arenas grow, kernels are picked
per shape), so a version that went live cold would make its first callers pay for that. The runs
here happen on the loading thread, before the version is swapped in; a version whose graph fails
on an input of its own declared shape, or answers with the wrong rows or non-finite
probabilities, is refused there, while the version before it keeps serving.
"""
from __future__ import annotations

import numpy as np

from contracts.digit_format import DIGIT_SIZE
from contracts.model_card import PROBABILITIES_OUTPUT
from contracts.model_file import Model, ModelLoadError

# Runs per batch size: the first is the slow one, the others show it is not a one-off.
RUNS_PER_SIZE = 2


def warmup_sizes(model: Model, max_batch_size: int) -> list[int]:
    """A lone request and a full batch (the sizes the batcher runs most and runs largest)."""
    return sorted({1, max_batch_size}) if model.batchable else [1]


def _feeds(model: Model, images: int) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in model.inputs:
        # A dynamic leading dimension is the batch; other dynamic ones (image height and width of
        # the feature-map models) get a digit's size, which every model of the zoo takes.
        shape = [images if index == 0 and d < 0 else (d if d >= 0 else DIGIT_SIZE)
                 for index, d in enumerate(spec.shape)]
        if spec.datatype == "BYTES":
            feeds[spec.name] = np.full(shape, b"", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feeds


def warm_up(model: Model, max_batch_size: int) -> int:
    """Run the model on blank inputs; returns the runs made. Raises ModelLoadError when it fails."""
    runs = 0
    where = f"model {model.name} version {model.version}"
    for images in warmup_sizes(model, max_batch_size):
        feeds = _feeds(model, images)
        for _ in range(RUNS_PER_SIZE):
            try:
                outputs = model.run(feeds)
            except Exception as exc:  # ONNX Runtime's errors derive from Exception only
                raise ModelLoadError(
                    f"{where} failed its warm-up on blank inputs of its declared shape "
                    f"({', '.join(f'{k} {list(v.shape)}' for k, v in feeds.items())}): {str(exc).splitlines()[0][:300]}"
                ) from exc
            runs += 1
        _check_outputs(model, outputs, images, where)
    return runs


def _check_outputs(model: Model, outputs: list[np.ndarray], images: int, where: str) -> None:
    if len(outputs) != len(model.outputs):
        raise ModelLoadError(f"{where} answered its warm-up with {len(outputs)} outputs, expected {len(model.outputs)}")
    if model.batchable:
        for spec, output in zip(model.outputs, outputs):
            if output.shape[0] != images:
                raise ModelLoadError(
                    f"{where}: output {spec.name!r} has {output.shape[0]} rows for a batch of {images}; "
                    "every output must have one row per input row"
                )
    if model.classifies_images:
        probabilities = outputs[model.output_index(PROBABILITIES_OUTPUT)]
        if not np.all(np.isfinite(probabilities)):
            raise ModelLoadError(f"{where} answers blank digits with non-finite probabilities; re-export it")
