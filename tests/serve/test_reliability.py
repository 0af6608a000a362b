"""Reliability under faults, on real `python -m serve` processes driven by separate load generators:
SIGTERM in the middle of load, SIGKILL of one of two round_robin replicas, model files that cannot be
served, and (marked slow) the full soak. Each test runs the same code as bench/reliability.py, with
small figures; the drain logic behind a graceful SIGTERM is also tested on its own."""
from __future__ import annotations

import asyncio

import pytest

from serve_testing import REPO_ROOT  # noqa: F401  (puts bench/ on the import path)
from bench import reliability
from bench._reliability_traffic import References
from serve.core.errors import Unavailable
from serve.core.admission import Admission


@pytest.fixture
def config(model_dir, mnist_root, tmp_path):
    """Quick figures: 16 calls in flight from one load generator, against the test classifier."""
    return reliability.ReliabilityConfig.quick_mode(
        model_path=model_dir / "centroid.onnx", data_dir=mnist_root, workdir=tmp_path, concurrency=16,
        load_processes=1, sigterm_load_s=3.0, failover_load_s=4.0,
    )


def describe(report) -> str:
    load = report.load
    return f"outcomes {load.outcomes}, statuses {load.codes_by_kind}, first failures {load.failures[:5]}"


def test_sigterm_under_load_answers_the_calls_in_flight_then_exits_0(config):
    report = reliability.run_sigterm(config)
    in_flight = sum(report.in_flight.values())
    assert in_flight >= 8, f"too few calls in flight at the signal to judge: {report.in_flight}"
    assert report.in_flight == {"OK": in_flight}, f"calls in flight at SIGTERM were not all answered: {report.in_flight}"
    assert report.wrong_or_lost == 0 and report.load.client_errors == 0, describe(report)
    # After the signal: answered (lame duck), refused UNAVAILABLE, or cut off by gRPC core as it
    # closed (CANCELLED, never processed; a grpc.aio stream shows its INTERNAL write race). Nothing else.
    assert set(report.after_signal) <= reliability.AFTER_SIGNAL_STATUSES, (report.after_signal, describe(report))
    assert report.after_signal.get("UNAVAILABLE", 0) > 0, "calls after the lame duck should be refused"
    assert report.exit_code == 0 and report.exit_after_s <= config.grace_s
    assert report.code_after_exit == "UNAVAILABLE"
    assert report.server_tracebacks == 0
    assert report.passed


def test_round_robin_keeps_answering_when_one_replica_is_killed(config):
    report = reliability.run_failover(config, "SIGKILL")
    assert report.load.sent > 100
    assert report.load.failed == 0 and report.failed_by_code == {}, describe(report)
    assert report.load.outcomes["answered"] == report.load.sent
    # Both replicas served before the kill, and the survivor took over.
    assert report.answered_by_victim_before > 0 and report.answered_by_survivor > 0
    assert report.survivor_health == "SERVING"
    assert report.passed


def test_model_files_that_cannot_be_served_stop_the_process_with_one_clear_line(config):
    cases = {case.kind: case for case in reliability.run_startup_failures(config.model_path, config.workdir)}
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
    report = reliability.rss_report(flat, start, start + 60, warmup_s=10)
    assert report.flat and abs(report.growth_mib) < 1
    leaking = [(start + t, (100 + t) * mib) for t in range(60)]
    report = reliability.rss_report(leaking, start, start + 60, warmup_s=10)
    assert not report.flat and report.slope_mib_per_min == pytest.approx(60, rel=0.01)


def test_the_report_defaults_to_a_two_minute_soak_at_concurrency_64_and_checks_its_flags(capsys, tmp_path):
    parse = reliability.build_parser().parse_args
    full = reliability.config_from_args(parse([]))
    assert full.soak_s >= 120 and full.concurrency == 64 and full.load_processes >= 2 and not full.quick
    quick = reliability.config_from_args(parse(["--quick"]))
    assert quick.quick and quick.soak_s < full.soak_s and quick.warmup_s < quick.soak_s
    short = reliability.config_from_args(parse(["--soak-seconds", "30"]))
    assert short.soak_s == 30 and 0 < short.warmup_s <= 5
    for flags, message in ((["--model", str(tmp_path / "nope.onnx")], "model file not found"),
                           (["--soak-seconds", "0"], "must be positive"),
                           (["--concurrency", "1", "--load-processes", "2"], "load processes")):
        with pytest.raises(SystemExit) as exit_info:
            reliability.main(flags)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


# The drain behind a graceful SIGTERM (serve.core.admission.Admission), without a network


def test_admission_counts_calls_and_refuses_new_ones_while_draining():
    admission = Admission()
    admission.enter()
    admission.enter()
    assert admission.active == 2

    async def drain_while_calls_finish() -> bool:
        draining = asyncio.ensure_future(admission.drain(timeout=5.0, quiet_s=0.01))
        await asyncio.sleep(0.02)
        assert admission.draining
        with pytest.raises(Unavailable, match="shutting down"):
            admission.enter()
        admission.leave()
        admission.leave()
        return await draining

    assert asyncio.run(drain_while_calls_finish()) is True
    assert admission.active == 0 and admission.refused == 1


def test_admission_serves_on_during_the_lame_duck_and_gives_up_at_the_timeout():
    admission = Admission()

    async def lame_duck() -> None:
        draining = asyncio.ensure_future(admission.drain(timeout=5.0, lame_duck_s=0.2, quiet_s=0.01))
        await asyncio.sleep(0)
        admission.enter()  # a call that arrives right after the signal is still served...
        await asyncio.sleep(0.05)
        assert not admission.draining
        admission.leave()
        await draining  # ...and once it is done and nothing else comes, the lame duck ends early

    asyncio.run(asyncio.wait_for(lame_duck(), 2.0))

    stuck = Admission()
    stuck.enter()  # a call that never ends: drain gives up at its timeout and says so
    assert asyncio.run(asyncio.wait_for(stuck.drain(timeout=0.1), 2.0)) is False


@pytest.mark.slow
def test_full_soak_loses_nothing_and_keeps_memory_flat(model_dir, mnist_root, tmp_path):
    """The >= 2 minute soak of bench/reliability.py at concurrency 64 (about 3 minutes in all)."""
    config = reliability.ReliabilityConfig(model_path=model_dir / "centroid.onnx", data_dir=mnist_root,
                                           workdir=tmp_path)
    assert config.soak_s >= 120 and config.concurrency >= 64
    references = References(config.model_path, config.data_dir)
    report = reliability.run_soak(config, references)
    load = report.load
    assert load.sent == load.accounted and load.duration_s >= 120
    assert load.outcomes["lost"] == 0 and load.outcomes["wrong"] == 0 and load.outcomes["unexpected"] == 0, describe(report)
    assert all(load.by_kind.get(name) for name in reliability.SOAK_MIX), "every kind of call was sent"
    assert report.rss.flat, report.rss
    assert report.attack.refused_cheaply, report.attack
    assert report.health_after == "SERVING" and report.correct_after and report.exit_code == 0
    assert report.passed
