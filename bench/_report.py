"""What every benchmark script shares to report: latency percentiles, a text table, a JSON result file.

A result file is one JSON document: {"benchmark", "schema_version", "machine", "config", "rows",
"notes"}, so that a reader (or CI) can check its shape without knowing the script.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

SCHEMA_VERSION = 1
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Latency:
    """Percentiles of a set of latencies, in milliseconds."""

    samples: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float] | np.ndarray) -> "Latency":
        values = np.asarray(seconds, dtype=np.float64) * 1000.0
        if values.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan)
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return cls(int(values.size), float(values.mean()), float(p50), float(p95), float(p99), float(values.max()))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def ratio(numerator: float, denominator: float) -> float | None:
    if not denominator or math.isnan(denominator) or math.isnan(numerator):
        return None
    return numerator / denominator


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: numbers rounded sensibly, None and NaN as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right_from: int = 1) -> str:
    """A plain-text table; columns from `right_from` on are right-aligned (the numbers)."""
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < right_from else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _jsonable(value: Any) -> Any:
    """NaN is not JSON: it becomes null, as do numpy scalars their Python values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def result_document(
    benchmark: str, machine: dict[str, Any], config: dict[str, Any], rows: list[dict[str, Any]], notes: list[str]
) -> dict[str, Any]:
    return _jsonable(
        {
            "benchmark": benchmark,
            "schema_version": SCHEMA_VERSION,
            "machine": machine,
            "config": config,
            "rows": rows,
            "notes": notes,
        }
    )


def write_json(path: Path, document: dict[str, Any]) -> Path:
    """Write atomically (a reader never sees half a file), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        json.dump(document, f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(f.name, path)
    return path


def parse_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None, config_from_args: Callable[[argparse.Namespace], Any]) -> Any:
    """A benchmark's command line -> its config; a value the config refuses is a usage error (exit 2)."""
    args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))


def run_and_report(prog: str, run: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], str],
                   output: Path, errors: tuple[type[BaseException], ...]) -> int:
    """A benchmark's last step: run it, print its table, write its JSON; exit status 2 with one line
    when it cannot run (`errors`), 0 when it ran (a missed target is reported, not failed)."""
    try:
        document = run()
    except errors as exc:
        print(f"python -m {prog}: error: {exc}", file=sys.stderr)
        return 2
    print(render(document))
    path = write_json(output, document)
    print(f"\nwrote {path}")
    return 0
