"""python -m serve.kserve: which layout KServe's /mnt/models holds, and how KServe's flags become ours."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve import kserve
from serve.kserve import LayoutError, detect_layout, serve_arguments


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"onnx")
    return path


def test_a_model_file_itself(tmp_path):
    model = _touch(tmp_path / "lenet.onnx")
    layout = detect_layout(model)
    assert (layout.flag, layout.path) == ("--model", model)


def test_a_folder_of_onnx_files_is_passed_as_the_folder(tmp_path):
    _touch(tmp_path / "digits.onnx")
    _touch(tmp_path / "lenet5-32.onnx")
    _touch(tmp_path / "README.txt")
    layout = detect_layout(tmp_path)
    assert (layout.flag, layout.path) == ("--model", tmp_path)
    assert "digits.onnx" in layout.description


def test_a_single_file_named_anything_is_passed_as_that_file(tmp_path):
    # KServe's storage initializer keeps the name the file had in the bucket, suffix or not.
    model = _touch(tmp_path / "model")
    layout = detect_layout(tmp_path)
    assert (layout.flag, layout.path) == ("--model", model)


def test_numbered_version_folders_make_a_repository(tmp_path):
    _touch(tmp_path / "lenet" / "1" / "model.onnx")
    _touch(tmp_path / "lenet" / "2" / "model.onnx")
    _touch(tmp_path / "lenet" / "config.pbtxt")
    _touch(tmp_path / "edge" / "3" / "model.onnx")
    layout = detect_layout(tmp_path)
    assert (layout.flag, layout.path) == ("--model-repository", tmp_path)
    assert "edge, lenet" in layout.description


def test_a_configmap_volume_is_read_through_its_visible_names(tmp_path):
    # What kubelet makes of a ConfigMap: the files in a hidden timestamped folder, reached by symlinks.
    _touch(tmp_path / "..2026_12_01_12_00_00.1" / "lenet.onnx")
    os.symlink("..2026_12_01_12_00_00.1", tmp_path / "..data")
    os.symlink("..data/lenet.onnx", tmp_path / "lenet.onnx")
    layout = detect_layout(tmp_path)
    assert (layout.flag, layout.path) == ("--model", tmp_path)


def test_a_subfolder_without_version_folders_is_not_a_repository(tmp_path):
    _touch(tmp_path / "lenet" / "model.onnx")
    _touch(tmp_path / "other" / "model.onnx")
    with pytest.raises(LayoutError, match="found lenet/, other/"):
        detect_layout(tmp_path)


@pytest.mark.parametrize(
    "files, message",
    [
        ([], "found nothing"),
        (["a.bin", "b.bin"], "found a.bin, b.bin"),
        (["lenet/1/model.onnx", "extra.onnx"], "mixes a model repository"),
    ],
)
def test_nothing_servable_is_named(tmp_path, files, message):
    for name in files:
        _touch(tmp_path / name)
    with pytest.raises(LayoutError, match=message):
        detect_layout(tmp_path)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        detect_layout(tmp_path / "absent")


def test_kserve_flags_map_onto_ours_and_the_rest_pass_through(tmp_path):
    _touch(tmp_path / "lenet.onnx")
    argv = ["--model_name=lenet", f"--model_dir={tmp_path}", "--http_port=8080", "--grpc_port=8081",
            "--workers", "2", "--metrics-port=8002"]
    serve_argv, layout, model_name = serve_arguments(argv)
    assert serve_argv == ["--model", str(tmp_path), "--host", "0.0.0.0", "--port", "8081", "--http-port", "8080",
                          "--workers", "2", "--metrics-port=8002"]
    assert model_name == "lenet" and layout.flag == "--model"


def test_a_repository_maps_to_the_repository_flag(tmp_path):
    _touch(tmp_path / "lenet" / "1" / "model.onnx")
    serve_argv, _, _ = serve_arguments([f"--model_dir={tmp_path}"])
    assert serve_argv[:2] == ["--model-repository", str(tmp_path)]
    assert serve_argv[serve_argv.index("--port") + 1] == "50051"  # our defaults, not KServe's
    assert serve_argv[serve_argv.index("--http-port") + 1] == "8000"


@pytest.mark.parametrize("flag", ["--port=9000", "--model", "--http-port"])
def test_our_spelling_of_a_mapped_flag_is_refused(tmp_path, flag, capsys):
    _touch(tmp_path / "lenet.onnx")
    with pytest.raises(SystemExit) as caught:
        serve_arguments([f"--model_dir={tmp_path}", flag, "1"])
    assert caught.value.code == 2
    assert "pass --" in capsys.readouterr().err


def test_nothing_to_serve_exits_2_with_one_line(tmp_path, capsys):
    assert kserve.main([f"--model_dir={tmp_path}"]) == kserve.EXIT_START_FAILED
    error = capsys.readouterr().err
    assert error.startswith("python -m serve.kserve: error:") and str(tmp_path) in error
    assert "Traceback" not in error
