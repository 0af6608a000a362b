"""The serve benchmark's targets: its scenario ids, what each target reads off them, and the rounds' summary.

bench/serve.py runs the scenarios (each row carries its id) and writes what `targets_over_rounds`
makes of its rounds; the tests judge made-up rounds with the same functions. Each target is found
by its id, never by its text: rewording a line changes no verdict.
"""
from __future__ import annotations

import math

from .targets import (
    WORST,
    Metric,
    Target,
    by_id,
    lower_median,
    over_rounds,
    ratio,
)

# Scenario ids (bench/serve.py gives each its display text).
SINGLE_C1, SINGLE_C8, SINGLE_C64 = "single_c1", "single_c8", "single_c64"
SINGLE_C1_NO_BATCHING, SINGLE_C8_NO_BATCHING, SINGLE_C64_NO_BATCHING = (
    "single_c1_no_batching", "single_c8_no_batching", "single_c64_no_batching")
BATCH256, STREAM_C64 = "batch256", "stream_c64"
V2_SINGLE_C64, V2_BATCH256, V2_HTTP_BATCH256 = "v2_single_c64", "v2_batch256", "v2_http_batch256"
PNG, PNG_BATCH32 = "png", "png_batch32"
NAIVE_V2_SINGLE_C64, NAIVE_V2_BATCH256 = "naive_v2_single_c64", "naive_v2_batch256"
BARE_C64, BARE_BATCH256 = "bare_c64", "bare_batch256"


def single_id(concurrency: int, batching: bool = True) -> str:
    return f"single_c{concurrency}" + ("" if batching else "_no_batching")


def scaling_id(workers: int) -> str:
    """The v2 single-image load against a server of `workers` workers."""
    return f"{V2_SINGLE_C64}_workers{workers}"


def workers_of(scenario_id: str) -> int | None:
    """The worker count of a scaling scenario's id; None for any other id."""
    prefix = f"{V2_SINGLE_C64}_workers"
    return int(scenario_id[len(prefix):]) if scenario_id.startswith(prefix) else None


# Target ids and what each reads.
BATCH256_VS_ORT = Target("batch256_vs_ort", Metric("vs_reference", BATCH256), ">=", 0.85,
                         "unary 256 images, c2: >= 85% of in-process ORT at batch 256")
V2_BATCH256_VS_ORT = Target("v2_batch256_vs_ort", Metric("vs_reference", V2_BATCH256), ">=", 0.85,
                            "v2 raw tensor 256 images, c2: >= 85% of in-process ORT at batch 256")
V2_HTTP_VS_GRPC = Target("v2_http_vs_grpc", Metric("images_per_s", V2_HTTP_BATCH256, over=V2_BATCH256), ">=", 0.8,
                         "v2 256 images: HTTP binary tensors >= 80% of gRPC raw tensors")
SINGLE_C64_BATCHING_GAIN = Target(
    "single_c64_batching_gain", Metric("images_per_s", SINGLE_C64, over=SINGLE_C64_NO_BATCHING), ">=", 3,
    "c64 single image: batching on >= 3x batching off")
SINGLE_C64_P99 = Target("single_c64_p99", Metric("latency_ms.p99_ms", SINGLE_C64), "<", 20,
                        "c64 single image, batching on: p99 < 20 ms")
SINGLE_C64_ERRORS = Target("single_c64_errors", Metric("errors", SINGLE_C64), "==", 0,
                           "c64 single image, batching on: zero errors", summary=WORST)
V2_BATCH256_VS_NAIVE = Target("v2_batch256_vs_naive", Metric("images_per_s", V2_BATCH256, over=NAIVE_V2_BATCH256),
                              ">=", 1, "v2 raw tensor 256 images, c2: never below the naive server")
PNG_VS_V2_SINGLE = Target("png_vs_v2_single", Metric("images_per_s", PNG, over=V2_SINGLE_C64), ">=", 0.5,
                          "png 1 image, c64: >= 50% of v2 raw tensor 1 image, c64's images/s")


def peer_targets(workers: int) -> list[Target]:
    """Our server (of `workers` workers) against the naive one on the v2 single-image load."""
    ours = f"v2 raw tensor 1 image, c64 (--workers {workers})"
    return [
        Target("v2_single_c64_vs_naive", Metric("images_per_s", V2_SINGLE_C64, over=NAIVE_V2_SINGLE_C64), ">=", 2,
               f"{ours}: >= 2x the naive server's images/s"),
        Target("v2_single_c64_p99_vs_naive", Metric("latency_ms.p99_ms", V2_SINGLE_C64, over=NAIVE_V2_SINGLE_C64),
               "<=", 0.5, f"{ours}: p99 <= half the naive server's p99"),
        Target("v2_single_c64_errors", Metric("errors", V2_SINGLE_C64), "==", 0, f"{ours}: zero errors",
               summary=WORST),
    ]


def scaling_targets(workers: int) -> list[Target]:
    """N workers against one and against the naive server: figures to report, no thresholds."""
    load = "(v2 raw tensor 1 image, c64)"
    targets = []
    if workers != 1:
        targets.append(Target(f"scaling_workers{workers}", Metric("images_per_s", scaling_id(workers), over=scaling_id(1)),
                              None, None, f"scaling: --workers {workers} over --workers 1 {load}"))
    return targets + [
        Target(f"workers{workers}_vs_naive", Metric("images_per_s", scaling_id(workers), over=NAIVE_V2_SINGLE_C64),
               None, None, f"--workers {workers}: images/s over the naive server's {load}"),
        Target(f"workers{workers}_p99_vs_naive",
               Metric("latency_ms.p99_ms", scaling_id(workers), over=NAIVE_V2_SINGLE_C64),
               None, None, f"--workers {workers}: p99 over the naive server's p99 {load}"),
    ]


