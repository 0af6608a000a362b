"""The preprocessing benchmark's quick mode, as CI runs it: every kind and stage timed, an A/B against a
revision loaded beside this tree, and the targets judged from the written figures. Not a speed test."""
from __future__ import annotations

import json

from test_bench_quick import check_machine, run_module

from harness.sample_images import KINDS
from harness.targets import OPERATORS

TOTAL = "total"


def test_preprocess_quick_against_head_writes_every_kind_stage_and_comparison(tmp_path, mnist_root):
    output = tmp_path / "preprocess.json"
    done = run_module(["bench.preprocess", "--quick", "--against", "HEAD", "--output", str(output)], mnist_root)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(output.read_text())
    assert document["benchmark"] == "preprocess" and document["schema_version"] == 1
    check_machine(document["machine"])
    current = [row for row in document["rows"] if row["pipeline"] == "this tree"]
    for kind in KINDS:
        stages = [row["stage"] for row in current if row["kind_id"] == kind.id]
        assert stages[0] == "decode" and TOTAL in stages, (kind.id, stages)
    assert all(row["median_cpu_ms"] > 0 and row["samples"] >= 2 for row in document["rows"])
    assert {(c["kind_id"], c["stage"]) for c in document["comparison"]} == {
        (kind.id, stage) for kind in KINDS for stage in ("decode", TOTAL)}
    assert all(c["before_ms"] > 0 and c["after_ms"] > 0 for c in document["comparison"])
    # The verdicts written are the ones the written figures give: each total against its threshold.
    totals = {row["kind_id"]: row["median_cpu_ms"] for row in current if row["stage"] == TOTAL}
    assert [target["id"] for target in document["targets"]] == ["mnist_png_total", "paper_photo_total", "camera_photo_total"]
    for target in document["targets"]:
        assert target["value"] == totals[target["id"].removesuffix("_total")]
        assert target["met"] == OPERATORS[target["operator"]](target["value"], target["threshold"])
    assert "targets:" in done.stdout and "A/B in the same rounds" in done.stdout


def test_preprocess_benchmark_refuses_an_unknown_revision(mnist_root):
    done = run_module(["bench.preprocess", "--quick", "--against", "no-such-revision"], mnist_root, timeout=60)
    assert done.returncode == 2
    assert "give --against a revision" in done.stderr
