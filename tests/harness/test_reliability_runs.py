"""harness.reliability_runs: SIGTERM in the middle of load, SIGKILL of one of two round_robin replicas,
model files that cannot be served, on real `python -m serve` processes driven by separate load
generators; what the soak sends for a config; and (marked slow) the full soak. Each test runs the
same code as bench/reliability.py's report, with small figures."""
from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from contracts.data_dir import DATA_DIR_ENV
from harness import reliability_runs
from harness.load.mixed import References


@pytest.fixture
def config(classifier_path, mnist_root, tmp_path):
    """Quick figures: 16 calls in flight from one load generator, against the test classifier."""
    return reliability_runs.ReliabilityConfig.quick_mode(
        model_path=classifier_path, data_dir=mnist_root, workdir=tmp_path, concurrency=16,
        load_processes=1, sigterm_load_s=3.0, failover_load_s=4.0,
    )


def describe(report) -> str:
    load = report.load
    return f"outcomes {load.outcomes}, statuses {load.codes_by_kind}, first failures {load.failures[:5]}"


def test_sigterm_under_load_answers_the_calls_in_flight_then_exits_0(config):
    report = reliability_runs.run_sigterm(config)
    in_flight = sum(report.in_flight.values())
    assert in_flight >= 8, f"too few calls in flight at the signal to judge: {report.in_flight}"
    assert report.in_flight == {"OK": in_flight}, f"calls in flight at SIGTERM were not all answered: {report.in_flight}"
    assert report.wrong_or_lost == 0 and report.load.client_errors == 0, describe(report)
    # After the signal: answered (lame duck), refused UNAVAILABLE, or cut off by gRPC core as it
    # closed (CANCELLED, never processed; a grpc.aio stream shows its INTERNAL write race). Nothing else.
    assert set(report.after_signal) <= reliability_runs.AFTER_SIGNAL_STATUSES, (report.after_signal, describe(report))
    assert report.after_signal.get("UNAVAILABLE", 0) > 0, "calls after the lame duck should be refused"
    assert report.exit_code == 0 and report.exit_after_s <= config.grace_s
    assert report.code_after_exit == "UNAVAILABLE"
    assert report.server_tracebacks == 0
    assert report.passed


def test_round_robin_keeps_answering_when_one_replica_is_killed(config):
    report = reliability_runs.run_failover(config, "SIGKILL")
    assert report.load.sent > 100
    assert report.load.failed == 0 and report.failed_by_code == {}, describe(report)
    assert report.load.outcomes["answered"] == report.load.sent
    # Both replicas served before the kill, and the survivor took over.
    assert report.answered_by_victim_before > 0 and report.answered_by_survivor > 0
    assert report.survivor_health == "SERVING"
    assert report.passed


def test_model_files_that_cannot_be_served_stop_the_process_with_one_clear_line(config):
    cases = {case.kind: case for case in reliability_runs.run_startup_failures(config.model_path, config.workdir)}
    assert set(cases) == {"missing", "truncated", "not ONNX"}
    for kind, case in cases.items():
        assert case.exit_code == 2, (kind, case)
        assert len(case.error_lines) == 1 and not case.traceback, (kind, case)
    assert "model file not found" in cases["missing"].error_lines[0]
    for kind in ("truncated", "not ONNX"):
        assert "is not a loadable ONNX model (truncated, corrupt or not ONNX?)" in cases[kind].error_lines[0]


def test_the_load_generator_checks_answers_against_offline_onnx_runtime(config):
    """The soak's correctness check itself: right answers agree, a mix-up of callers does not."""
    references = References(config.model_path, config.data_dir, count=8)
    for first, second in ((0, 1), (2, 3)):
        assert references.agrees(references.raw_probabilities[first], references.raw_probabilities[first])
        if references.raw_probabilities[first].argmax() != references.raw_probabilities[second].argmax():
            assert not references.agrees(references.raw_probabilities[second], references.raw_probabilities[first])
    perturbed = references.raw_probabilities[0] + 1e-3
    assert not references.agrees(perturbed, references.raw_probabilities[0])


