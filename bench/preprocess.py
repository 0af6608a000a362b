"""CPU cost of decoding an image and bringing it to MNIST's format, stage by stage, per kind of image.

    python -m bench.preprocess                  # every kind, 10 digits, 5 rounds (about a minute)
    python -m bench.preprocess --quick          # 2 digits, 1 round (seconds: CI)
    python -m bench.preprocess --against main   # also time that git revision's pipeline, A/B

Each kind of image (harness/sample_images.py: the 28x28 digit as a PNG, a 600x600 photo of paper, the
drawing page's canvas, a transparent canvas, a phone's JPEG, a camera's full 2000x1500 frame) is made
from MNIST test digits. Every
stage of contracts.images.preprocess is timed on the input the previous stage gave it, and the whole
server path (decode_image then prepare_digit, what serve.core.digit_inputs runs per image) as
"total". Times are CPU time of this thread (time.thread_time) per image: each sample repeats a
call until it has run for a few milliseconds, and the table shows the median sample over digits
and interleaved rounds, so a neighbour's burst on a shared machine moves few of them.

With --against REV, that revision's serve/images package is loaded beside this one and its decode
and total are timed in the same rounds, alternating which goes first: the ratio is measured in one
process, minutes apart at most.

Writes bench/results/preprocess.json, prints the table and the targets, met or missed. Exit status:
0 when it ran (a missed target is reported, not failed), 2 when it cannot run.
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np

from bench._machine import describe_machine, finish_machine_record, machine_summary
from bench._report import (
    RESULTS_DIR,
    format_table,
    parse_config,
    ratio,
    result_document,
    run_and_report,
)
from contracts.data_dir import DATA_DIR_HELP, resolve_data_dir
from contracts.digit_format import DIGIT_BOX, DIGIT_SHAPE
from harness.sample_images import KINDS, ImageKind
from harness.targets import Metric, Target

REPO_ROOT = Path(__file__).resolve().parent.parent
TOTAL = "total"
KIND_NAMES = {kind.id: kind.name for kind in KINDS}


def total_target(kind_id: str, limit_ms: float) -> Target:
    """Decoding and the MNIST format of one kind of image, in at most limit_ms CPU ms per image."""
    return Target(f"{kind_id}_total", Metric("median_cpu_ms", f"{kind_id}.{TOTAL}"), "<=", limit_ms,
                  f"{KIND_NAMES[kind_id]}: decode + MNIST format <= {limit_ms:g} ms CPU")


TARGETS = (total_target("mnist_png", 0.25), total_target("paper_photo", 5.0), total_target("camera_photo", 25.0))


class BenchError(Exception):
    """The benchmark cannot run (missing data, an unknown revision); the message says what to do."""


@dataclass(frozen=True)
class PreprocessBenchConfig:
    digits: int = 10  # test digits per kind, the first of each class
    rounds: int = 5
    sample_seconds: float = 0.003  # each sample repeats a call for at least this long
    against: str | None = None  # a git revision whose pipeline is timed alongside
    data_dir: Path | None = None
    output: Path = RESULTS_DIR / "preprocess.json"
    quick: bool = False

    def __post_init__(self) -> None:
        if self.digits < 1 or self.rounds < 1 or self.sample_seconds <= 0:
            raise ValueError("digits and rounds must be >= 1 and sample_seconds > 0")

    @classmethod
    def quick_mode(cls, **overrides) -> "PreprocessBenchConfig":
        return cls(**{**dict(digits=2, rounds=1, sample_seconds=0.001, quick=True), **overrides})


@dataclass(frozen=True)
class Pipeline:
    """One revision's contracts.images: what the benchmark calls of it."""

    label: str
    decode: ModuleType  # contracts.images.decode
    preprocess: ModuleType  # contracts.images.preprocess

    def total(self, data: bytes) -> np.ndarray:
        limits = self.decode.ImageLimits()
        return self.preprocess.prepare_digit(self.decode.decode_image(data, limits), already_mnist=False,
                                             input_size=DIGIT_SHAPE)


def current_pipeline() -> Pipeline:
    from contracts.images import decode, preprocess

    return Pipeline("this tree", decode, preprocess)


