"""How well a digit model reads real-looking pictures, and how well it refuses pictures without a digit.

    python -m bench.real_inputs MODEL.onnx                  # 500 per digit kind, 200 per non-digit kind
    python -m bench.real_inputs MODEL.onnx --quick          # a few per kind (seconds: CI)
    python -m bench.real_inputs MODEL.onnx --against main   # also that revision's image pipeline, A/B
    python -m bench.real_inputs MODEL.onnx --kinds photo    # only some kinds (ids or groups)

The pictures are generated (harness/real_inputs: photos of digits on paper with shadows, table
edges, print-through and rules, tablet drawings, low-resolution scans, the clean digit; letters,
scribbles, blank pages, noise, scene crops and clothing as non-digits), seeded, from MNIST's test
digits. Each goes through the server's own path in this process: serve.core.digit_inputs turns
the file into the model's pixels (contracts.images: decode_image, then prepare_digit at the
model's input size), an ONNX Runtime session from contracts.sessions computes the probabilities,
and contracts.verdicts judges them with the thresholds of the model's card, as the server does.

Per digit kind: accuracy (top-1 == the digit drawn), with its 95% interval, and the share the
verdict refuses (anything but `digit`). Per non-digit kind: the share flagged (`no_digit` or
`unsure`) and the share read as a digit with probability >= 0.9. Overall: the AUROC of the top
probability separating digit pictures from non-digit ones, and on the 10,000 MNIST test digits
as raw tensors (no preprocessing) the accuracy and the expected calibration error (15 bins).

With --against REV, that revision's contracts/images (bench.preprocess loads it under another
name) prepares every picture too, the same model reads both, and the table shows each kind's
accuracy and refusals before and after: the effect of a change of preprocessing in one command.

Writes bench/results/real_inputs.json. Exit status 0 when it ran, 2 when it cannot run.
"""
from __future__ import annotations

import argparse
import importlib
import math
import multiprocessing
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bench._machine import (
    describe_machine,
    finish_machine_record,
    machine_summary,
    usable_cores,
)
from bench._report import (
    RESULTS_DIR,
    format_table,
    parse_config,
    result_document,
    run_and_report,
)
from bench.preprocess import BenchError, revision_pipeline
from contracts.calibration import auroc, expected_calibration_error, softmax
from contracts.data_dir import DATA_DIR_HELP, resolve_data_dir
from contracts.digit_format import pixels_from_uint8
from contracts.errors import StatusError
from contracts.images.decode import ImageLimits
from contracts.model_card import LOGITS_OUTPUT, PROBABILITIES_OUTPUT
from contracts.model_file import Model, ModelLoadError, load_model
from contracts.sessions import RuntimeOptions
from contracts.verdicts import Verdict, VerdictThresholds, blank_inputs, judge
from harness.real_inputs import (
    ALL_KINDS,
    RealInputSpec,
    kind_by_id,
    real_input_plan,
    render_spec,
)
from serve.core.digit_inputs import EncodedImage, image_to_pixels

THIS_TREE = "this tree"
CONFIDENT = 0.9  # a non-digit read with at least this probability is a confident mistake
BATCH = 512
GROUP_LABELS = {"photo": "all photo kinds"}


@dataclass(frozen=True)
class RealInputsBenchConfig:
    model_file: Path
    digits_per_kind: int = 500  # 95% interval about +-3 points per kind, +-1 over the photo kinds together
    non_digits_per_kind: int = 200
    seed: int = 0
    kinds: tuple[str, ...] | None = None  # kind ids or groups ("photo"); None: every kind
    against: str | None = None  # a git revision whose image pipeline prepares every picture too
    jobs: int = 0  # processes that render and prepare pictures; 0: one per usable core
    device: str = "cpu"
    data_dir: Path | None = None
    output: Path = RESULTS_DIR / "real_inputs.json"
    quick: bool = False

    def __post_init__(self) -> None:
        if self.digits_per_kind < 1 or self.non_digits_per_kind < 1:
            raise ValueError("--per-kind and --non-digits-per-kind must be >= 1")
        if self.jobs < 0:
            raise ValueError("--jobs must be >= 0 (0: one per usable core)")
        if self.kinds is not None:
            selected_kinds(self.kinds)  # an unknown name is refused before anything runs

    @classmethod
    def quick_mode(cls, **overrides) -> "RealInputsBenchConfig":
        return cls(**{**dict(digits_per_kind=4, non_digits_per_kind=3, jobs=1, quick=True), **overrides})


