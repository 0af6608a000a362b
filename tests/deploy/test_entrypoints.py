"""The containers' exact entrypoints and arguments, run here on /mnt/models-style folders, answer their probes.

No container engine runs here, so each test runs the command a manifest (or the Dockerfile) gives
the container, with three substitutions a container would not need: the python of this checkout,
a temporary folder for /mnt/models, and free ports for the fixed ones. Then it asks every probe
the manifest declares, the way the kubelet would, and stops the server the way the kubelet does.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from deploy_manifests import (
    DEFAULT_TERMINATION_GRACE_S,
    KSERVE_MODEL_DIR,
    KSERVE_NAME_TEMPLATE,
    REPO_ROOT,
    ServingContainer,
    is_port_flag,
    only,
    runnable_here,
    serving_containers,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serve_testing import free_port

from serve.kserve import build_parser as launcher_parser

START_TIMEOUT_S = 90
PROBE_TIMEOUT_S = 3
NAME = "lenet"  # the InferenceService's name, and the name in the test model's card


@dataclass
class RunningContainer:
    process: subprocess.Popen
    ports: dict[int, int]  # the manifest's port -> the port it listens on here
    log: Path

    def url(self, port: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _localise(argv: list[str], model_dir: Path) -> tuple[list[str], dict[int, int]]:
    """The command with this checkout's python, `model_dir` for /mnt/models and free ports."""
    ports: dict[int, int] = {}
    local = [sys.executable if argv[0] == "python" else argv[0]]
    for token in argv[1:]:
        token = token.replace(KSERVE_MODEL_DIR, str(model_dir)).replace(KSERVE_NAME_TEMPLATE, NAME)
        flag, _, value = token.partition("=")
        if token.startswith("--") and is_port_flag(flag):
            assert value, f"{flag}: the manifests write ports as --flag=PORT"
            port = int(value)
            ports.setdefault(port, free_port())
            token = f"{flag}={ports[port]}"
        local.append(token)
    return local, ports


