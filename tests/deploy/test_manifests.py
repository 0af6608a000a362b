"""deploy/: every manifest rendered and validated offline, and the numbers in them consistent with the server."""
from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_manifests import (
    DEFAULT_TERMINATION_GRACE_S,
    KSERVE_MODEL_DIR,
    KSERVE_NAME_TEMPLATE,
    cpu_cores,
    documents,
    flag_values,
    memory_bytes,
    only,
    runnable_here,
    serving_containers,
)
from referencing import Registry, Resource

from serve.kserve import serve_arguments
from serve.server import LAME_DUCK_S

SCHEMAS = Path(__file__).with_name("schemas")
LATEST_KUBERNETES = ".".join(kubernetes_validate.latest_version().split(".")[:2])
# The oldest Kubernetes with the native gRPC probe generally available, and the newest schemas known.
KUBERNETES_VERSIONS = ("1.27", LATEST_KUBERNETES)
KSERVE_KINDS = {"ServingRuntime": "servingruntimes.serving.kserve.io/v1alpha1",
                "InferenceService": "inferenceservices.serving.kserve.io/v1beta1"}
# Server memory under load was 284-345 MiB per process (README, Performance): a worker gets 384 MiB at least.
MEMORY_PER_WORKER = 384 * 2**20
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}


def test_every_source_renders(rendered):
    assert set(rendered) == {
        "kubernetes/overlays/cpu", "kubernetes/overlays/cuda",
        "kserve/inferenceservice.yaml", "kserve/models-pvc.yaml", "kserve/servingruntime.yaml",
    }
    for source in ("kubernetes/overlays/cpu", "kubernetes/overlays/cuda"):
        kinds = sorted(doc["kind"] for doc in rendered[source])
        assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Service"], source


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_objects_match_the_api_schemas(rendered, version):
    checked = 0
    for source, doc in documents(rendered):
        if doc["kind"] in KSERVE_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{source}: {doc['kind']} {doc['metadata']['name']} is invalid for Kubernetes {version}: {exc}")
        checked += 1
    assert checked == 12  # 5 objects in each overlay, the claim and the copy pod


def _container_validator(version: str) -> jsonschema.Validator:
    """Kubernetes' own corev1.Container schema, which KServe's CRDs embed for their containers."""
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    reference = {"$ref": f"{definitions['$id']}#/$defs/io.k8s.api.core.v1.Container"}
    return jsonschema.Draft202012Validator(reference, registry=registry)


def _errors(validator: jsonschema.Validator, instance: dict) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path)) or '.'}: {error.message}" for error in validator.iter_errors(instance)]


def test_kserve_objects_match_kserves_crd_schemas(rendered):
    schemas = yaml.safe_load((SCHEMAS / "kserve-crds.yaml").read_text())
    containers = _container_validator(LATEST_KUBERNETES)
    checked = set()
    for source, doc in documents(rendered):
        if doc["kind"] not in KSERVE_KINDS:
            continue
        assert not _errors(jsonschema.Draft202012Validator(schemas[KSERVE_KINDS[doc["kind"]]]), doc), source
        if doc["kind"] == "ServingRuntime":
            for container in doc["spec"]["containers"]:
                assert not _errors(containers, container), source
        else:
            # A predictor's model is a corev1.Container with KServe's fields beside it (name defaulted).
            model = doc["spec"]["predictor"]["model"]
            container = {"name": "kserve-container", **{k: v for k, v in model.items() if k not in KSERVE_MODEL_FIELDS}}
            assert not _errors(containers, container), source
        checked.add(doc["kind"])
    assert checked == set(KSERVE_KINDS)


def test_the_kserve_schemas_catch_mistakes():
    schemas = yaml.safe_load((SCHEMAS / "kserve-crds.yaml").read_text())
    runtime = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "kserve" / "servingruntime.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schemas[KSERVE_KINDS["ServingRuntime"]])
    runtime["spec"]["protocolVersions"] = ["v2", "grpc"]
    runtime["spec"]["supportedModelFormat"] = runtime["spec"].pop("supportedModelFormats")  # a typo
    messages = " ".join(_errors(validator, runtime))
    assert "'grpc' is not one of" in messages and "supportedModelFormat" in messages
    broken = {"name": "c", "image": "x", "ports": [{"containerPort": "8080"}]}
    assert _errors(_container_validator(LATEST_KUBERNETES), broken)