def selected_kinds(names: Sequence[str] | None) -> list[str] | None:
    """Kind ids for names that are kind ids or groups ("photo": every photo kind), in the catalogue's order."""
    if names is None:
        return None
    groups = {kind.group for kind in ALL_KINDS}
    known = {kind.id for kind in ALL_KINDS} | groups
    unknown = [name for name in names if name not in known]
    if unknown:
        kind_ids = ", ".join(kind.id for kind in ALL_KINDS)
        raise ValueError(f"unknown kinds {', '.join(unknown)}; give kind ids ({kind_ids}) "
                         f"or groups ({', '.join(sorted(groups))})")
    return [kind.id for kind in ALL_KINDS if kind.id in names or kind.group in names]


# --- preparing pictures (in worker processes) -----------------------------------------------------

_worker: dict = {}


def _init_worker(images: np.ndarray, input_size: tuple[int, int], baseline: tuple[str, str] | None) -> None:
    """A worker's state: the MNIST test digits, the model's input size, the baseline pipeline's modules."""
    import cv2

    cv2.setNumThreads(1)  # the processes are the parallelism
    _worker.update(images=images, input_size=input_size, baseline=None)
    if baseline is not None:
        folder, package = baseline
        if folder not in sys.path:
            sys.path.insert(0, folder)
        _worker["baseline"] = (importlib.import_module(f"{package}.decode"),
                               importlib.import_module(f"{package}.preprocess"))


def _prepare(spec: RealInputSpec) -> tuple[np.ndarray | None, str | None, np.ndarray | None, str | None]:
    """One picture drawn and brought to the model's pixels by this tree's server path (and the
    baseline's): (pixels, error, baseline pixels, baseline error); an error is what the server answers."""
    data = render_spec(spec, _worker["images"])
    input_size = _worker["input_size"]
    pixels = error = before = before_error = None
    try:
        pixels = image_to_pixels(EncodedImage(data), input_size, ImageLimits())
    except StatusError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if _worker["baseline"] is not None:
        decode, preprocess = _worker["baseline"]
        try:
            before = preprocess.prepare_digit(decode.decode_image(data, decode.ImageLimits()), already_mnist=False,
                                              input_size=input_size)
        except Exception as exc:  # the baseline's own error types, whatever its revision called them
            before_error = f"{type(exc).__name__}: {exc}"
    return pixels, error, before, before_error


def prepare_all(specs: list[RealInputSpec], images: np.ndarray, input_size: tuple[int, int],
                baseline: tuple[str, str] | None, jobs: int) -> list[tuple]:
    """Every spec's _prepare result, in order; in `jobs` fresh processes (spawned: no forked ORT threads)."""
    if jobs <= 1:
        _init_worker(images, input_size, baseline)
        return [_prepare(spec) for spec in specs]
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs, initializer=_init_worker, initargs=(images, input_size, baseline)) as pool:
        return pool.map(_prepare, specs, chunksize=8)


# --- reading them -------------------------------------------------------------------------------


def probabilities_of(model: Model, pixels: np.ndarray) -> np.ndarray:
    """N x C probabilities: the graph's own (calibrated where its card says so), else softmax of its logits."""
    names = [spec.name for spec in model.outputs]
    wanted = PROBABILITIES_OUTPUT if PROBABILITIES_OUTPUT in names else LOGITS_OUTPUT
    index = names.index(wanted)
    batches = [model.run_batch(pixels[start:start + BATCH])[index] for start in range(0, len(pixels), BATCH)]
    scores = np.concatenate(batches) if batches else np.zeros((0, len(model.labels)), np.float32)
    return scores.astype(np.float64) if wanted == PROBABILITIES_OUTPUT else softmax(scores)


@dataclass
class Readings:
    """What one pipeline and the model made of every picture, in the specs' order."""

    probabilities: np.ndarray  # N x C (zeros where the server answered an error)
    verdicts: list[Verdict | None]  # None where the server answered an error
    errors: list[str | None]


def read(model: Model, thresholds: VerdictThresholds, pixels: list[np.ndarray | None],
         errors: list[str | None], input_size: tuple[int, int]) -> Readings:
    ok = [index for index, value in enumerate(pixels) if value is not None]
    batch = np.stack([pixels[index] for index in ok]) if ok else np.zeros((0, 1, *input_size), np.float32)
    probabilities = np.zeros((len(pixels), len(model.labels) or 10), dtype=np.float64)
    verdicts: list[Verdict | None] = [None] * len(pixels)
    if ok:
        read_probabilities = probabilities_of(model, batch)
        probabilities[ok] = read_probabilities
        judged = judge(read_probabilities, blank_inputs(batch), thresholds, model.labels)
        for index, verdict in zip(ok, judged):
            verdicts[index] = verdict.verdict
    return Readings(probabilities, verdicts, errors)


