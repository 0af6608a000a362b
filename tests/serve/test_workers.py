"""`python -m serve --workers N` as an operator runs it: real supervisor and worker processes under
load from separate load generators (harness.reliability_runs, the runs bench/reliability.py reports,
with small figures), the ports they share and refuse, and the metrics summed over the workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from onnx_models import tagged_classifier
from serve_testing import REPO_ROOT

from contracts.generated.inference import grpc_service_pb2 as v2_pb
from contracts.generated.inference import grpc_service_pb2_grpc as v2_grpc
from contracts.sessions import RuntimeOptions, cgroup_cpu_limit, usable_cpus
from harness import reliability_runs
from harness.processes import ServerProcess, health_status
from serve import __main__ as serve_main
from serve.workers import default_workers

WORKERS = 2


@pytest.fixture
def config(model_dir, mnist_root, tmp_path):
    """Quick figures: 16 calls in flight from one load generator, against the test classifier."""
    return reliability_runs.ReliabilityConfig.quick_mode(
        model_path=model_dir / "centroid.onnx", data_dir=mnist_root, workdir=tmp_path, concurrency=16,
        load_processes=1, sigterm_load_s=3.0, failover_load_s=6.0, workers=WORKERS,
    )


def describe(report) -> str:
    load = report.load
    return f"outcomes {load.outcomes}, statuses {load.codes_by_kind}, first failures {load.failures[:5]}"


def test_a_killed_worker_is_started_again_and_clients_that_retry_lose_no_call(config):
    report = reliability_runs.run_worker_kill(config)
    assert report.victim_cpu_s > 0, "the killed worker should have been serving the load"
    assert report.load.sent > 100
    assert report.load.failed == 0 and report.failed_by_code == {}, describe(report)
    assert report.load.outcomes["answered"] == report.load.sent, describe(report)
    assert report.restarts_counted == 1 and report.workers_ready_after == WORKERS
    assert report.health_after == "SERVING"
    assert report.died_logged and report.restart_logged
    assert report.exit_code == 0
    assert report.passed


def test_sigterm_with_workers_under_load_answers_every_call_in_flight_and_exits_0(config):
    report = reliability_runs.run_sigterm(config, workers=WORKERS)
    in_flight = sum(report.in_flight.values())
    assert in_flight >= 8, f"too few calls in flight at the signal to judge: {report.in_flight}"
    assert report.in_flight == {"OK": in_flight}, f"calls in flight at SIGTERM were not all answered: {report.in_flight}"
    assert report.wrong_or_lost == 0 and report.load.client_errors == 0, describe(report)
    assert set(report.after_signal) <= reliability_runs.AFTER_SIGNAL_STATUSES, (report.after_signal, describe(report))
    assert report.exit_code == 0 and report.exit_after_s <= config.grace_s
    assert report.code_after_exit == "UNAVAILABLE"
    assert report.server_tracebacks == 0
    assert report.passed


def test_a_model_that_cannot_load_in_the_workers_stops_start_up_with_one_clear_line(config):
    cases = {case.kind: case for case in reliability_runs.run_startup_failures(config.model_path, config.workdir, WORKERS)}
    assert set(cases) == {"missing", "truncated", "not ONNX"}
    for kind, case in cases.items():
        assert case.exit_code == 2 and len(case.error_lines) == 1 and not case.traceback, (kind, case)
    assert "model file not found" in cases["missing"].error_lines[0]
    for kind in ("truncated", "not ONNX"):
        assert "is not a loadable ONNX model (truncated, corrupt or not ONNX?)" in cases[kind].error_lines[0]


def _serve(model_path, port: int, workers: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serve", "--model", str(model_path), "--host", "127.0.0.1", "--port", str(port),
         "--http-port", "0", "--device", "cpu", "--workers", str(workers)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
    )


def test_the_workers_ports_are_theirs_alone(model_dir, tmp_path):
    """SO_REUSEPORT is shared between one server's workers only: neither a single server nor a
    second server of workers can start on their port."""
    model = model_dir / "centroid.onnx"
    with ServerProcess([model], tmp_path, workers=WORKERS) as server:
        for workers in (1, WORKERS):
            completed = _serve(model, server.port, workers)
            assert completed.returncode == 2, completed.stderr
            assert f"cannot listen on 127.0.0.1:{server.port}" in completed.stderr, completed.stderr
        assert health_status(server.target) == "SERVING"


def test_metrics_are_summed_over_the_workers(model_dir, tmp_path):
    calls_per_connection, connections = 5, 8
    with ServerProcess([model_dir / "centroid.onnx"], tmp_path, workers=WORKERS, metrics=True) as server:
        assert len(server.worker_pids()) == WORKERS
        pixels = np.zeros((1, 1, 28, 28), np.float32)
        request = v2_pb.ModelInferRequest(
            model_name="centroid", inputs=[v2_pb.ModelInferRequest.InferInputTensor(
                name="pixels", datatype="FP32", shape=list(pixels.shape))],
            raw_input_contents=[pixels.tobytes()],
        )
        for _ in range(connections):
            # Each channel its own connection, which the kernel hands to one worker or the other.
            with grpc.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = v2_grpc.GRPCInferenceServiceStub(channel)
                for _ in range(calls_per_connection):
                    stub.ModelInfer(request, timeout=10)
        answered = server.metric_total("serve_requests_total", method="ModelInfer", code="OK")
        assert answered == calls_per_connection * connections
        assert server.metric_total("serve_batch_size_sum") == calls_per_connection * connections
        assert server.metric_total("serve_workers_ready") == WORKERS
        assert server.metric_total("serve_worker_restarts_total") == 0
        # Triton's names too: each worker copies its statistics into the shared files every second.
        give_up = time.monotonic() + 10
        while server.metric_total("nv_inference_request_success") < answered and time.monotonic() < give_up:
            time.sleep(0.2)
        assert server.metric_total("nv_inference_request_success", model="centroid") == answered
        assert server.stop() == 0


def test_explicit_model_control_runs_one_worker_unless_told_otherwise():
    """A load or unload through the repository extension reaches one process: explicit mode and
    several workers would disagree about the models, so the flags refuse them together."""
    parser = serve_main.build_parser()
    assert serve_main.config_from_args(parser.parse_args(["--model", "m.onnx"])).runtime.workers == default_workers()
    explicit = ["--model-repository", "repo", "--model-control-mode", "explicit"]
    assert serve_main.config_from_args(parser.parse_args(explicit)).runtime.workers == 1
    with pytest.raises(ValueError, match="explicit needs --workers 1"):
        serve_main.config_from_args(parser.parse_args([*explicit, "--workers", "2"]))


def test_each_worker_sizes_its_sessions_to_its_share_of_the_cores():
    cores = usable_cpus()
    assert RuntimeOptions(instances=1, workers=1).threads_per_run() == 0, "ORT's default for a lone run"
    assert RuntimeOptions(instances=2, workers=1).threads_per_run() == max(1, cores // 2)
    assert RuntimeOptions(instances=2, workers=2).threads_per_run() == max(1, cores // 4)
    assert RuntimeOptions(instances=1, workers=2, intra_op_threads=3).threads_per_run() == 3
    with pytest.raises(ValueError, match="workers must be >= 1"):
        RuntimeOptions(workers=0)


def test_a_containers_cpu_limit_caps_the_cores_shared_out(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cgroup_cpu_limit(cpu_max) == 1.5
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def _versions_served(target: str, connections: int = 8) -> set[str]:
    """The versions of model `digits` that fresh connections (spread over the workers) report."""
    versions = set()
    for _ in range(connections):
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            metadata = v2_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                v2_pb.ModelMetadataRequest(name="digits"), timeout=10)
            versions.update(metadata.versions)
    return versions


def test_sighup_reaches_every_worker(tmp_path):
    repo = tmp_path / "repo"
    (repo / "digits" / "1").mkdir(parents=True)
    tagged_classifier(repo / "digits" / "1" / "model.onnx", 1, name="digits")
    with ServerProcess((), tmp_path, flags=("--model-repository", str(repo)), workers=WORKERS) as server:
        assert _versions_served(server.target) == {"1"}
        (repo / "digits" / "2").mkdir()
        tagged_classifier(repo / "digits" / "2" / "model.onnx", 2, name="digits")
        os.kill(server.pid, signal.SIGHUP)
        give_up = time.monotonic() + 60
        while _versions_served(server.target) != {"2"} and time.monotonic() < give_up:
            time.sleep(0.2)
        assert _versions_served(server.target) == {"2"}
        log = server.log_text()
        for index in range(WORKERS):
            assert f"worker {index} serve: SIGHUP: re-reading the model repository" in log, log
        assert server.stop() == 0