def test_every_serving_container_parses_with_the_servers_flags(rendered, tmp_path):
    (tmp_path / "lenet.onnx").write_bytes(b"onnx")
    containers = serving_containers(rendered)
    assert {container.source for container in containers} == {
        "kubernetes/overlays/cpu", "kubernetes/overlays/cuda", "kserve/servingruntime.yaml"}
    from serve.__main__ import build_parser

    for serving in containers:
        assert serving.container["command"] == ["python", "-m", "serve.kserve"], serving.source
        args = [arg.replace(KSERVE_MODEL_DIR, str(tmp_path)).replace(KSERVE_NAME_TEMPLATE, "lenet")
                for arg in runnable_here(serving.container["args"])]
        serve_argv, layout, _ = serve_arguments(args)
        assert layout.flag == "--model"
        build_parser().parse_args(serve_argv)  # exits 2 on a flag the server does not know


def test_probes_use_the_ports_the_server_listens_on(rendered):
    for serving in serving_containers(rendered):
        flags = flag_values(serving.container["args"])
        grpc_port, http_port = int(flags["--grpc_port"]), int(flags["--http_port"])
        declared = {port["containerPort"] for port in serving.container["ports"]}
        assert {grpc_port, http_port} <= declared, serving.source
        probes = {name: serving.container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")
                  if name in serving.container}
        assert "grpc" in probes["readinessProbe"], f"{serving.source}: readiness must ask grpc.health.v1"
        assert any("httpGet" in probe for probe in probes.values()), serving.source
        for name, probe in probes.items():
            if "grpc" in probe:
                assert serving.port(probe["grpc"]["port"]) == grpc_port, (serving.source, name)
            else:
                assert serving.port(probe["httpGet"]["port"]) == http_port, (serving.source, name)
                assert probe["httpGet"]["path"] in ("/v2/health/live", "/v2/health/ready"), (serving.source, name)


def test_cpu_matches_workers_and_onnx_runtime_threads(rendered):
    for serving in serving_containers(rendered):
        flags = flag_values(serving.container["args"])
        workers, instances = int(flags["--workers"]), int(flags["--instances"])
        threads = int(flags["--intra-op-threads"])
        assert threads >= 1, f"{serving.source}: automatic threads count the node's cores, not the limit"
        resources = serving.container["resources"]
        for bound in ("requests", "limits"):
            assert cpu_cores(resources[bound]["cpu"]) == workers * instances * threads, (serving.source, bound)
            assert memory_bytes(resources[bound]["memory"]) >= workers * MEMORY_PER_WORKER, (serving.source, bound)


def test_termination_grace_covers_the_servers_drain(rendered):
    for serving in serving_containers(rendered):
        grace_s = float(flag_values(serving.container["args"])["--grace-seconds"])
        pre_stop_s = 0.0
        pre_stop = serving.container.get("lifecycle", {}).get("preStop")
        if pre_stop is not None:
            command = pre_stop["exec"]["command"]
            assert command[:2] == ["python", "-c"] and command[2].startswith("import time; time.sleep(")
            pre_stop_s = float(command[2].removeprefix("import time; time.sleep(").removesuffix(")"))
        termination_s = serving.pod.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_S)
        assert pre_stop_s + LAME_DUCK_S + grace_s < termination_s, serving.source


