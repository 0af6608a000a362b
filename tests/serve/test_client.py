"""The client class and `python -m serve.client` against a running server."""
from __future__ import annotations

import re
import time

import grpc
import numpy as np
import pytest
from PIL import Image
from serve_testing import free_port, offline_probabilities

from contracts.data_dir import DATA_DIR_ENV
from contracts.mnist_idx import mnist_raw_dir
from contracts.sessions import RuntimeOptions
from serve import client as client_cli
from serve.client import ClientError, DigitClient, Prediction
from serve.server import BackgroundServer, ServerConfig


@pytest.fixture(scope="module")
def digit_client(server):
    with DigitClient(server.target) as client:
        yield client


@pytest.fixture(scope="module")
def png_files(tmp_path_factory, mnist_test_set):
    images, _ = mnist_test_set
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for index in range(3):
        path = folder / f"digit{index}.png"
        Image.fromarray(255 - images[index]).convert("RGB").save(path)  # dark ink on white, in colour
        paths.append(path)
    return paths


def test_classify_takes_paths_bytes_and_arrays(digit_client, png_files, mnist_test_set, model_dir):
    images, _ = mnist_test_set
    expected = offline_probabilities(model_dir / "centroid.onnx", images[:3]).argmax(axis=1).tolist()
    from_paths = digit_client.classify(png_files, top_k=2)
    assert all(isinstance(p, Prediction) and len(p.top_k) == 2 and p.model == "centroid" for p in from_paths)
    from_bytes = digit_client.classify([path.read_bytes() for path in png_files])
    assert [p.digit for p in from_paths] == [p.digit for p in from_bytes]
    from_raw = digit_client.classify_raw(images[:3])
    assert [p.digit for p in from_raw] == expected
    assert [p.digit for p in digit_client.classify(list(images[:3]), already_mnist=True)] == expected


def test_stream_yields_predictions_and_errors_in_order(digit_client, mnist_test_set, model_dir):
    images, _ = mnist_test_set
    answers = list(digit_client.stream([images[0], b"garbage", images[1]], already_mnist=True))
    assert isinstance(answers[1], ClientError) and answers[1].code == grpc.StatusCode.INVALID_ARGUMENT
    expected = offline_probabilities(model_dir / "centroid.onnx", images[:2]).argmax(axis=1).tolist()
    assert [answers[0].digit, answers[2].digit] == expected


def test_listing_and_metadata(digit_client):
    assert {m.name for m in digit_client.list_models()} == {"centroid", "judged", "padded32", "thirdparty", "adder"}
    assert digit_client.model_metadata("padded32").input_size == [32, 32]


def test_errors_carry_the_status(digit_client, mnist_test_set):
    images, _ = mnist_test_set
    with pytest.raises(ClientError) as failure:
        digit_client.classify_raw(images[:1], model="nope")
    assert failure.value.code == grpc.StatusCode.NOT_FOUND and "unknown model 'nope'" in str(failure.value)
    with pytest.raises(ClientError, match="uint8 arrays"):
        digit_client.classify([np.zeros((28, 28), np.float32)])
    with pytest.raises(ClientError, match="cannot read the image file"):
        digit_client.classify(["/no/such/file.png"])