def revision_pipeline(revision: str) -> Pipeline:
    """The image pipeline as it is at a git revision, imported under another package name beside this one.

    Revisions before the contracts package kept it in serve/images."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"git {' '.join(args)} failed: {done.stderr.strip()}; give --against a revision of this repository")
        return done.stdout

    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}").strip()
    package = f"_preprocess_baseline_{commit[:12]}"
    folder = Path(tempfile.mkdtemp(prefix="bench-preprocess-")) / package
    folder.mkdir()
    home = "contracts/images" if git("ls-tree", "--name-only", commit, "contracts/images/").strip() else "serve/images"
    for path in git("ls-tree", "--name-only", commit, f"{home}/").split():
        if path.endswith(".py"):
            source = git("show", f"{commit}:{path}").replace(home.replace("/", ".") + ".", f"{package}.")
            # Before the move, the pipeline's errors and digit format lived in serve; today's homes hold them.
            source = source.replace("serve.core.errors", "contracts.errors").replace(
                f"{package}.digit_format", "contracts.digit_format")
            (folder / Path(path).name).write_text(source)
    sys.path.insert(0, str(folder.parent))
    return Pipeline(f"{revision} ({commit[:10]})", importlib.import_module(f"{package}.decode"),
                    importlib.import_module(f"{package}.preprocess"))


def stage_calls(pipeline: Pipeline, data: bytes) -> list[tuple[str, Callable[[], object]]]:
    """(stage, a call that runs it on its real input) for every stage, in the pipeline's order.

    Each stage's input is what the stages before it produced; the chain must end where
    to_mnist_format does, or the plan no longer describes the pipeline and the benchmark stops.
    """
    decode, pre = pipeline.decode, pipeline.preprocess
    limits = decode.ImageLimits()
    gray = decode.decode_image(data, limits)
    calls: list[tuple[str, Callable[[], object]]] = [("decode", lambda: decode.decode_image(data, limits))]
    checked, low, high = pre._checked_gray(gray)
    blank = "a benchmark image came out blank: its kind no longer draws a digit the pipeline finds"
    working = pre.working_copy(checked)
    found = pre.ink_map(working, low, high)
    if found is None:
        raise BenchError(blank)
    ink, threshold = found
    digit_mask = pre.select_digit(ink, threshold)
    if digit_mask is None:
        raise BenchError(blank)
    cropped = pre.crop_digit(ink, digit_mask)
    scaled = pre._scale_to_box(cropped, DIGIT_BOX)
    digit = pre._centre_by_mass(scaled)
    if not np.array_equal(digit, pre.to_mnist_format(gray)):
        raise BenchError("the benchmark's stages no longer add up to to_mnist_format; update bench/preprocess.py")
    calls += [
        ("check", lambda: pre._checked_gray(gray)),
        ("working copy", lambda: pre.working_copy(checked)),
        ("ink map", lambda: pre.ink_map(working, low, high)),
        ("select digit", lambda: pre.select_digit(ink, threshold)),
        ("crop", lambda: pre.crop_digit(ink, digit_mask)),
        ("scale to box", lambda: pre._scale_to_box(cropped, DIGIT_BOX)),
        ("centre", lambda: pre._centre_by_mass(scaled)),
        ("pad", lambda: pre.prepare_digit(digit, already_mnist=True)),
        (TOTAL, lambda: pipeline.total(data)),
    ]
    return calls


def cpu_ms_per_call(call: Callable[[], object], sample_seconds: float) -> float:
    """CPU milliseconds of one call: repeated until the sample has run sample_seconds, then divided."""
    calls, started = 0, time.thread_time()
    while True:
        call()
        calls += 1
        elapsed = time.thread_time() - started
        if elapsed >= sample_seconds:
            return 1000.0 * elapsed / calls


def mnist_digits(config: PreprocessBenchConfig) -> np.ndarray:
    from contracts.mnist_idx import load_mnist_test

    try:
        images, labels = load_mnist_test(resolve_data_dir(config.data_dir))
    except (OSError, ValueError) as exc:
        raise BenchError(f"the preprocessing benchmark renders MNIST test digits: {exc} (set --data-dir or ZOO_DATA_DIR)") from None
    # The first of each class, then the second of each, ...: every class is in even a short run.
    ranks = np.empty(len(labels), dtype=np.int64)
    for digit in range(10):
        where = np.flatnonzero(labels == digit)
        ranks[where] = np.arange(len(where)) * 10 + digit
    return images[np.argsort(ranks)[: config.digits]]


def run_benchmark(config: PreprocessBenchConfig) -> dict:
    machine = describe_machine()
    digits = mnist_digits(config)
    current = current_pipeline()
    baseline = revision_pipeline(config.against) if config.against else None
    files = {kind.id: [kind.render(digit, seed) for seed, digit in enumerate(digits)] for kind in KINDS}
    plans = {name: [stage_calls(current, data) for data in datas] for name, datas in files.items()}
    samples: dict[tuple[str, str, str], list[float]] = {}
    for round_index in range(config.rounds):
        for kind in KINDS:
            for index, data in enumerate(files[kind.id]):
                for stage, call in plans[kind.id][index]:
                    samples.setdefault((current.label, kind.id, stage), []).append(
                        cpu_ms_per_call(call, config.sample_seconds))
                if baseline is not None:
                    _time_against(current, baseline, data, kind, round_index + index, config, samples)
    rows = [
        {"pipeline": label, "kind_id": kind_id, "kind": KIND_NAMES[kind_id], "stage": stage,
         "median_cpu_ms": float(np.median(values)), "samples": len(values), "min_cpu_ms": float(np.min(values)),
         "max_cpu_ms": float(np.max(values))}
        for (label, kind_id, stage), values in samples.items()
    ]
    notes = [
        "CPU time of the benchmark's thread per image (time.thread_time), median of samples over digits and rounds",
        "total = decode_image + prepare_digit: what the server runs per encoded image in its decoding pool",
    ]
    document = result_document("preprocess", finish_machine_record(machine), _config_dict(config), rows, notes)
    document["targets"] = evaluate_targets(rows, current.label)
    if baseline is not None:
        document["comparison"] = compare(rows, current.label, baseline.label)
    return document


def _time_against(current: Pipeline, baseline: Pipeline, data: bytes, kind: ImageKind, turn: int,
                  config: PreprocessBenchConfig, samples: dict) -> None:
    """decode and total of both pipelines on one file, the order alternating from turn to turn."""
    pair = (current, baseline) if turn % 2 == 0 else (baseline, current)
    for pipeline in pair:
        decode = pipeline.decode
        calls = (("decode", lambda: decode.decode_image(data, decode.ImageLimits())),
                 (TOTAL, lambda: pipeline.total(data)))
        for stage, call in calls:
            if pipeline is current:
                stage = f"{stage} (A/B)"
            samples.setdefault((pipeline.label, kind.id, stage), []).append(cpu_ms_per_call(call, config.sample_seconds))


def _config_dict(config: PreprocessBenchConfig) -> dict:
    values = asdict(config)
    values["output"] = str(config.output)
    values["data_dir"] = str(config.data_dir) if config.data_dir else None
    return values


def _median(rows: list[dict], label: str, kind_id: str, stage: str) -> float | None:
    for row in rows:
        if (row["pipeline"], row["kind_id"], row["stage"]) == (label, kind_id, stage):
            return row["median_cpu_ms"]
    return None


def evaluate_targets(rows: list[dict], label: str) -> list[dict]:
    """Each target on the rows of pipeline `label`, keyed "KIND_ID.STAGE" (unmeasured: value None, missed)."""
    rows_by_id = {f"{row['kind_id']}.{row['stage']}": row for row in rows if row["pipeline"] == label}
    return [target.evaluate(rows_by_id) or target.verdict(None) for target in TARGETS]


def compare(rows: list[dict], current_label: str, baseline_label: str) -> list[dict]:
    """Per kind, decode and total of both pipelines timed in the same rounds, and before / after."""
    comparison = []
    for kind in KINDS:
        for stage in ("decode", TOTAL):
            before = _median(rows, baseline_label, kind.id, stage)
            after = _median(rows, current_label, kind.id, f"{stage} (A/B)")
            comparison.append({"kind_id": kind.id, "kind": kind.name, "stage": stage, "before_ms": before,
                               "after_ms": after,
                               "speed_up": ratio(before, after) if before is not None and after is not None else None})
    return comparison


def render(document: dict) -> str:
    rows = [row for row in document["rows"] if not row["stage"].endswith("(A/B)")]
    labels = sorted({row["pipeline"] for row in rows})
    stages: list[str] = []
    for row in rows:
        if row["stage"] not in stages:
            stages.append(row["stage"])
    parts = [machine_summary(document["machine"]), ""]
    for label in labels:
        if len(labels) > 1 or document.get("comparison"):
            parts.append(f"{label}:")
        table = [[kind.name, *(_median(rows, label, kind.id, stage) for stage in stages)] for kind in KINDS]
        if any(value is not None for line in table for value in line[1:]):
            parts += [format_table(["median CPU ms per image", *stages], table, right_from=1), ""]
    if document.get("comparison"):
        parts.append(f"A/B in the same rounds against {document['config']['against']}:")
        parts.append(format_table(
            ["kind", "stage", "before ms", "after ms", "speed-up"],
            [[c["kind"], c["stage"], c["before_ms"], c["after_ms"],
              f"{c['speed_up']:.2f}x" if c["speed_up"] else "-"] for c in document["comparison"]],
            right_from=2))
        parts.append("")
    parts.append("targets:")
    for target in document["targets"]:
        value = target["value"]
        parts.append(f"  [{'met' if target['met'] else 'MISSED'}] {target['target']}: "
                     f"{'-' if value is None else f'{value:.3f}'}")
    parts += ["", *(f"- {note}" for note in document["notes"])]
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    defaults = PreprocessBenchConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.preprocess", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--digits", type=int, default=defaults.digits, help="test digits per kind of image")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="interleaved rounds over every kind")
    parser.add_argument("--against", metavar="REV", help="also time this git revision's pipeline, in the same rounds")
    parser.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    parser.add_argument("--output", type=Path, default=defaults.output, help="JSON result file (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 digits, 1 round, short samples (for CI)")
    return parser


def config_from_args(args: argparse.Namespace) -> PreprocessBenchConfig:
    values = dict(against=args.against, data_dir=args.data_dir, output=args.output)
    if args.quick:
        return PreprocessBenchConfig.quick_mode(**values)
    return PreprocessBenchConfig(digits=args.digits, rounds=args.rounds, **values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = parse_config(parser, argv, config_from_args)
    return run_and_report("bench.preprocess", lambda: run_benchmark(config), render, config.output, (BenchError,))


if __name__ == "__main__":
    sys.exit(main())