def interval95(successes: int, total: int) -> float:
    """Half-width of the normal-approximation 95% interval of a proportion."""
    if total == 0:
        return float("nan")
    share = successes / total
    return 1.96 * math.sqrt(share * (1.0 - share) / total)


def kind_row(label: str, kind_id: str, group: str, has_digit: bool, where: np.ndarray, specs_labels: np.ndarray,
             readings: Readings) -> dict:
    """The figures of the pictures at `where` (indices into the set) for one pipeline."""
    count = len(where)
    probabilities = readings.probabilities[where]
    verdicts = [readings.verdicts[index] for index in where]
    errors = sum(readings.errors[index] is not None for index in where)
    top = probabilities.max(axis=1)
    refused = np.array([verdict is not Verdict.DIGIT for verdict in verdicts])  # an error refuses too
    row = {"pipeline": label, "kind_id": kind_id, "group": group, "has_digit": has_digit, "images": count,
           "errors": int(errors), "mean_top_probability": float(top.mean()) if count else None,
           "no_digit": float(np.mean([verdict is Verdict.NO_DIGIT for verdict in verdicts])) if count else None,
           "unsure": float(np.mean([verdict is Verdict.UNSURE for verdict in verdicts])) if count else None}
    if has_digit:
        answered = np.array([readings.errors[index] is None for index in where])
        correct = (probabilities.argmax(axis=1) == specs_labels[where]) & answered
        accepted = ~refused
        row.update(accuracy=float(correct.mean()), accuracy_interval95=interval95(int(correct.sum()), count),
                   refused=float(refused.mean()),
                   accuracy_when_accepted=float(correct[accepted].mean()) if accepted.any() else None)
    else:
        confident = (top >= CONFIDENT) & ~refused
        row.update(flagged=float(refused.mean()), confident_digit=float(confident.mean()))
    return row


def kind_rows(label: str, specs: list[RealInputSpec], readings: Readings) -> list[dict]:
    kind_ids = np.array([spec.kind_id for spec in specs])
    labels = np.array([-1 if spec.label is None else spec.label for spec in specs])
    rows = []
    present = list(dict.fromkeys(kind_ids.tolist()))
    for kind_id in present:
        kind = kind_by_id(kind_id)
        rows.append(kind_row(label, kind_id, kind.group, kind.has_digit, np.flatnonzero(kind_ids == kind_id), labels,
                             readings))
    for group, group_label in GROUP_LABELS.items():
        members = [kind.id for kind in ALL_KINDS if kind.group == group and kind.id in present]
        if len(members) > 1:
            rows.append(kind_row(label, f"({group_label})", group, True, np.flatnonzero(np.isin(kind_ids, members)),
                                 labels, readings))
    for has_digit, name in ((True, "(all digit kinds)"), (False, "(all non-digit kinds)")):
        members = [kind_id for kind_id in present if kind_by_id(kind_id).has_digit == has_digit]
        if members:
            rows.append(kind_row(label, name, "all", has_digit, np.flatnonzero(np.isin(kind_ids, members)), labels,
                                 readings))
    return rows


def separation(specs: list[RealInputSpec], readings: Readings) -> float | None:
    """AUROC of the top probability: digit pictures (positives) against non-digit ones."""
    top = readings.probabilities.max(axis=1)
    has_digit = np.array([spec.label is not None for spec in specs])
    if has_digit.all() or not has_digit.any():
        return None
    return auroc(top[has_digit], top[~has_digit])


def clean_mnist(model: Model, images: np.ndarray, labels: np.ndarray, input_size: tuple[int, int]) -> dict:
    """The 10,000 test digits as raw tensors (the server's already-MNIST path): accuracy and ECE."""
    probabilities = probabilities_of(model, pixels_from_uint8(images, input_size))
    return {"images": len(labels), "accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
            "ece_15_bins": expected_calibration_error(probabilities, labels, bins=15)}


# --- the run --------------------------------------------------------------------------------------