def serve_targets(rows: list[dict], workers: int = 1) -> list[Target]:
    """Every target these rows can be judged on, in the order they are reported."""
    targets = [BATCH256_VS_ORT, V2_BATCH256_VS_ORT, V2_HTTP_VS_GRPC, SINGLE_C64_BATCHING_GAIN, SINGLE_C64_P99,
               SINGLE_C64_ERRORS, *peer_targets(workers), V2_BATCH256_VS_NAIVE, PNG_VS_V2_SINGLE]
    for row in rows:
        scaled = workers_of(row["id"])
        if scaled is not None:
            targets += scaling_targets(scaled)
    return targets


def evaluate_targets(rows: list[dict], cores: int, workers: int = 1) -> list[dict]:
    """The service targets, read off this run's rows by id, each with the ceiling this run measured for it.

    Ceilings come from the bare gRPC server (no inference, no handler code, canned answers):
    - 256 images vs in-process ORT: with the cores saturated, a request costs at least the reference's
      own CPU (ORT's threads) plus the bare transport's CPU on both ends, so the service reaches at
      most cores x 256 / that sum images/s;
    - batching on vs off: batching can remove inference cost, not the transport's, so the gain is at
      most the bare server's throughput over batching off;
    - p99 at concurrency 64: the bare server's own p99 under the same load.
    """
    rows_by_id = by_id(rows)
    bare, bare_bulk = rows_by_id.get(BARE_C64), rows_by_id.get(BARE_BATCH256)
    evaluated = []
    for target in serve_targets(rows, workers):
        verdict = target.evaluate(rows_by_id)
        if verdict is None:
            continue
        if target in (BATCH256_VS_ORT, V2_BATCH256_VS_ORT):
            row = rows_by_id[target.metric.row]
            if row["vs_reference"] is None:
                continue
            if bare_bulk and row["reference_cpu_ms_per_request"]:
                cpu_ms = (row["reference_cpu_ms_per_request"] + bare_bulk["server_cpu_ms_per_request"]
                          + bare_bulk["client_cpu_ms_per_request"])
                verdict["ceiling"] = min(1.0, cores * 256 / (cpu_ms / 1000) / row["reference_images_per_s"])
                verdict["ceiling_note"] = (
                    f"{cores} cores / (ORT {row['reference_cpu_ms_per_request']:.1f} + bare transport "
                    f"{bare_bulk['server_cpu_ms_per_request']:.1f} server + {bare_bulk['client_cpu_ms_per_request']:.1f} "
                    "client CPU ms per request)"
                )
        elif target is SINGLE_C64_BATCHING_GAIN and bare:
            verdict["ceiling"] = ratio(bare["images_per_s"], rows_by_id[SINGLE_C64_NO_BATCHING]["images_per_s"])
            verdict["ceiling_note"] = "bare gRPC server's images/s over batching off's"
        elif target is SINGLE_C64_P99 and bare:
            on = rows_by_id[SINGLE_C64]
            verdict["ceiling"] = bare["latency_ms"]["p99_ms"]
            # Little's law: with 64 calls always in flight the mean latency is 64 / throughput, and
            # p99 is at least the mean; no server slower than 64 / 20 ms = 3,200 calls/s can meet it.
            mean_floor_ms = 1000 * on["concurrency"] / bare["requests_per_s"] if bare["requests_per_s"] else None
            verdict["ceiling_note"] = (
                f"the bare gRPC server's p99 at c64; by Little's law no p99 can be under the mean latency, "
                f"{on['concurrency']} in flight / throughput = {_fmt(mean_floor_ms)} ms at the bare server's "
                f"{_fmt(bare['requests_per_s'])} calls/s"
            )
        evaluated.append(verdict)
    return evaluated


def targets_over_rounds(rounds: list[list[dict]], cores: int, workers: int = 1) -> list[dict]:
    """Each target evaluated within every round, then summarised by its median round.

    Within a round the compared scenarios ran minutes apart at most; across rounds the machine's
    speed may have changed. The median of per-round values is what a drifting machine cannot fake.
    """
    per_round = [evaluate_targets(rows, cores, workers) for rows in rounds]
    targets = {target.id: target for target in serve_targets(rounds[0], workers)}
    return over_rounds(targets, per_round)


def median_rows(rounds: list[list[dict]]) -> list[dict]:
    """Per scenario id, its row from the round with the median images/s, with every round's figures beside it."""
    rows = []
    for index, first in enumerate(rounds[0]):
        runs = [rows_of_round[index] for rows_of_round in rounds]
        if any(run["id"] != first["id"] for run in runs):
            raise ValueError(f"the rounds ran different scenarios at {index}: {[run['id'] for run in runs]}")
        row = dict(lower_median(runs, key=lambda run: run["images_per_s"]))
        row["images_per_s_rounds"] = [run["images_per_s"] for run in runs]
        row["p99_ms_rounds"] = [run["latency_ms"]["p99_ms"] for run in runs]
        row["vs_reference_rounds"] = [run["vs_reference"] for run in runs]
        row["errors"] = sum(run["errors"] for run in runs)
        rows.append(row)
    return rows


def _fmt(value) -> str:
    """As the benchmark's tables print a figure: whole thousands with separators, else 2 decimals; '-' for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"
    return str(value)