def _start(argv: list[str], model_dir: Path, log: Path) -> RunningContainer:
    local, ports = _localise(runnable_here(argv), model_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log.open("w") as sink:
        process = subprocess.Popen(local, cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return RunningContainer(process, ports, log)


def _probe_passes(probe: dict, serving: ServingContainer, running: RunningContainer) -> bool:
    """One probe as the kubelet runs it: gRPC health SERVING, or an HTTP status from 200 to 399."""
    timeout = probe.get("timeoutSeconds", 1) + PROBE_TIMEOUT_S  # the test machine's cores are shared
    if "grpc" in probe:
        port = running.ports[serving.port(probe["grpc"]["port"])]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
            except grpc.RpcError:
                return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING
    http = probe["httpGet"]
    return _http_status(running.url(serving.port(http["port"]), http["path"]), timeout) in range(200, 400)


def _http_status(url: str, timeout: float = PROBE_TIMEOUT_S) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _wait_until_started(serving: ServingContainer, running: RunningContainer) -> None:
    first = serving.container.get("startupProbe") or serving.container["readinessProbe"]
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _probe_passes(first, serving, running):
        if running.process.poll() is not None:
            pytest.fail(f"{serving.source}: the server exited with {running.process.returncode}:\n{running.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{serving.source}: not started within {START_TIMEOUT_S} s:\n{running.output()}")
        time.sleep(0.2)


def _stop_like_the_kubelet(serving: ServingContainer, running: RunningContainer) -> None:
    """SIGTERM: readiness must fail at once (endpoints drop the pod), and the server exit 0 in time."""
    termination_s = serving.pod.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_S)
    running.process.send_signal(signal.SIGTERM)
    readiness = serving.container["readinessProbe"]
    deadline = time.monotonic() + 2.0
    while _probe_passes(readiness, serving, running):
        assert time.monotonic() < deadline, f"{serving.source}: still ready 2 s after SIGTERM"
        time.sleep(0.05)
    try:
        code = running.process.wait(timeout=termination_s)
    except subprocess.TimeoutExpired:
        running.process.kill()
        pytest.fail(f"{serving.source}: still running {termination_s} s after SIGTERM:\n{running.output()}")
    assert code == 0, running.output()


def _check_every_probe(serving: ServingContainer, running: RunningContainer) -> None:
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        if name in serving.container:
            assert _probe_passes(serving.container[name], serving, running), f"{serving.source}: {name} fails"


def _served_by_name(running: RunningContainer, http_port: int) -> None:
    """The model answers under the InferenceService's name, over KServe v2 REST."""
    assert _http_status(running.url(http_port, f"/v2/models/{NAME}/ready")) == 200


def _configmap_volume(folder: Path, model: Path) -> Path:
    """What the kubelet makes of a ConfigMap holding lenet.onnx: a hidden folder behind symlinks."""
    data = folder / "..2026_12_01_00_00_00.000000001"
    data.mkdir(parents=True)
    shutil.copy(model, data / "lenet.onnx")
    os.symlink(data.name, folder / "..data")
    os.symlink("..data/lenet.onnx", folder / "lenet.onnx")
    return folder


def _serving(rendered, source: str) -> ServingContainer:
    return next(serving for serving in serving_containers(rendered) if serving.source == source)


def test_the_deployment_serves_a_configmap_volume_and_drains(rendered, lenet_onnx, tmp_path):
    serving = _serving(rendered, "kubernetes/overlays/cpu")
    mounts = {mount["name"]: mount["mountPath"] for mount in serving.container["volumeMounts"]}
    assert mounts["models"] == KSERVE_MODEL_DIR
    models = _configmap_volume(tmp_path / "mnt-models", lenet_onnx)
    running = _start(serving.argv, models, tmp_path / "server.log")
    try:
        _wait_until_started(serving, running)
        _check_every_probe(serving, running)
        _served_by_name(running, serving.port("http"))
        metrics = _http_status(running.url(serving.port("metrics"), "/metrics"))
        assert metrics == 200, "the port the prometheus.io annotations name"
        _stop_like_the_kubelet(serving, running)
    finally:
        if running.process.poll() is None:
            running.process.kill()


@pytest.mark.parametrize("file_name", ["lenet.onnx", "model", f"{NAME}/1/model.onnx"])
def test_the_serving_runtime_serves_kserves_storage_layout(rendered, lenet_onnx, tmp_path, file_name):
    # KServe's storage initializer copies the storageUri under /mnt/models as it was: one file with the
    # name it had, or a whole model repository (NAME/VERSION/model.onnx).
    serving = _serving(rendered, "kserve/servingruntime.yaml")
    runtime = only(rendered, "kserve/servingruntime.yaml", "ServingRuntime")
    models = tmp_path / "mnt-models"
    (models / file_name).parent.mkdir(parents=True)
    shutil.copy(lenet_onnx, models / file_name)
    running = _start(serving.argv, models, tmp_path / "server.log")
    try:
        _wait_until_started(serving, running)
        _check_every_probe(serving, running)
        _served_by_name(running, serving.port("http1"))
        metrics_port = int(runtime["spec"]["annotations"]["prometheus.kserve.io/port"])
        assert _http_status(running.url(metrics_port, runtime["spec"]["annotations"]["prometheus.kserve.io/path"])) == 200
        _stop_like_the_kubelet(serving, running)
    finally:
        if running.process.poll() is None:
            running.process.kill()
    assert f"InferenceService {NAME}" in running.output()


def test_the_image_entrypoint_answers_its_healthcheck(dockerfile, lenet_onnx, tmp_path):
    models = tmp_path / "mnt-models"
    models.mkdir()
    shutil.copy(lenet_onnx, models / "lenet.onnx")
    # The image listens on the launcher's default ports; here they are spelled out to be moved.
    defaults = launcher_parser().parse_args([])
    argv = [*dockerfile.exec_form("ENTRYPOINT"), *dockerfile.exec_form("CMD"),
            f"--grpc_port={defaults.grpc_port}", f"--http_port={defaults.http_port}"]
    running = _start(argv, models, tmp_path / "server.log")
    healthcheck = [sys.executable if part == "python" else part for part in dockerfile.healthcheck_command]
    healthcheck = [part.replace(f"127.0.0.1:{defaults.http_port}", f"127.0.0.1:{running.ports[defaults.http_port]}")
                   for part in healthcheck]
    image_probe = ServingContainer("deploy/Dockerfile", {"readinessProbe": {"grpc": {"port": defaults.grpc_port}}})
    try:
        _wait_until_started(image_probe, running)
        assert subprocess.run(healthcheck, capture_output=True, timeout=30).returncode == 0, running.output()
        _stop_like_the_kubelet(image_probe, running)
    finally:
        if running.process.poll() is None:
            running.process.kill()
    assert subprocess.run(healthcheck, capture_output=True, timeout=30).returncode != 0
