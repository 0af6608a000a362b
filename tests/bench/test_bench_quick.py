"""The benchmark scripts' quick modes, run as CI runs them: they must exit 0 and write well-formed results.

Not a speed test (the numbers of a shared CI machine mean little): it keeps the scripts from rotting.
The inference benchmark keeps the files it timed, and the serve benchmark serves its lenet.onnx,
so that lenet is exported once for both.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from onnx_models import mnist_centroid_classifier

from harness.real_inputs import ALL_KINDS
from harness.serve_targets import targets_over_rounds

REPO_ROOT = Path(__file__).resolve().parents[2]
INFERENCE_BACKENDS = {"pytorch eager", "onnxruntime fp32", "onnxruntime optimized", "onnxruntime int8"}
QUICK_SERVE_SCENARIOS = [
    "single_c1",
    "single_c64",
    "batch256",
    "stream_c64",
    "v2_single_c64",
    "v2_batch256",
    "v2_http_batch256",
    "png",
    "v2_single_c64_workers1",
    "v2_single_c64_workers2",
    "naive_v2_single_c64",
    "naive_v2_batch256",
    "single_c64_no_batching",
    "bare_c64",
]


def run_module(args: list[str], mnist_root: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, ZOO_DATA_DIR=str(mnist_root))
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def inference_run(tmp_path_factory, mnist_root):
    folder = tmp_path_factory.mktemp("bench-inference")
    output = folder / "inference.json"
    done = run_module(
        ["bench.inference", "--quick", "--output", str(output), "--keep-models", str(folder / "models"),
         "--runs-dir", str(folder / "no-runs")],
        mnist_root,
    )
    return done, output, folder / "models"


@pytest.fixture(scope="module")
def serve_run(tmp_path_factory, mnist_root, inference_run):
    _, _, models = inference_run
    model_file = models / "lenet" / "lenet.onnx"
    if not model_file.is_file():
        pytest.fail(f"the inference benchmark did not keep {model_file}")
    output = tmp_path_factory.mktemp("bench-serve") / "serve.json"
    # Two workers whatever the machine has: the rows and servers below are those of --workers 2.
    done = run_module(["bench.serve", "--quick", "--model-file", str(model_file), "--output", str(output),
                       "--workers", "2"], mnist_root)
    return done, output


def check_machine(machine: dict) -> None:
    assert machine["usable_cores"] >= 1
    assert machine["cpu_model"]
    assert "CPUExecutionProvider" in machine["onnxruntime_providers"]
    assert machine["versions"]["python"]
    assert machine["load_average_at_start"] is not None and machine["load_average_at_end"] is not None


def test_inference_quick_writes_every_backend_at_every_batch_size(inference_run):
    done, output, _ = inference_run
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(output.read_text())
    assert document["benchmark"] == "inference" and document["schema_version"] == 1
    check_machine(document["machine"])
    cpu_rows = [row for row in document["rows"] if row["device"] == "cpu"]
    backends = set(INFERENCE_BACKENDS)
    if document["config"]["threads"] > 1:
        backends.add("pytorch eager, 1 thread")  # context beside the baseline, on machines with several cores
    assert {(row["backend"], row["batch_size"]) for row in cpu_rows} == {
        (backend, batch) for backend in backends for batch in (1, 32, 256)
    }
    for row in cpu_rows:
        assert row["model"] == "lenet" and row["weights"] == "random"
        assert row["samples"] >= 3
        assert 0 < row["median_ms"] <= row["p99_ms"]
        assert row["images_per_s"] > 0 and row["vs_pytorch"] > 0
        if row["backend"] == "pytorch eager":
            assert row["vs_pytorch"] == pytest.approx(1.0)
    assert "lenet" in done.stdout and "vs PyTorch" in done.stdout


def test_serve_quick_writes_every_scenario_without_errors(serve_run):
    done, output = serve_run
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(output.read_text())
    assert document["benchmark"] == "serve"
    check_machine(document["machine"])
    rows = document["rows"]
    assert [row["id"] for row in rows] == QUICK_SERVE_SCENARIOS
    for row in rows:
        assert row["errors"] == 0, (row["id"], row["errors_by_code"], row["first_error"])
        assert row["images_per_s"] > 0
        assert row["images_per_s"] == pytest.approx(row["requests_per_s"] * row["images_per_request"])
        latency = row["latency_ms"]
        assert latency["samples"] > 0 and 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
        assert row["server_cpu_ms_per_request"] > 0
        if row["api"] == "bare grpc":
            assert row["vs_reference"] is None
        else:
            assert row["reference_images_per_s"] > 0 and row["vs_reference"] > 0
    batched = {row["id"]: row["average_batch"] for row in rows}
    ours = [row for row in rows if row["api"] not in ("bare grpc", "naive grpc")]
    assert all(row["inference_ms_per_batch"] > 0 for row in ours), "our servers' own metrics, summed over workers"
    assert batched["batch256"] == pytest.approx(256)
    assert batched["single_c64_no_batching"] == pytest.approx(1)
    # Ours (batching on, with the default workers), --workers 1, the naive, batching off, the bare server.
    assert len(document["servers"]) == 5 and all(server["exit_status"] == 0 for server in document["servers"])
    for server in document["servers"]:
        assert server["memory_before"]["rss_mib"] > 0 and server["memory_after"]["peak_rss_mib"] > 0
    assert batched["v2_http_batch256"] == pytest.approx(256)
    # The verdicts written are the ones the written figures give (the thresholds are tested in
    # test_serve_rounds.py).
    assert document["targets"] == targets_over_rounds(document["rounds"], document["machine"]["usable_cores"], 2)
    targets = {target["id"]: target for target in document["targets"]}
    assert "scaling_workers2" in targets
    assert "v2_batch256_vs_naive" in targets
    assert all(target["value"] is not None and "met" in target for target in targets.values())
    on = next(row for row in document["rounds"][0] if row["id"] == "single_c64")
    p99 = targets["single_c64_p99"]
    assert p99["rounds"][0] == on["latency_ms"]["p99_ms"]


def test_serve_benchmark_refuses_a_missing_model_file_with_a_clear_error(tmp_path, mnist_root):
    done = run_module(["bench.serve", "--quick", "--model-file", str(tmp_path / "missing.onnx")], mnist_root, timeout=60)
    assert done.returncode == 2
    assert "model file not found" in done.stderr


def test_inference_benchmark_refuses_a_model_that_is_not_a_digit_classifier(mnist_root):
    done = run_module(["bench.inference", "--quick", "--models", "edge"], mnist_root, timeout=60)
    assert done.returncode == 2
    assert "edge" in done.stderr and "not digit classifiers" in done.stderr


def test_real_inputs_quick_against_head_reports_every_kind_for_both_pipelines(tmp_path, mnist_root):
    model_file = mnist_centroid_classifier(tmp_path / "centroid.onnx", mnist_root)
    output = tmp_path / "real_inputs.json"
    done = run_module(["bench.real_inputs", str(model_file), "--quick", "--against", "HEAD", "--output", str(output)],
                      mnist_root)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(output.read_text())
    assert document["benchmark"] == "real_inputs" and document["schema_version"] == 1
    check_machine(document["machine"])
    config = document["config"]
    assert len(document["pipelines"]) == 2
    for pipeline in document["pipelines"]:
        rows = {row["kind_id"]: row for row in document["rows"] if row["pipeline"] == pipeline}
        assert {kind.id for kind in ALL_KINDS} <= set(rows)
        for kind in ALL_KINDS:
            row = rows[kind.id]
            if kind.has_digit:
                assert row["images"] == config["digits_per_kind"]
                assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["refused"] <= 1.0
            else:
                assert row["images"] == config["non_digits_per_kind"]
                assert 0.0 <= row["flagged"] <= 1.0 and 0.0 <= row["confident_digit"] <= 1.0
        # The totals are the kinds' pictures pooled.
        digit_kinds = [rows[kind.id] for kind in ALL_KINDS if kind.has_digit]
        total = rows["(all digit kinds)"]
        assert total["images"] == sum(row["images"] for row in digit_kinds)
        assert total["accuracy"] == pytest.approx(
            sum(row["accuracy"] * row["images"] for row in digit_kinds) / total["images"])
        assert 0.0 <= document["summary"][pipeline]["auroc_top_probability"] <= 1.0
    clean = document["clean_mnist"]
    assert clean["images"] == 10000 and 0.5 < clean["accuracy"] <= 1.0 and 0.0 <= clean["ece_15_bins"] <= 1.0
    assert "A/B:" in done.stdout and "clean MNIST test" in done.stdout


def test_real_inputs_benchmark_refuses_a_missing_model_file_or_an_unknown_kind_with_a_clear_error(tmp_path,
                                                                                                   mnist_root):
    done = run_module(["bench.real_inputs", str(tmp_path / "missing.onnx"), "--quick"], mnist_root, timeout=60)
    assert done.returncode == 2
    assert "model file not found" in done.stderr
    done = run_module(["bench.real_inputs", str(tmp_path / "missing.onnx"), "--quick", "--kinds", "photo,selfie"],
                      mnist_root, timeout=60)
    assert done.returncode == 2
    assert "unknown kinds selfie" in done.stderr and "photo-pen" in done.stderr
