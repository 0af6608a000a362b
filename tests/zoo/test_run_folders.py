"""`python -m zoo.train` and the output folder of an earlier run (zoo/run_folders.py)."""
from __future__ import annotations

import logging

from zoo.train import main


def test_a_second_run_keeps_the_previous_one_and_says_where(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "edge"
    assert main(["edge", "--out", str(out), "--no-plots"]) == 0
    first_checkpoint = (out / "checkpoint.pt").read_bytes()
    caplog.clear()
    assert main(["edge", "--out", str(out), "--no-plots", "--seed", "1"]) == 0
    (kept,) = [path for path in tmp_path.iterdir() if path != out]
    assert kept.name.startswith("edge.") and (kept / "checkpoint.pt").read_bytes() == first_checkpoint
    assert (out / "checkpoint.pt").is_file() and (out / "metrics.json").is_file()
    lines = [record.getMessage() for record in caplog.records if str(kept) in record.getMessage()]
    assert len(lines) == 1 and str(out) in lines[0]


def test_an_output_folder_without_a_run_is_written_into_not_moved(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["edge", "--out", str(tmp_path), "--no-plots"]) == 0
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "checkpoint.pt").is_file()
    assert [path.name for path in tmp_path.parent.iterdir() if path.name.startswith(f"{tmp_path.name}.")] == []
