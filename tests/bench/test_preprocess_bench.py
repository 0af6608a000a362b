"""The preprocessing benchmark's quick mode, as CI runs it: every kind and stage timed, an A/B against a
revision loaded beside this tree, and the targets judged from the written figures. Not a speed test."""
from __future__ import annotations

import json

from test_bench_quick import check_machine, run_module

from bench.preprocess import TOTAL, evaluate_targets
from harness.sample_images import KINDS


def test_preprocess_quick_against_head_writes_every_kind_stage_and_comparison(tmp_path, mnist_root):
    output = tmp_path / "preprocess.json"
    done = run_module(["bench.preprocess", "--quick", "--against", "HEAD", "--output", str(output)], mnist_root)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(output.read_text())
    assert document["benchmark"] == "preprocess" and document["schema_version"] == 1
    check_machine(document["machine"])
    current = [row for row in document["rows"] if row["pipeline"] == "this tree"]
    for kind in KINDS:
        stages = [row["stage"] for row in current if row["kind"] == kind.name]
        assert stages[0] == "decode" and TOTAL in stages, (kind.name, stages)
    assert all(row["median_cpu_ms"] > 0 and row["samples"] >= 2 for row in document["rows"])
    assert {(c["kind"], c["stage"]) for c in document["comparison"]} == {
        (kind.name, stage) for kind in KINDS for stage in ("decode", TOTAL)}
    assert all(c["before_ms"] > 0 and c["after_ms"] > 0 for c in document["comparison"])
    assert document["targets"] == evaluate_targets(document["rows"], "this tree")
    assert "targets:" in done.stdout and "A/B in the same rounds" in done.stdout


def test_preprocess_benchmark_refuses_an_unknown_revision(mnist_root):
    done = run_module(["bench.preprocess", "--quick", "--against", "no-such-revision"], mnist_root, timeout=60)
    assert done.returncode == 2
    assert "give --against a revision" in done.stderr
