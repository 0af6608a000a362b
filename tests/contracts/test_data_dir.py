"""The one definition of the data folder: an explicit folder, else $ZOO_DATA_DIR, else ./data."""
from __future__ import annotations

from pathlib import Path

from contracts.data_dir import DATA_DIR_ENV, resolve_data_dir


def test_an_explicit_folder_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert resolve_data_dir(tmp_path / "given") == tmp_path / "given"
    assert resolve_data_dir(str(tmp_path / "given")) == tmp_path / "given"


def test_the_environment_wins_over_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert resolve_data_dir() == tmp_path / "from-env"
    assert resolve_data_dir("") == tmp_path / "from-env"  # an empty --data-dir is no folder


def test_without_either_it_is_data_in_the_working_directory(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert resolve_data_dir() == Path("data")
    monkeypatch.setenv(DATA_DIR_ENV, "")  # `ZOO_DATA_DIR= cmd` means unset, not the working directory
    assert resolve_data_dir() == Path("data")


def test_a_home_relative_folder_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir("~/datasets") == tmp_path / "datasets"
