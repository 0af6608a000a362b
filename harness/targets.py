"""A benchmark's targets, judged by ids: which rows a figure comes from, and the threshold it must meet.

A row is a dict with a stable "id" (`single_c64`, `batch256`, `png`) beside its display text; a
Target names the rows it reads by id, how its figure is made of them (a field, or a field of one
row over the same field of another), the operator and threshold it must meet, and the line a
reader sees. Nothing is ever found by its display text, so rewording a row or a target changes no
verdict. Evaluated targets are plain dicts (JSON as written), summarised over interleaved rounds
by `over_rounds`.
"""
from __future__ import annotations

import math
import operator as operators
from dataclasses import dataclass
from typing import Any, Callable, Mapping

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operators.ge, ">": operators.gt, "<=": operators.le, "<": operators.lt, "==": operators.eq,
}
# How a target's rounds are summarised: the median round, or the worst one (one error in any round
# is an error).
MEDIAN, WORST = "median", "worst"


@dataclass(frozen=True)
class Metric:
    """A row's field (a dotted path into the row: "latency_ms.p99_ms"), or its ratio to another row's."""

    field: str
    row: str
    over: str | None = None  # the id of the row whose same field divides this one

    @property
    def rows(self) -> tuple[str, ...]:
        return (self.row,) if self.over is None else (self.row, self.over)

    def value(self, rows_by_id: Mapping[str, Mapping[str, Any]]) -> float | None:
        numerator = field_value(rows_by_id[self.row], self.field)
        if self.over is None:
            return numerator
        return ratio(numerator, field_value(rows_by_id[self.over], self.field))


@dataclass(frozen=True)
class Target:
    """A figure and the threshold it must meet; `operator` None: a figure reported, with no threshold."""

    id: str
    metric: Metric
    operator: str | None
    threshold: float | None
    display: str
    summary: str = MEDIAN  # how rounds are summarised: MEDIAN or WORST

    def __post_init__(self) -> None:
        if self.operator is not None and self.operator not in OPERATORS:
            raise ValueError(f"target {self.id}: operator must be one of {sorted(OPERATORS)}, got {self.operator!r}")
        if (self.operator is None) != (self.threshold is None):
            raise ValueError(f"target {self.id}: an operator needs a threshold and a threshold an operator")
        if self.summary not in (MEDIAN, WORST):
            raise ValueError(f"target {self.id}: summary must be {MEDIAN!r} or {WORST!r}, got {self.summary!r}")

    def met(self, value: float | None) -> bool | None:
        """Whether `value` meets the threshold; None without a threshold; False without a value."""
        if self.operator is None:
            return None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return OPERATORS[self.operator](value, self.threshold)

    def worst(self, values: list[float | None]) -> float | None:
        """The value furthest on the failing side of the threshold (None, a missing figure, first)."""
        if any(value is None for value in values):
            return None
        upward = self.operator in (">=", ">")
        return min(values) if upward else max(values)

    def evaluate(self, rows_by_id: Mapping[str, Mapping[str, Any]]) -> dict | None:
        """The verdict on these rows, as written to the results; None when a row it reads is missing."""
        if any(row not in rows_by_id for row in self.metric.rows):
            return None
        return self.verdict(self.metric.value(rows_by_id))

    def verdict(self, value: float | None) -> dict:
        """The verdict on a value, as written to the results (None: the figure could not be measured)."""
        return {"id": self.id, "target": self.display, "operator": self.operator, "threshold": self.threshold,
                "value": value, "met": self.met(value)}


def field_value(row: Mapping[str, Any], path: str) -> Any:
    value: Any = row
    for key in path.split("."):
        value = value[key]
    return value


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator or math.isnan(denominator) or math.isnan(numerator):
        return None
    return numerator / denominator


def by_id(rows: list[dict]) -> dict[str, dict]:
    """Rows keyed by their "id"; ValueError when two share one."""
    keyed: dict[str, dict] = {}
    for row in rows:
        if row["id"] in keyed:
            raise ValueError(f"two rows have the id {row['id']!r}")
        keyed[row["id"]] = row
    return keyed


def lower_median(items: list, key=None):
    """The median item (the lower middle one for an even count: always one that was measured); None if empty."""
    ordered = sorted(items, key=key)
    return ordered[(len(ordered) - 1) // 2] if ordered else None


def over_rounds(targets: Mapping[str, Target], per_round: list[list[dict]]) -> list[dict]:
    """Each target's verdicts of every round (evaluated dicts, the same ids in each), summarised.

    The value is the median round's (WORST targets: the worst round's) with every round's beside it;
    a threshold is met when it was met in most rounds (WORST targets: in every round). A "ceiling"
    that a round's verdict carries is the median round's, with that round's note.
    """
    summary = []
    for index, first in enumerate(per_round[0]):
        target = targets[first["id"]]
        verdicts = [evaluated[index] for evaluated in per_round]
        if any(verdict["id"] != target.id for verdict in verdicts):
            raise ValueError(f"the rounds evaluated different targets at {index}: {[v['id'] for v in verdicts]}")
        values = [verdict["value"] for verdict in verdicts]
        chosen = dict(first, rounds=values)
        if target.summary == WORST:
            chosen["value"] = target.worst(values)
            chosen["met"] = target.met(chosen["value"])
        else:
            chosen["value"] = lower_median([value for value in values if value is not None])
            if target.operator is not None:
                chosen["met"] = sum(bool(verdict["met"]) for verdict in verdicts) * 2 > len(verdicts)
        ceilings = [verdict for verdict in verdicts if verdict.get("ceiling") is not None]
        if ceilings:
            median_round = lower_median(ceilings, key=lambda verdict: verdict["ceiling"])
            chosen["ceiling"], chosen["ceiling_note"] = median_round["ceiling"], median_round["ceiling_note"]
        summary.append(chosen)
    return summary
