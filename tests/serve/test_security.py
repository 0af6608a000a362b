"""TLS, mutual TLS and bearer tokens, with certificates made in the test; hostile payloads aimed at
the server's memory or at its error messages.

(A checkpoint crafted to run code when unpickled is refused without running it:
tests/zoo/test_checkpoint.py::test_crafted_pickle_does_not_execute.)"""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from certificates import issue, make_ca
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from contracts.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from contracts.generated.inference import grpc_service_pb2 as v2_pb
from contracts.generated.inference import grpc_service_pb2_grpc as v2_grpc
from contracts.sessions import RuntimeOptions
from harness import reliability_runs
from harness.processes import ServerProcess
from serve.api.auth import BearerTokens, TokenFileError, read_tokens
from serve.client import ClientError, DigitClient
from serve.core.answers import bounded_detail
from serve.server import BackgroundServer, ServerConfig, ServerStartError

TOKEN = "s3cret-token-0123456789"
DIGIT = np.zeros((28, 28), np.uint8)
DIGIT[4:24, 12:16] = 255


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "ca")
    rogue_ca = make_ca(folder, "rogue")
    return {
        "ca": ca,
        "server": issue(folder, ca, "server", server=True),
        "client": issue(folder, ca, "client", server=False),
        "rogue_client": issue(folder, rogue_ca, "rogue-client", server=False),
    }


def _config(model_dir, **fields) -> ServerConfig:
    return ServerConfig(model_paths=(model_dir / "centroid.onnx",), port=0, http_port=0, runtime=RuntimeOptions(device="cpu"), **fields)


def _classify(client: DigitClient) -> int:
    return client.classify_raw(DIGIT, timeout=10)[0].digit


def test_tls_serves_clients_that_trust_its_ca_only(model_dir, pki):
    config = _config(model_dir, tls_cert=pki["server"].cert_path, tls_key=pki["server"].key_path)
    with BackgroundServer(config) as server:
        target = f"localhost:{server.port}"
        with DigitClient(target, tls_ca=pki["ca"].cert_path) as client:
            assert 0 <= _classify(client) <= 9
        with DigitClient(target, timeout=5) as plaintext:
            with pytest.raises(ClientError) as failure:
                _classify(plaintext)
            assert failure.value.code == grpc.StatusCode.UNAVAILABLE
        with DigitClient(target, tls_ca=pki["rogue_client"].cert_path, timeout=5) as untrusting:
            with pytest.raises(ClientError) as failure:
                _classify(untrusting)
            assert failure.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(model_dir, pki):
    config = _config(
        model_dir, tls_cert=pki["server"].cert_path, tls_key=pki["server"].key_path, tls_client_ca=pki["ca"].cert_path
    )
    with BackgroundServer(config) as server:
        target = f"localhost:{server.port}"
        with DigitClient(
            target, tls_ca=pki["ca"].cert_path, tls_client_cert=pki["client"].cert_path, tls_client_key=pki["client"].key_path
        ) as client:
            assert 0 <= _classify(client) <= 9
        with DigitClient(target, tls_ca=pki["ca"].cert_path, timeout=5) as anonymous:
            with pytest.raises(ClientError) as failure:
                _classify(anonymous)
            assert failure.value.code == grpc.StatusCode.UNAVAILABLE
        with DigitClient(
            target, tls_ca=pki["ca"].cert_path, tls_client_cert=pki["rogue_client"].cert_path,
            tls_client_key=pki["rogue_client"].key_path, timeout=5,
        ) as impostor:
            with pytest.raises(ClientError) as failure:
                _classify(impostor)
            assert failure.value.code == grpc.StatusCode.UNAVAILABLE


