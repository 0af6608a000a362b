"""TLS, mutual TLS and bearer tokens, with certificates made in the test."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from certificates import issue, make_ca
from serve.auth import BearerTokenInterceptor, TokenFileError, read_tokens
from serve.client import ClientError, DigitClient
from serve.generated.digits.v1 import digits_pb2, digits_pb2_grpc
from serve.runtime import RuntimeOptions
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
    return ServerConfig(model_paths=(model_dir / "centroid.onnx",), port=0, runtime=RuntimeOptions(device="cpu"), **fields)


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
            "serve_requests_total", {"service": "digits.v1.DigitClassifier", "method": "Classify", "code": "UNAUTHENTICATED"}
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
        BearerTokenInterceptor([])


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
