"""`python -m bench.reliability` as a user runs it: flags it cannot run with stop it with exit 2 and a message."""
from __future__ import annotations

import pytest
from test_bench_quick import run_module


@pytest.mark.parametrize("flags, message", [
    (["--model", "{tmp}/nope.onnx"], "model file not found"),
    (["--soak-seconds", "0"], "must be positive"),
    (["--concurrency", "1", "--load-processes", "2"], "load processes"),
    (["--data-dir", "{tmp}"], "MNIST not found under {tmp}/MNIST/raw"),
])
def test_the_report_refuses_bad_flags_with_exit_2_and_a_message(tmp_path, mnist_root, flags, message):
    done = run_module(["bench.reliability", *(flag.format(tmp=tmp_path) for flag in flags)], mnist_root, timeout=120)
    assert done.returncode == 2 and message.format(tmp=tmp_path) in done.stderr, done.stderr[-2000:]
