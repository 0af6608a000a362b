"""Start-up: execution providers, model files that cannot be served, and the command line's exit codes."""
from __future__ import annotations

import asyncio
import logging
import re
import shutil
import socket
import subprocess
import sys

import pytest
from onnx_models import random_linear_classifier
from serve_testing import REPO_ROOT

from contracts.model_card import ModelCard
from contracts.model_file import ModelLoadError, load_model
from contracts.sessions import (
    CPU,
    CUDA,
    DeviceUnavailable,
    RuntimeOptions,
    create_session,
    fallback_reason,
)
from serve import __main__ as serve_main
from serve.core.batching import BatchingOptions
from serve.core.lifecycle import ModelManager
from serve.core.model_sources import ModelFiles


@pytest.fixture(scope="module")
def cuda_runs(model_dir) -> bool:
    """Whether CUDA really runs a model here (decides what `--device cuda` must do)."""
    return create_session(model_dir / "centroid.onnx", RuntimeOptions(device="auto"), "probe").provider == CUDA


# Providers


def test_device_cpu_runs_on_the_cpu_provider_only(model_dir):
    info = create_session(model_dir / "centroid.onnx", RuntimeOptions(device="cpu"), "centroid")
    assert info.provider == CPU and info.session.get_providers() == [CPU] and info.provider_note == ""


def test_device_auto_says_why_it_fell_back(model_dir, cuda_runs):
    info = create_session(model_dir / "centroid.onnx", RuntimeOptions(device="auto"), "centroid")
    if cuda_runs:
        assert info.provider == CUDA and info.provider_note == ""
    else:
        assert info.provider == CPU
        assert info.provider_note.startswith("CUDA requested but unavailable: ")
        assert len(info.provider_note) > len("CUDA requested but unavailable: ") + 10


def test_device_cuda_fails_clearly_when_cuda_cannot_run(model_dir, cuda_runs):
    if cuda_runs:
        info = create_session(model_dir / "centroid.onnx", RuntimeOptions(device="cuda"), "centroid")
        assert info.provider == CUDA
        return
    with pytest.raises(DeviceUnavailable, match=r"--device cuda, but ONNX Runtime runs it on CPUExecutionProvider"):
        create_session(model_dir / "centroid.onnx", RuntimeOptions(device="cuda"), "centroid")


def test_the_provider_is_logged_in_one_line_per_model(model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="contracts.sessions"):
        load_model(model_dir / "centroid.onnx", RuntimeOptions(device="cpu"))
    lines = [r.getMessage() for r in caplog.records if r.name == "contracts.sessions"]
    assert lines == ["model centroid: running on CPUExecutionProvider"]


def test_fallback_reason_condenses_onnx_runtimes_log():
    log = (
        "\x1b[1;31m2026-01-01 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] ... FAIL : Failed to load "
        "library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: "
        "No such file or directory\n\x1b[m\n\x1b[0;93m2026-01-01 [W:onnxruntime:Default, x.cc:1] Failed to create "
        "CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*\x1b[m\n"
    )
    assert fallback_reason(log).startswith("libcublasLt.so.13: cannot open shared object file: No such file or directory")
    assert "ONNX Runtime gave no reason" in fallback_reason("")


def test_runtime_options_are_checked():
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        RuntimeOptions(device="tpu")


# Model files


def test_missing_truncated_and_non_onnx_files_are_refused(model_dir, tmp_path):
    cpu = RuntimeOptions(device="cpu")
    with pytest.raises(ModelLoadError, match=r"model file not found: .*nope\.onnx"):
        ModelFiles.load([tmp_path / "nope.onnx"], cpu)
    truncated = tmp_path / "truncated.onnx"
    data = (model_dir / "centroid.onnx").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"truncated\.onnx is not a loadable ONNX model"):
        ModelFiles.load([truncated], cpu)
    text = tmp_path / "notes.onnx"
    text.write_text("these are not the weights you are looking for")
    with pytest.raises(ModelLoadError, match=r"notes\.onnx is not a loadable ONNX model"):
        ModelFiles.load([text], cpu)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"empty\.onnx is empty"):
        ModelFiles.load([empty], cpu)
    folder = tmp_path / "no-models"
    folder.mkdir()
    with pytest.raises(ModelLoadError, match="holds no .onnx files"):
        ModelFiles.load([folder], cpu)


def test_two_models_with_one_name_are_refused(model_dir, tmp_path):
    copy = tmp_path / "copy.onnx"
    shutil.copy(model_dir / "centroid.onnx", copy)
    with pytest.raises(ModelLoadError, match="two models are named 'centroid'"):
        ModelFiles.load([model_dir / "centroid.onnx", copy], RuntimeOptions(device="cpu"))