def test_rss_growth_is_judged_after_warm_up_on_medians():
    mib = 1024 * 1024
    start = 1000.0
    # 10 s of warm-up growth (ignored), then flat with noise, then a leak.
    flat = [(start + t, (100 + (20 if t < 10 else 0.5 * (t % 2))) * mib) for t in range(60)]
    report = reliability_runs.rss_report(flat, start, start + 60, warmup_s=10)
    assert report.flat and abs(report.growth_mib) < 1
    leaking = [(start + t, (100 + t) * mib) for t in range(60)]
    report = reliability_runs.rss_report(leaking, start, start + 60, warmup_s=10)
    assert not report.flat and report.slope_mib_per_min == pytest.approx(60, rel=0.01)


class _SoakStarted(Exception):
    """Raised by the stand-in load generators once they were told what to send."""


@pytest.fixture
def soak_plan(monkeypatch, tmp_path):
    """What run_soak asks its load generators to send under the given flags, with no server started."""
    class Server:
        pid, target = 0, "127.0.0.1:1"

    told = []

    def record(specs, during=None):
        told.extend(specs)
        raise _SoakStarted

    monkeypatch.setattr(reliability_runs, "ServerProcess", lambda *args, **kwargs: contextlib.nullcontext(Server()))
    monkeypatch.setattr(reliability_runs, "RssSampler", lambda *args, **kwargs: SimpleNamespace(start=lambda: None))
    monkeypatch.setattr(reliability_runs, "run_load", record)

    def plan(quick: bool = False, soak_s: float | None = None, **fields):
        config = reliability_runs.ReliabilityConfig.with_soak(quick, soak_s, workdir=tmp_path, **fields)
        told.clear()
        with pytest.raises(_SoakStarted):
            reliability_runs.run_soak(config, references=None)
        return config, list(told)

    return plan


def test_the_report_by_default_runs_the_full_soak_its_config_describes(soak_plan):
    config, specs = soak_plan()
    defaults = reliability_runs.ReliabilityConfig()
    assert not config.quick and (config.soak_s, config.concurrency) == (defaults.soak_s, defaults.concurrency)
    # Every call in flight is sent, by the load processes together, with the soak's mix, for the whole soak.
    assert len(specs) == defaults.load_processes and sum(spec.concurrency for spec in specs) == defaults.concurrency
    assert {spec.duration_s for spec in specs} == {defaults.soak_s}
    assert {spec.traffic.mix == reliability_runs.SOAK_MIX for spec in specs} == {True}
    assert config.warmup_s < config.soak_s


def test_quick_and_explicit_flags_change_what_the_soak_sends(soak_plan):
    quick, specs = soak_plan(quick=True)
    assert {spec.duration_s for spec in specs} == {10.0} and quick.warmup_s < 10
    short, specs = soak_plan(soak_s=30, concurrency=65, load_processes=3)
    assert {spec.duration_s for spec in specs} == {30.0} and 0 < short.warmup_s <= 5
    assert [spec.concurrency for spec in specs] == [23, 21, 21], "every call in flight is someone's"


def test_a_config_that_cannot_run_is_refused_with_a_message():
    for fields, message in (({"soak_s": 0}, "must be positive"),
                            ({"concurrency": 1, "load_processes": 2}, "load processes")):
        with pytest.raises(ValueError, match=message):
            reliability_runs.ReliabilityConfig.with_soak(False, **fields)


def test_the_data_folder_defaults_to_zoo_data_dir_else_data(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert reliability_runs.ReliabilityConfig().data_dir == tmp_path
    monkeypatch.delenv(DATA_DIR_ENV)
    assert reliability_runs.ReliabilityConfig().data_dir == Path("data")


@pytest.mark.slow
def test_full_soak_loses_nothing_and_keeps_memory_flat(classifier_path, mnist_root, tmp_path):
    """The report's default soak: 120 s at concurrency 64 (about 3 minutes in all)."""
    config = reliability_runs.ReliabilityConfig(model_path=classifier_path, data_dir=mnist_root, workdir=tmp_path)
    references = References(config.model_path, config.data_dir)
    report = reliability_runs.run_soak(config, references)
    load = report.load
    assert load.sent == load.accounted and load.duration_s >= 120 and load.concurrency == 64
    assert load.outcomes["lost"] == 0 and load.outcomes["wrong"] == 0 and load.outcomes["unexpected"] == 0, describe(report)
    assert all(load.by_kind.get(name) for name in reliability_runs.SOAK_MIX), "every kind of call was sent"
    assert report.rss.flat, report.rss
    assert report.attack.refused_cheaply, report.attack
    assert report.health_after == "SERVING" and report.correct_after and report.exit_code == 0
    assert report.passed