def load_mnist(config: RealInputsBenchConfig) -> tuple[np.ndarray, np.ndarray]:
    from contracts.mnist_idx import load_mnist_test

    try:
        return load_mnist_test(resolve_data_dir(config.data_dir))
    except (OSError, ValueError) as exc:
        raise BenchError(f"the real-inputs benchmark draws MNIST test digits: {exc} "
                         "(set --data-dir or ZOO_DATA_DIR)") from None


def load_classifier(config: RealInputsBenchConfig) -> Model:
    try:
        model = load_model(config.model_file, RuntimeOptions(device=config.device))
    except ModelLoadError as exc:
        raise BenchError(str(exc)) from None
    if not model.classifies_images or not model.card.input_size:
        raise BenchError(f"{config.model_file} is not a digit classifier with a fixed input size; give a file "
                         "that `python -m export` wrote for a classifier")
    return model


def run_benchmark(config: RealInputsBenchConfig) -> dict:
    machine = describe_machine()
    images, labels = load_mnist(config)
    model = load_classifier(config)
    input_size = tuple(int(side) for side in model.card.input_size)
    thresholds = VerdictThresholds.from_card(model.card)
    baseline = revision_pipeline(config.against) if config.against else None
    baseline_modules = None
    if baseline is not None:
        package = baseline.decode.__name__.rsplit(".", 1)[0]
        baseline_modules = (str(Path(baseline.decode.__file__).parent.parent), package)
    specs = list(real_input_plan(labels, digits_per_kind=config.digits_per_kind,
                                 non_digits_per_kind=config.non_digits_per_kind, kinds=selected_kinds(config.kinds),
                                 seed=config.seed))
    jobs = config.jobs or usable_cores()
    prepared = prepare_all(specs, images, input_size, baseline_modules, jobs)
    now = read(model, thresholds, [item[0] for item in prepared], [item[1] for item in prepared], input_size)
    rows = kind_rows(THIS_TREE, specs, now)
    summary = {THIS_TREE: {"auroc_top_probability": separation(specs, now)}}
    if baseline is not None:
        before = read(model, thresholds, [item[2] for item in prepared], [item[3] for item in prepared], input_size)
        rows += kind_rows(baseline.label, specs, before)
        summary[baseline.label] = {"auroc_top_probability": separation(specs, before)}
    first_errors = sorted({error for error in now.errors if error})[:5]
    notes = [
        "accuracy: top-1 == the digit drawn (a server error counts as wrong); +-: 95% interval",
        "refused / flagged: the verdict (contracts.verdicts, the card's thresholds) is not `digit`",
        f"confident: a non-digit read as a digit with probability >= {CONFIDENT}",
        "AUROC: top probability, digit pictures against non-digit pictures",
        "clean MNIST: the 10,000 test digits as raw tensors, no preprocessing; ECE over 15 bins",
    ]
    config_values = {**asdict(config), "model_file": str(config.model_file), "output": str(config.output),
                     "data_dir": str(config.data_dir) if config.data_dir else None, "jobs": jobs}
    document = result_document("real_inputs", finish_machine_record(machine), config_values, rows, notes)
    document["model"] = {"name": model.name, "file": str(config.model_file), "sha256": model.file_sha256,
                         "input_size": list(input_size), "temperature": model.card.temperature,
                         "verdict_thresholds": thresholds.to_meta(), "provider": model.provider}
    document["clean_mnist"] = clean_mnist(model, images, labels, input_size)
    document["summary"] = summary
    document["first_errors"] = first_errors
    document["pipelines"] = [THIS_TREE] + ([baseline.label] if baseline is not None else [])
    return document


# --- the report ------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100.0 * value:.1f}"


def _rows_of(document: dict, label: str, has_digit: bool) -> list[dict]:
    return [row for row in document["rows"] if row["pipeline"] == label and row["has_digit"] == has_digit]