def test_a_card_that_disagrees_with_the_graph_is_refused(tmp_path):
    import onnx

    path = random_linear_classifier(tmp_path / "liar.onnx", name="liar")
    model = onnx.load(path)
    card = ModelCard.from_metadata_props({p.key: p.value for p in model.metadata_props})
    card.input_name = "image"
    del model.metadata_props[:]
    for key, value in card.to_metadata_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    with pytest.raises(ModelLoadError, match=r"its card names the input 'image' but the graph's inputs are \['pixels'\]"):
        load_model(path, RuntimeOptions(device="cpu"))


# The command line


def _run_main(argv, capsys) -> tuple[int, str]:
    code = serve_main.main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "truncated", "not onnx"])
def test_start_up_failures_exit_2_with_one_clear_line(kind, model_dir, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    if kind == "truncated":
        path.write_bytes((model_dir / "centroid.onnx").read_bytes()[:300])
    elif kind == "not onnx":
        path.write_text("{'weights': 'in a text file'}")
    code, err = _run_main(["--model", str(path), "--port", "0", "--http-port", "0", "--device", "cpu"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("python -m serve: error:")]
    assert len(lines) == 1 and str(path) in lines[0], err
    assert "Traceback" not in err


@pytest.fixture
def taken_port():
    """A port something else listens on, as another server would."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_exits_2_naming_the_flag_and_the_likely_cause(model_dir, taken_port, workers, capsys):
    model = ["--model", str(model_dir / "centroid.onnx"), "--device", "cpu", "--workers", workers]
    code, err = _run_main([*model, "--port", str(taken_port), "--http-port", "0"], capsys)
    assert code == 2 and f"cannot listen on 127.0.0.1:{taken_port}" in err
    assert "--port " in err and "another `python -m serve`" in err
    code, err = _run_main([*model, "--port", "0", "--http-port", str(taken_port)], capsys)
    assert code == 2 and f"127.0.0.1:{taken_port}" in err
    assert "--http-port" in err and "another `python -m serve`" in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_model_files_are_checked_before_the_ports_are_bound(taken_port, tmp_path, workers, capsys):
    ports = ["--port", str(taken_port), "--http-port", str(taken_port), "--device", "cpu", "--workers", workers]
    code, err = _run_main(["--model", str(tmp_path / "model" / "lenet.onnx"), *ports], capsys)
    assert code == 2 and f"model file not found: {tmp_path / 'model' / 'lenet.onnx'}" in err
    assert "cannot listen" not in err
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"PK\x03\x04" + bytes(60))  # torch.save writes a zip archive
    code, err = _run_main(["--model", str(checkpoint), *ports], capsys)
    assert code == 2 and f"{checkpoint} is a PyTorch checkpoint" in err and "python -m export" in err
    assert "cannot listen" not in err
    code, err = _run_main(["--model-repository", str(tmp_path / "no-repo"), *ports], capsys)
    assert code == 2 and "no-repo" in err and "cannot listen" not in err


def test_help_describes_both_front_doors():
    description = serve_main.build_parser().description
    assert "gRPC" in description and "HTTP" in description and "--http-port" in description


def test_bad_flags_exit_2_with_usage(model_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve_main.main(["--model", str(model_dir / "centroid.onnx"), "--max-batch-size", "0"])
    assert exit_info.value.code == 2 and "max_batch_size must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        serve_main.main(["--model", str(model_dir / "centroid.onnx"), "--instances", "0"])
    assert exit_info.value.code == 2 and "instances must be >= 1, got 0" in capsys.readouterr().err


def test_the_process_exits_2_on_a_corrupt_model_and_on_device_cuda_without_cuda(model_dir, tmp_path, cuda_runs):
    """The real process: exit status and stderr as an operator sees them."""
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07" + b"\xff" * 64)
    completed = subprocess.run(
        [sys.executable, "-m", "serve", "--model", str(corrupt), "--port", "0", "--http-port", "0"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert completed.returncode == 2
    assert f"python -m serve: error: model file {corrupt} is not a loadable ONNX model" in completed.stderr
    assert "Traceback" not in completed.stderr
    if cuda_runs:
        return
    completed = subprocess.run(
        [sys.executable, "-m", "serve", "--model", str(model_dir / "centroid.onnx"), "--port", "0", "--http-port", "0", "--device", "cuda"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert completed.returncode == 2
    errors = [line for line in completed.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--device cuda, but ONNX Runtime runs it on CPUExecutionProvider" in errors[0]
    assert "Traceback" not in completed.stderr
    # ORT's own multi-line CUDA load errors are captured, not dumped on the operator.
    assert "provider_bridge_ort.cc" not in completed.stderr


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve_main.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", serve_main.build_parser().format_usage())) - {"--help"}
    # Each option's entry in --help: its flags and metavars, then (after two spaces or a new line) its help.
    entries = {re.match(r"\s*(--?[\w-]+)", entry).group(1): entry for entry in re.split(r"\n(?=  -)", text) if entry.startswith("  -")}
    assert len(flags) > 20 and flags <= set(entries)
    undocumented = [flag for flag in flags if not re.search(r"(  |\n)\s*\S", entries[flag].strip())]
    assert not undocumented, f"flags without help text: {undocumented}"


def test_flags_fill_the_server_config(model_dir, tmp_path):
    args = serve_main.build_parser().parse_args(
        ["--model", str(model_dir), "--host", "0.0.0.0", "--port", "0", "--http-port", "0", "--device", "cpu", "--max-batch-size", "64",
         "--max-delay-ms", "1.5", "--worker-threads", "3", "--max-message-mb", "2", "--max-images-per-request", "10",
         "--max-image-bytes", "1000", "--max-image-pixels", "5000", "--metrics-port", "0", "--grace-seconds", "3",
         "--token-file", str(tmp_path / "t"), "--intra-op-threads", "1", "--instances", "3", "--workers", "4",
         "--port-file", str(tmp_path / "port")]
    )
    config = serve_main.config_from_args(args)
    assert config.model_paths == (model_dir,) and config.host == "0.0.0.0" and config.port == 0
    assert config.runtime == RuntimeOptions(device="cpu", intra_op_threads=1, instances=3, workers=4)
    assert not config.share_ports, "only the workers a supervisor starts share their ports"
    assert (config.batching.max_batch_size, config.batching.max_delay_ms) == (64, 1.5)
    assert config.worker_threads == 3 and config.max_message_bytes == 2 * 1024 * 1024
    assert config.limits.max_images_per_request == 10
    assert (config.limits.image.max_image_bytes, config.limits.image.max_image_pixels) == (1000, 5000)
    assert config.metrics_port is None, "--metrics-port 0 turns the metrics endpoint off"
    assert config.grace_s == 3 and config.token_file == tmp_path / "t" and config.port_file == tmp_path / "port"
    no_batching = serve_main.config_from_args(serve_main.build_parser().parse_args(["--model", "m.onnx", "--no-batching"]))
    assert (no_batching.batching.max_batch_size, no_batching.batching.max_delay_ms) == (1, 0.0)
    assert no_batching.runtime.instances == 2, "two instances by default, as Triton runs ONNX Runtime on the CPU"


def test_the_default_model_is_declared_by_flag():
    parse = serve_main.build_parser().parse_args
    assert serve_main.config_from_args(parse(["--model", "m.onnx"])).default_model == ""
    assert serve_main.config_from_args(parse(["--model", "m.onnx", "--default-model", "lenet"])).default_model == "lenet"


def test_only_models_whose_outputs_follow_the_batch_are_batched(model_dir, tmp_path):
    from onnx_models import batch_mean_model

    cpu = RuntimeOptions(device="cpu")
    assert load_model(model_dir / "centroid.onnx", cpu).batchable
    assert load_model(model_dir / "thirdparty.onnx", cpu).batchable
    assert not load_model(model_dir / "adder.onnx", cpu).batchable  # two inputs
    assert not load_model(batch_mean_model(tmp_path / "mean.onnx"), cpu).batchable


def test_the_default_classifier_is_the_one_declared_else_the_first_that_is_no_variant(tmp_path):
    # A folder lists lenet.int8.onnx before lenet.onnx: the int8 file's card declares it a variant of
    # lenet, so lenet is the default, whatever the files are called; --default-model overrides it.
    random_linear_classifier(tmp_path / "a.int8.onnx", name="lenet.int8", variant_of="lenet")
    random_linear_classifier(tmp_path / "b.onnx", name="lenet")
    model_files = ModelFiles.load([tmp_path], RuntimeOptions(device="cpu"))
    assert [model.name for model in model_files] == ["lenet.int8", "lenet"]

    async def default_classifier(default_model: str) -> str:
        models = ModelManager(model_files, RuntimeOptions(device="cpu"), BatchingOptions(max_batch_size=8),
                              default_model=default_model)
        await models.start()
        try:
            with models.classifier("") as served:
                return served.model.name
        finally:
            await models.close()

    assert asyncio.run(default_classifier("")) == "lenet"
    assert asyncio.run(default_classifier("lenet.int8")) == "lenet.int8"