def test_cli_prints_a_table_of_predictions(server, png_files, capsys):
    code = client_cli.main([*map(str, png_files), "--server", server.target, "--top-k", "2"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split() == ["image", "answer", "verdict", "probability", "top-k"]
    assert len(out) == 4 and all(str(path) in line for path, line in zip(png_files, out[1:]))


@pytest.fixture(scope="module")
def blank_page(tmp_path_factory):
    path = tmp_path_factory.mktemp("blank") / "blank.png"
    Image.new("L", (120, 120), 255).save(path)  # white paper, no ink
    return path


def test_predictions_carry_the_verdict(digit_client, png_files, blank_page):
    *digits, blank = digit_client.classify([*png_files, blank_page], model="judged")
    assert (blank.verdict, blank.candidates, blank.answer) == ("no_digit", (), "—") and "no ink" in blank.reason
    for prediction in digits:
        assert prediction.verdict in ("digit", "unsure", "no_digit") and prediction.reason
        assert prediction.candidates[0] == prediction.digit
    # Nothing is sure enough for a min_confidence of 1: each inked image is unsure between its best two.
    for prediction in digit_client.classify(png_files, min_confidence=1.0):
        first, second = prediction.candidates
        assert (prediction.verdict, first) == ("unsure", prediction.digit)
        assert prediction.answer == f"{first} or {second}?"
    streamed = list(digit_client.stream([blank_page.read_bytes(), png_files[0].read_bytes()], min_confidence=1.0))
    assert [p.verdict for p in streamed] == ["no_digit", "unsure"]


def test_cli_table_shows_each_verdict(server, digit_client, png_files, blank_page, capsys):
    code = client_cli.main([str(png_files[0]), str(blank_page), "--server", server.target, "--min-confidence", "0"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    (digit,) = digit_client.classify([png_files[0]], min_confidence=0.0)
    assert out[1].split()[:4] == [str(png_files[0]), digit.label, "digit", f"{digit.probability:.3f}"]
    assert out[2].split()[:4] == [str(blank_page), "—", "no", "digit"] and "(no ink" in out[2]
    code = client_cli.main([str(png_files[0]), "--server", server.target, "--min-confidence", "1"])
    (unsure,) = digit_client.classify([png_files[0]], min_confidence=1.0)
    first, second = unsure.candidates
    assert capsys.readouterr().out.splitlines()[1].split()[1:5] == [str(first), "or", f"{second}?", "unsure"]


def test_cli_refuses_a_min_confidence_outside_zero_one(server, png_files, capsys):
    with pytest.raises(SystemExit) as exit_code:
        client_cli.main([str(png_files[0]), "--server", server.target, "--min-confidence", "1.5"])
    assert exit_code.value.code == client_cli.EXIT_USAGE
    assert "--min-confidence must be a probability between 0 and 1" in capsys.readouterr().err


def test_cli_reports_bad_answers_per_image_and_exits_1(server, png_files, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    code = client_cli.main([str(png_files[0]), str(broken), "--server", server.target])
    out = capsys.readouterr().out
    assert code == 1
    assert "broken.png  error: INVALID_ARGUMENT" in out and str(png_files[0]) in out


def test_cli_exit_codes_for_bad_files_unknown_models_and_unreachable_servers(server, png_files, capsys):
    assert client_cli.main(["/no/such.png", "--server", server.target]) == 2
    assert "cannot read the image file /no/such.png" in capsys.readouterr().err
    assert client_cli.main([str(png_files[0]), "--server", server.target, "--model", "nope"]) == 1
    assert "NOT_FOUND: unknown model 'nope'" in capsys.readouterr().out
    assert client_cli.main([str(png_files[0]), "--server", f"127.0.0.1:{free_port()}", "--connect-timeout", "0.5"]) == 3
    assert "cannot reach the server" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        client_cli.main(["--server", server.target])
    assert exit_info.value.code == 2


def test_cli_mnist_test_reports_the_offline_accuracy_and_latency(server, mnist_root, model_dir, mnist_test_set, capsys):
    images, labels = mnist_test_set
    code = client_cli.main(
        ["--mnist-test", "300", "--batch-size", "7", "--concurrency", "3", "--data-dir", str(mnist_root),
         "--server", server.target, "--model", "centroid"]
    )
    out = capsys.readouterr().out
    assert code == 0
    offline = offline_probabilities(model_dir / "centroid.onnx", images[:300]).argmax(axis=1)
    accuracy = float((offline == labels[:300]).mean())
    assert f"accuracy    {accuracy:.4f}" in out
    assert "latency ms  p50" in out and "p99" in out and "images/s" in out


def test_cli_mnist_test_reads_the_data_folder_from_the_environment_by_default(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert client_cli.main(["--mnist-test", "10", "--server", server.target]) == 2
    assert str(mnist_raw_dir(tmp_path)) in capsys.readouterr().err


def test_cli_lists_models(server, capsys):
    assert client_cli.main(["--list-models", "--server", server.target]) == 0
    out = capsys.readouterr().out
    assert "centroid" in out and "CPUExecutionProvider" in out and "thirdparty" in out


def test_cli_pointed_at_the_http_port_says_it_speaks_grpc_at_once(server, png_files, capsys):
    http_target = server.http_url.removeprefix("http://")
    began = time.monotonic()
    code = client_cli.main([str(png_files[0]), "--server", http_target, "--connect-timeout", "30"])
    err = capsys.readouterr().err
    assert code == client_cli.EXIT_UNREACHABLE
    assert f"{http_target} is an HTTP server" in err and f":{client_cli.DEFAULT_GRPC_PORT}" in err and "gRPC" in err
    assert time.monotonic() - began < 30, "the HTTP server was found by the probe, not by waiting out the timeout"


def test_cli_without_a_token_names_its_token_file_flag(model_dir, png_files, tmp_path, capsys):
    token_file = tmp_path / "tokens"
    token_file.write_text("s3cret-token-0123456789\n")
    config = ServerConfig(model_paths=(model_dir / "centroid.onnx",), port=0, http_port=None,
                          runtime=RuntimeOptions(device="cpu"), token_file=token_file)
    with BackgroundServer(config) as protected:
        assert client_cli.main([str(png_files[0]), "--server", protected.target]) == client_cli.EXIT_REFUSED
        assert "--token-file" in capsys.readouterr().out
        assert client_cli.main(["--list-models", "--server", protected.target]) == client_cli.EXIT_REFUSED
        assert "--token-file" in capsys.readouterr().err
        assert client_cli.main([str(png_files[0]), "--server", protected.target, "--token-file", str(token_file)]) == 0


def test_cli_mnist_test_without_the_data_names_the_flag_and_the_variable(server, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # another folder: no ./data/MNIST/raw here
    assert client_cli.main(["--mnist-test", "10", "--server", server.target]) == client_cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--data-dir" in err and DATA_DIR_ENV in err


def test_cli_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        client_cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    parser = client_cli.build_parser()
    for flag in ("--server", "--top-k", "--connect-timeout"):
        default = parser.get_default(flag.lstrip("-").replace("-", "_"))
        assert re.search(rf"{flag} \S+ .*?\(default: {re.escape(str(default))}\)", text), flag