def render(document: dict) -> str:
    pipelines = document["pipelines"]
    model = document["model"]
    parts = [machine_summary(document["machine"]),
             f"model: {model['name']} ({model['file']}), input {model['input_size']}, temperature "
             f"{model['temperature'] if model['temperature'] is not None else 'none'}, verdict thresholds "
             f"{model['verdict_thresholds']}", ""]
    for label in pipelines:
        if len(pipelines) > 1:
            parts.append(f"{label}:")
        digit_rows, non_digit_rows = _rows_of(document, label, True), _rows_of(document, label, False)
        if digit_rows:
            parts += [format_table(
                ["digit kind", "images", "accuracy %", "+-", "refused %", "acc. accepted %", "mean top p", "errors"],
                [[row["kind_id"], row["images"], _percent(row["accuracy"]), _percent(row["accuracy_interval95"]),
                  _percent(row["refused"]), _percent(row["accuracy_when_accepted"]), row["mean_top_probability"],
                  row["errors"]] for row in digit_rows]), ""]
        if non_digit_rows:
            parts += [format_table(
                ["non-digit kind", "images", "flagged %", "no_digit %", "unsure %", "confident digit %", "mean top p",
                 "errors"],
                [[row["kind_id"], row["images"], _percent(row["flagged"]), _percent(row["no_digit"]),
                  _percent(row["unsure"]), _percent(row["confident_digit"]), row["mean_top_probability"],
                  row["errors"]] for row in non_digit_rows]), ""]
        value = document["summary"][label]["auroc_top_probability"]
        shown = "-" if value is None else f"{value:.3f}"
        parts += [f"AUROC of the top probability, digits against non-digits: {shown}",
                  ""]
    if len(pipelines) > 1:
        parts += [f"A/B: {pipelines[1]} (before) against {pipelines[0]} (after), the same pictures and model:",
                  _comparison_table(document, before=pipelines[1], after=pipelines[0]), ""]
    clean = document["clean_mnist"]
    parts.append(f"clean MNIST test ({clean['images']} raw tensors): accuracy {_percent(clean['accuracy'])}%, "
                 f"ECE (15 bins) {clean['ece_15_bins']:.4f}")
    if document["first_errors"]:
        parts += ["", "server errors (first of each):", *(f"  {error}" for error in document["first_errors"])]
    parts += ["", *(f"- {note}" for note in document["notes"])]
    return "\n".join(parts)


def _comparison_table(document: dict, before: str, after: str) -> str:
    rows_before = {row["kind_id"]: row for row in document["rows"] if row["pipeline"] == before}
    lines = []
    for row in document["rows"]:
        if row["pipeline"] != after:
            continue
        old = rows_before[row["kind_id"]]
        measure = "accuracy" if row["has_digit"] else "flagged"
        delta = 100.0 * (row[measure] - old[measure])
        lines.append([row["kind_id"], measure, _percent(old[measure]), _percent(row[measure]), f"{delta:+.1f}",
                      _percent(old["refused"] if row["has_digit"] else old["confident_digit"]),
                      _percent(row["refused"] if row["has_digit"] else row["confident_digit"])])
    return format_table(["kind", "measure", "before %", "after %", "change", "refused / confident before %",
                         "after %"], lines, right_from=2)


# --- the command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = RealInputsBenchConfig(model_file=Path("model.onnx"))
    parser = argparse.ArgumentParser(prog="python -m bench.real_inputs", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("model_file", type=Path, metavar="MODEL.onnx",
                        help="a classifier exported by `python -m export`")
    parser.add_argument("--per-kind", type=int, default=defaults.digits_per_kind,
                        help="pictures per digit kind (default: %(default)s)")
    parser.add_argument("--non-digits-per-kind", type=int, default=defaults.non_digits_per_kind,
                        help="pictures per non-digit kind (default: %(default)s)")
    parser.add_argument("--kinds", help="comma-separated kind ids or groups, e.g. photo,tablet (default: every kind)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the set's seed (default: %(default)s)")
    parser.add_argument("--against", metavar="REV", help="also prepare every picture with this git revision's pipeline")
    parser.add_argument("--jobs", type=int, default=defaults.jobs,
                        help="processes drawing and preparing pictures (default: one per usable core)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default=defaults.device,
                        help="ONNX Runtime device (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    parser.add_argument("--output", type=Path, default=defaults.output, help="JSON result file (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a few pictures per kind, one process (for CI)")
    return parser


def config_from_args(args: argparse.Namespace) -> RealInputsBenchConfig:
    kinds = tuple(name.strip() for name in args.kinds.split(",") if name.strip()) if args.kinds else None
    values = dict(model_file=args.model_file, kinds=kinds, seed=args.seed, against=args.against, device=args.device,
                  data_dir=args.data_dir, output=args.output)
    if args.quick:
        return RealInputsBenchConfig.quick_mode(**values)
    return RealInputsBenchConfig(digits_per_kind=args.per_kind, non_digits_per_kind=args.non_digits_per_kind,
                                 jobs=args.jobs, **values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    config = parse_config(parser, argv, config_from_args)
    return run_and_report("bench.real_inputs", lambda: run_benchmark(config), render, config.output, (BenchError,))


if __name__ == "__main__":
    sys.exit(main())