@pytest.mark.parametrize("source", ["kubernetes/overlays/cpu", "kubernetes/overlays/cuda"])
def test_services_autoscaler_and_budget_select_the_servers(rendered, source):
    deployment = only(rendered, source, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    serving = next(c for c in serving_containers(rendered) if c.source == source)

    def selects_pods(selector: dict) -> bool:
        return bool(selector) and all(pod_labels.get(key) == value for key, value in selector.items())

    assert selects_pods(deployment["spec"]["selector"]["matchLabels"])
    services = {doc["metadata"]["name"]: doc for doc in rendered[source] if doc["kind"] == "Service"}
    grpc, http = services["digit-zoo-grpc"], services["digit-zoo-http"]
    assert grpc["spec"]["clusterIP"] == "None", "gRPC clients balance over the pods: a headless Service"
    flags = flag_values(serving.container["args"])
    for service, flag in ((grpc, "--grpc_port"), (http, "--http_port")):
        assert selects_pods(service["spec"]["selector"]), service["metadata"]["name"]
        assert [serving.port(port["targetPort"]) for port in service["spec"]["ports"]] == [int(flags[flag])]
    assert grpc["spec"]["ports"][0]["appProtocol"] == "kubernetes.io/h2c"

    autoscaler = only(rendered, source, "HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    budget = only(rendered, source, "PodDisruptionBudget")
    assert selects_pods(budget["spec"]["selector"]["matchLabels"])
    # A voluntary disruption never takes the last serving pod.
    assert autoscaler["spec"]["minReplicas"] - budget["spec"]["maxUnavailable"] >= 1


def test_the_cuda_overlay_asks_for_a_gpu_and_refuses_to_fall_back(rendered):
    serving = next(c for c in serving_containers(rendered) if c.source == "kubernetes/overlays/cuda")
    assert flag_values(serving.container["args"])["--device"] == "cuda"
    assert serving.container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert serving.container["image"].endswith("-cuda")


def test_the_serving_runtime_speaks_kserves_conventions(rendered):
    runtime = only(rendered, "kserve/servingruntime.yaml", "ServingRuntime")
    spec = runtime["spec"]
    assert [model["name"] for model in spec["supportedModelFormats"]] == ["onnx"]
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    container = spec["containers"][0]
    flags = flag_values(container["args"])
    assert flags["--model_name"] == KSERVE_NAME_TEMPLATE and flags["--model_dir"] == KSERVE_MODEL_DIR
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["h2c"] == int(flags["--grpc_port"]), "KServe sends gRPC to the port named h2c"
    assert ports["http1"] == int(flags["--http_port"])
    assert spec["annotations"]["prometheus.kserve.io/port"] == flags["--metrics-port"]
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"


def test_the_inference_service_uses_the_runtime(rendered):
    runtime = only(rendered, "kserve/servingruntime.yaml", "ServingRuntime")
    service = only(rendered, "kserve/inferenceservice.yaml", "InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    # KServe takes an InferenceService without protocolVersion for v1, which this runtime does not speak.
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    # Knative (KServe's Serverless mode) allows one port per container; the runtime declares two.
    assert len(runtime["spec"]["containers"][0]["ports"]) == 2
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    claim = only(rendered, "kserve/models-pvc.yaml", "PersistentVolumeClaim")
    assert model["storageUri"].startswith(f"pvc://{claim['metadata']['name']}/")


def test_the_image_is_the_manifests_entrypoint(rendered, dockerfile):
    assert dockerfile.exec_form("ENTRYPOINT") == ["python", "-m", "serve.kserve"]
    for serving in serving_containers(rendered):
        assert serving.container["command"] == dockerfile.exec_form("ENTRYPOINT"), serving.source
    user = dockerfile.last("USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, "non-root, by number, so runAsNonRoot can check it"
    for serving in serving_containers(rendered):
        uid = (serving.container.get("securityContext", {}).get("runAsUser")
               or serving.pod.get("securityContext", {}).get("runAsUser"))
        assert uid == int(user), serving.source
    assert json.loads(dockerfile.last("VOLUME")) == [KSERVE_MODEL_DIR]
    flags = flag_values(dockerfile.exec_form("CMD"))
    # The image's own ports: the launcher's defaults (gRPC 50051, HTTP 8000) and the metrics port.
    assert dockerfile.exposed_ports == {50051, 8000, int(flags["--metrics-port"])}
    assert "http://127.0.0.1:8000/v2/health/ready" in " ".join(dockerfile.healthcheck_command)


def test_the_build_context_holds_only_the_serving_package():
    ignore = (Path(__file__).parents[2] / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!contracts/", "!serve/"} <= set(patterns)
    assert not any(p.startswith("!") and p.strip("!/") in {"zoo", "export", "runs", "models", "data"} for p in patterns)