def test_bearer_token_is_required_except_for_health_checks(model_dir, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# rotated monthly\n{TOKEN}\nsecond-token\n")
    with BackgroundServer(_config(model_dir, token_file=token_file)) as server:
        with DigitClient(server.target, token=TOKEN) as client:
            assert 0 <= _classify(client) <= 9
        with DigitClient(server.target, token="second-token") as client:
            assert 0 <= _classify(client) <= 9
        for token, detail in ((None, "missing credentials"), ("wrong", "invalid bearer token")):
            with DigitClient(server.target, token=token) as client:
                with pytest.raises(ClientError) as failure:
                    _classify(client)
                assert failure.value.code == grpc.StatusCode.UNAUTHENTICATED
                assert detail in str(failure.value)
        with grpc.insecure_channel(server.target) as channel:
            stub = digits_pb2_grpc.DigitClassifierStub(channel)
            with pytest.raises(grpc.RpcError) as failure:
                stub.ListModels(digits_pb2.ListModelsRequest(), metadata=(("authorization", f"Basic {TOKEN}"),), timeout=10)
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED and "malformed" in failure.value.details()
            # Streams are refused the same way.
            request = digits_pb2.ClassifyStreamRequest(image=digits_pb2.Image(encoded=b"x"))
            with pytest.raises(grpc.RpcError) as failure:
                list(stub.ClassifyStream(iter([request]), timeout=10))
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as failure:
                list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        registry = server.server.metrics.registry
        denied = registry.get_sample_value(
            "serve_requests_total", {"protocol": "grpc", "service": "digits.v1.DigitClassifier", "method": "Classify", "code": "UNAUTHENTICATED"}
        )
        assert denied == 2


def test_token_files_are_checked(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    with pytest.raises(TokenFileError, match="holds no token"):
        read_tokens(empty)
    with pytest.raises(TokenFileError, match="cannot read the token file"):
        read_tokens(tmp_path / "missing")
    spaced = tmp_path / "spaced"
    spaced.write_text("two words\n")
    with pytest.raises(TokenFileError, match="spaces"):
        read_tokens(spaced)
    with pytest.raises(ValueError):
        BearerTokens([])


def test_bad_tls_files_stop_the_start_with_a_clear_error(model_dir, pki, tmp_path):
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("hello")
    config = _config(model_dir, tls_cert=pki["server"].cert_path, tls_key=not_a_key)
    with pytest.raises(ServerStartError, match="does not hold a PEM private key"):
        BackgroundServer(config).start()
    config = _config(model_dir, tls_cert=tmp_path / "missing.crt", tls_key=pki["server"].key_path)
    with pytest.raises(ServerStartError, match="cannot read the TLS certificate"):
        BackgroundServer(config).start()
    with pytest.raises(ValueError, match="both a certificate and its key"):
        _config(model_dir, tls_cert=pki["server"].cert_path)


def test_serving_without_tls_beyond_loopback_logs_a_warning(model_dir, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="serve.server"):
        with BackgroundServer(_config(model_dir, host="0.0.0.0")) as server:
            with DigitClient(server.target) as client:
                assert 0 <= _classify(client) <= 9
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("serving without TLS on 0.0.0.0" in message for message in warnings)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="serve.server"):
        with BackgroundServer(_config(model_dir)):
            pass
    assert not [r for r in caplog.records if "without TLS" in r.getMessage()]


def test_mutual_tls_and_a_token_together_guard_both_apis(model_dir, pki, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    config = _config(model_dir, tls_cert=pki["server"].cert_path, tls_key=pki["server"].key_path,
                     tls_client_ca=pki["ca"].cert_path, token_file=token_file)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"].cert_path.read_bytes(), private_key=pki["client"].key_path.read_bytes(),
        certificate_chain=pki["client"].cert_path.read_bytes())
    pixels = (DIGIT.astype(np.float32) / 255)[None, None]
    tensor = v2_pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1, 1, 28, 28])
    request = v2_pb.ModelInferRequest(model_name="centroid", inputs=[tensor], raw_input_contents=[pixels.tobytes()])
    with BackgroundServer(config) as server, grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        v2 = v2_grpc.GRPCInferenceServiceStub(channel)
        response = v2.ModelInfer(request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
        assert np.frombuffer(response.raw_output_contents[1], "<f4").sum() == pytest.approx(1, abs=1e-5)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as failure:
                v2.ModelInfer(request, metadata=metadata, timeout=10)
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED  # a valid certificate is not enough
        with DigitClient(f"localhost:{server.port}", tls_ca=pki["ca"].cert_path, token=TOKEN, timeout=5) as no_cert:
            with pytest.raises(ClientError) as failure:
                _classify(no_cert)  # the right token without a client certificate
            assert failure.value.code == grpc.StatusCode.UNAVAILABLE


def test_bombs_and_oversized_messages_are_refused_before_they_cost_the_server_memory(model_dir, tmp_path):
    """A real server process, its peak RSS (VmHWM) reset just before: 4 of each decompression bomb
    (a real 12000x12000 PNG of zeros, 144 MB decoded; a TIFF tile of 64 MB of real zeros; a GIF
    frame Pillow would fill while opening; a valid WebP on an 8000x8000 canvas; PNG, JPEG, BMP,
    GIF and TIFF headers declaring up to 10^10 pixels) and 2 messages of 64 MiB against its 1 MiB
    limit."""
    with ServerProcess([model_dir / "centroid.onnx"], tmp_path, "attacked", reliability_runs.SERVER_LIMIT_FLAGS) as server:
        attack = reliability_runs.memory_attack(server, "centroid", bombs=4, oversized=2)
        for payload, codes in attack.codes.items():
            assert codes == {"RESOURCE_EXHAUSTED": sum(codes.values())}, (payload, codes)
        assert attack.peak_rise_mib <= reliability_runs.ATTACK_PEAK_ALLOWANCE_MIB, attack
        assert reliability_runs.health_status(server.target) == "SERVING"


def test_error_details_stay_bounded_whatever_the_caller_sends(channel):
    """Details quote names and shapes the caller sent; unbounded, a 64 KiB name would overflow the
    client's 8 KiB metadata limit and turn NOT_FOUND into RESOURCE_EXHAUSTED."""
    digits = digits_pb2_grpc.DigitClassifierStub(channel)
    v2 = v2_grpc.GRPCInferenceServiceStub(channel)
    image = digits_pb2.Image(raw=digits_pb2.RawPixels(pixels=DIGIT.tobytes(), height=28, width=28, already_mnist=True))
    huge_name = "m" * 65536
    calls = [
        (lambda: digits.Classify(digits_pb2.ClassifyRequest(model=huge_name, images=[image]), timeout=10), "NOT_FOUND"),
        (lambda: v2.ModelInfer(v2_pb.ModelInferRequest(model_name="é" * 30000), timeout=10), "NOT_FOUND"),
        (lambda: v2.ModelInfer(v2_pb.ModelInferRequest(model_name="centroid", inputs=[
            v2_pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1] * 100_000)]),
            timeout=10), "INVALID_ARGUMENT"),
    ]
    for call, code in calls:
        with pytest.raises(grpc.RpcError) as failure:
            call()
        assert failure.value.code() == grpc.StatusCode[code], failure.value.details()[:200]
        detail = failure.value.details()
        assert len(detail.encode()) <= 2000 and "bytes cut" in detail
    assert digits.Classify(digits_pb2.ClassifyRequest(images=[image]), timeout=10).predictions[0].digit in range(10)


def test_bounded_detail_keeps_both_ends_and_whole_characters():
    assert bounded_detail("short") == "short"
    detail = "unknown model '" + "😀" * 5000 + "'; this server has: centroid"
    bounded = bounded_detail(detail)
    assert len(bounded.encode("utf-8")) <= 1900
    assert bounded.startswith("unknown model '😀") and bounded.endswith("; this server has: centroid")
    assert "bytes cut" in bounded
