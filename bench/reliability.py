"""What the service survives: load, faults and hostile input, measured on real processes.

    python -m bench.reliability            # full: a >= 2 minute soak (about 4 minutes in all)
    python -m bench.reliability --quick    # the same scenarios in about a minute (a 10 s soak)

Scenarios (every server is `python -m serve` on 127.0.0.1, every load generator its own process):

1. Soak: mixed traffic at high concurrency (valid PNG and raw images through both APIs, streams,
   invalid requests of every documented kind, random hostile input, calls cancelled in flight,
   deadlines that expire, streams closed early). Every valid answer is compared with offline ONNX
   Runtime; every call must end with an answer or its kind's expected status. The server's
   resident memory is sampled throughout and must stay flat after warm-up. Then hostile payloads
   aimed at memory (decompression bombs, oversized messages) must not raise the server's peak RSS.
   Afterwards the server must report SERVING, answer correctly and exit 0 on SIGTERM.
2. SIGTERM under load: calls in flight are answered, later ones refused with UNAVAILABLE, exit 0
   within the grace period.
3. Two replicas behind gRPC's client-side round_robin with a retry policy (and client-side health
   checking); one is SIGKILLed under load: how many calls fail, and why. Then the same with SIGTERM
   (a rolling restart).
4. Start-up with a missing, truncated or non-ONNX model file: exit 2 and one clear line.
5. The same with `--workers 2`: SIGTERM under load drains every worker and exits 0; SIGKILL of the
   busiest worker under load (clients with the retry policy) is answered by a restart that the
   metrics and the log show, and no call fails; a model file that cannot load stops start-up with
   the same one line.

Prints a summary table and writes bench/results/reliability.json. Exits 1 when a check fails.
The model is --model PATH (a classifier exported by `python -m export`); by default
models/lenet.onnx, exported with random weights into the work folder when it does not exist
(only the service's machinery is under test, and random weights exercise it as trained ones do).
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench._machine import describe_machine, finish_machine_record, machine_summary
from bench._report import (
    RESULTS_DIR,
    format_table,
    parse_config,
    result_document,
    write_json,
)
from contracts.data_dir import DATA_DIR_ENV, DATA_DIR_HELP, resolve_data_dir
from contracts.mnist_idx import mnist_raw_dir
from harness.load import LoadError
from harness.load.mixed import FAILURES, KINDS, OUTCOMES, References
from harness.processes import REPO_ROOT, ProcessError
from harness.reliability_runs import (
    DEFAULT_MODEL,
    FailoverReport,
    LoadTotals,
    ReliabilityConfig,
    SigtermReport,
    SoakReport,
    StartupCase,
    WorkerKillReport,
    bad_models_dir,
    run_failover,
    run_sigterm,
    run_soak,
    run_startup_failures,
    run_worker_kill,
)

log = logging.getLogger("reliability")

# ------------------------------------------------------------------------------- the report


@dataclass
class ReliabilityReport:
    config: dict
    model: str
    soak: SoakReport | None = None
    sigterm: SigtermReport | None = None
    failover: FailoverReport | None = None
    rolling_restart: FailoverReport | None = None
    sigterm_workers: SigtermReport | None = None
    worker_kill: WorkerKillReport | None = None
    startup: list[StartupCase] = field(default_factory=list)
    startup_workers: list[StartupCase] = field(default_factory=list)
    bad_models_dir: Path = Path()

    @property
    def lost(self) -> int:
        return sum(part.load.outcomes["lost"] for part in self.load_parts().values())

    @property
    def passed(self) -> bool:
        return (all(part.passed for part in self.load_parts().values())
                and all(case.passed for case in self.startup + self.startup_workers))

    def load_parts(self) -> dict:
        """The scenarios that ran load, by name."""
        parts = {"soak": self.soak, "sigterm": self.sigterm, "failover": self.failover,
                 "rolling_restart": self.rolling_restart, "sigterm_workers": self.sigterm_workers,
                 "worker_kill": self.worker_kill}
        return {name: part for name, part in parts.items() if part is not None}

    def to_json(self) -> dict:
        def with_properties(part) -> dict:
            data = asdict(part)
            data["passed"] = part.passed
            return data

        data = {"config": self.config, "model": self.model, "passed": self.passed, "requests_lost": self.lost}
        for name in ("soak", "sigterm", "failover", "rolling_restart", "sigterm_workers", "worker_kill"):
            part = getattr(self, name)
            data[name] = with_properties(part) if part else None
        if self.soak:
            data["soak"]["rss"]["flat"] = self.soak.rss.flat
            data["soak"]["attack"]["refused_cheaply"] = self.soak.attack.refused_cheaply
            data["soak"]["load"]["requests_per_s"] = self.soak.load.requests_per_s
            data["soak"]["smallest_leak_caught_bytes_per_request"] = self.soak.smallest_leak_caught
        data["startup"] = [with_properties(case) for case in self.startup]
        data["startup_workers"] = [with_properties(case) for case in self.startup_workers]
        return data


def _ok(flag: bool) -> str:
    return "ok" if flag else "FAILED"


def _load_row(name: str, load: LoadTotals) -> list:
    outcomes = load.outcomes
    return [name, load.sent, load.concurrency, load.duration_s, load.requests_per_s,
            *(outcomes[outcome] for outcome in OUTCOMES)]


def fault_rows(report: ReliabilityReport) -> list[list]:
    """(fault, injected, survived, what happened) for the summary table."""
    rows = []
    if report.soak:
        for name, kind in KINDS.items():
            if kind.group != "fault":
                continue
            counts = report.soak.load.by_kind.get(name, {})
            failed = sum(counts.get(f, 0) for f in FAILURES)
            ended = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
            rows.append([f"{kind.description} (soak)", sum(counts.values()), _ok(failed == 0), ended])
        rss = report.soak.rss
        rows.append(["server memory over the soak", f"{rss.growth_mib:+.1f} MiB", _ok(rss.flat),
                     f"RSS {rss.baseline_mib:.1f} -> {rss.final_mib:.1f} MiB after {rss.warmup_s:.0f} s warm-up "
                     f"(allowed +{rss.allowance_mib:.1f}: a leak of {report.soak.smallest_leak_caught:.0f} bytes per "
                     f"request would exceed it), slope {rss.slope_mib_per_min:+.2f} MiB/min"])
        attack = report.soak.attack
        sent = sum(sum(codes.values()) for codes in attack.codes.values())
        rows.append(["decompression bombs, 64 MiB messages", sent, _ok(attack.refused_cheaply),
                     f"all RESOURCE_EXHAUSTED: {_ok(all(set(c) == {'RESOURCE_EXHAUSTED'} for c in attack.codes.values()))}; "
                     f"peak RSS {attack.peak_rise_mib:+.1f} MiB (allowed +{attack.allowance_mib:.0f})"])
        rows.append(["after the soak", 1, _ok(report.soak.passed),
                     f"health {report.soak.health_after}, correct prediction {_ok(report.soak.correct_after)}, "
                     f"SIGTERM exit {report.soak.exit_code}, {report.soak.server_tracebacks} tracebacks in the log"])
    for s, what in ((report.sigterm, "SIGTERM under load"),
                    (report.sigterm_workers, f"SIGTERM under load, {report.config.get('workers')} workers")):
        if s is None:
            continue
        in_flight = sum(s.in_flight.values())
        rows.append([what, 1, _ok(s.passed),
                     f"{in_flight} calls in flight at the signal: {s.in_flight_answered} answered, "
                     f"{s.in_flight.get('UNAVAILABLE', 0)} refused UNAVAILABLE; exit {s.exit_code} after "
                     f"{s.exit_after_s or 0:.2f} s (grace {s.grace_s:.0f} s); calls sent after the signal: "
                     + ", ".join(f"{code} {n}" for code, n in sorted(s.after_signal.items()))
                     + f" (CANCELLED: sent as gRPC core closed, never processed); once it is gone a call gets "
                     f"{s.code_after_exit}"])
    for f, what in ((report.failover, "SIGKILL of 1 of 2 round_robin replicas"),
                    (report.rolling_restart, "SIGTERM of 1 of 2 round_robin replicas")):
        if f is None:
            continue
        exit_text = "" if f.signal == "SIGKILL" else f", it exited {f.victim_exit_code}"
        rows.append([what, 1, _ok(f.passed),
                     f"{sum(f.failed_by_code.values())} of {f.load.sent} calls failed {f.failed_by_code or ''}; "
                     f"{f.signal} after {f.signalled_after_s:.1f} s having answered {f.answered_by_victim_before}"
                     f"{exit_text}; the survivor answered {f.answered_by_survivor}, health {f.survivor_health}"])
    if report.worker_kill:
        k = report.worker_kill
        rows.append([f"SIGKILL of the busiest of {k.workers} workers", 1, _ok(k.passed),
                     f"{sum(k.failed_by_code.values())} of {k.load.sent} calls failed {k.failed_by_code or ''} "
                     f"(clients retry UNAVAILABLE); killed after {k.signalled_after_s:.1f} s having spent "
                     f"{k.victim_cpu_s:.2f} s CPU on the load; restarts counted {k.restarts_counted:g}, workers ready "
                     f"{k.workers_ready_after:g}, health {k.health_after}, logged: died {_ok(k.died_logged)}, "
                     f"started again {_ok(k.restart_logged)}; SIGTERM exit {k.exit_code}"])
    startup_cases = [(case, "") for case in report.startup]
    startup_cases += [(case, f", {report.config.get('workers')} workers") for case in report.startup_workers]
    for case, workers in startup_cases:
        message = case.error_lines[0].split("error: ", 1)[-1] if case.error_lines else "(no error line)"
        message = message.replace(str(report.bad_models_dir) + os.sep, "")
        rows.append([f"start-up with a model file {case.kind}{workers}", 1, _ok(case.passed),
                     f"exit {case.exit_code}{', TRACEBACK' if case.traceback else ''} in {case.seconds:.1f} s: "
                     f"{message[:150]}"])
    return rows


def bad_input_rows(soak: SoakReport) -> list[list]:
    rows = []
    for name, kind in KINDS.items():
        if kind.group not in ("invalid", "fuzz"):
            continue
        counts = soak.load.by_kind.get(name, {})
        codes = soak.load.codes_by_kind.get(name, {})
        failed = sum(counts.get(f, 0) for f in FAILURES)
        statuses = ", ".join(f"{code} {n}" for code, n in sorted(codes.items()))
        rows.append([name, statuses, sum(counts.values()), counts.get("rejected", 0), counts.get("answered", 0), failed])
    for name, codes in soak.attack.codes.items():
        rows.append([name, ", ".join(f"{code} {n}" for code, n in codes.items()), sum(codes.values()),
                     codes.get("RESOURCE_EXHAUSTED", 0), codes.get("OK", 0),
                     sum(n for code, n in codes.items() if code != "RESOURCE_EXHAUSTED")])
    return rows


def summary(report: ReliabilityReport, machine: dict) -> str:
    lines = [machine_summary(machine), f"model: {report.model}; every server and load generator is its own process", ""]
    titles = {"soak": "soak", "sigterm": "SIGTERM under load", "failover": "round_robin, SIGKILL 1 of 2",
              "rolling_restart": "round_robin, SIGTERM 1 of 2", "sigterm_workers": "SIGTERM under load, workers",
              "worker_kill": "SIGKILL of a worker"}
    loads = [(titles[name], part.load) for name, part in report.load_parts().items()]
    lines += ["Load held", format_table(["run", "calls", "concurrency", "seconds", "calls/s", *OUTCOMES],
                                        [_load_row(name, load) for name, load in loads]), ""]
    if report.soak and report.soak.load.latency_ms:
        latency = report.soak.load.latency_ms
        lines += [f"soak latency of valid calls: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms, "
                  f"max {latency['max']:.1f} ms", ""]
    faults = fault_rows(report)
    table = format_table(["fault", "injected", "survived"], [row[:3] for row in faults]).splitlines()
    lines += ["Faults injected", *table[:2]]
    for row_line, row in zip(table[2:], faults):
        lines += [row_line, f"    {row[3]}"]
    lines.append("")
    if report.soak:
        lines += ["Bad inputs tried, by kind (soak traffic, then memory attacks on the idle server)",
                  format_table(["kind", "statuses", "calls", "rejected", "answered", "failed"],
                               bad_input_rows(report.soak), right_from=2), ""]
    lines += [f"Requests lost: {report.lost}", f"Overall: {_ok(report.passed)}"]
    return "\n".join(lines)


def result_rows(report: ReliabilityReport) -> list[dict]:
    """One row per check, for bench/results/reliability.json (the details follow under "details")."""
    rows = []
    for name, part in report.load_parts().items():
        if part:
            load = part.load
            rows.append({"check": name, "passed": part.passed, "calls": load.sent, "concurrency": load.concurrency,
                         "duration_s": load.duration_s, "calls_per_s": load.requests_per_s, **load.outcomes})
    for case in report.startup:
        rows.append({"check": f"startup: {case.kind}", "passed": case.passed, "exit_code": case.exit_code})
    for case in report.startup_workers:
        rows.append({"check": f"startup, workers: {case.kind}", "passed": case.passed, "exit_code": case.exit_code})
    return rows


def ensure_model(config: ReliabilityConfig) -> Path:
    """The model to serve: --model, or a random-weights LeNet exported once into the work folder."""
    if config.model_path.exists() or config.model_path != DEFAULT_MODEL:
        return config.model_path
    exported = config.workdir / "lenet.onnx"
    if not exported.exists():
        log.info("%s does not exist: exporting a random-weights LeNet to %s", DEFAULT_MODEL, exported)
        config.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "export", "lenet", "--random-weights", "--cpu-only", "-q",
                        "--data-dir", str(config.data_dir), "-o", str(exported)], check=True, cwd=REPO_ROOT,
                       timeout=600)
    return exported


def run(config: ReliabilityConfig) -> ReliabilityReport:
    config.workdir.mkdir(parents=True, exist_ok=True)
    config.model_path = ensure_model(config)
    references = References(config.model_path, config.data_dir)
    report = ReliabilityReport(config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                               model=f"{references.model_name} from {config.model_path.name}")
    report.bad_models_dir = bad_models_dir(config.workdir)
    report.startup = run_startup_failures(config.model_path, config.workdir)
    report.sigterm = run_sigterm(config)
    report.failover = run_failover(config, "SIGKILL")
    report.rolling_restart = run_failover(config, "SIGTERM")
    report.startup_workers = run_startup_failures(config.model_path, config.workdir, config.workers)
    report.sigterm_workers = run_sigterm(config, config.workers)
    report.worker_kill = run_worker_kill(config)
    report.soak = run_soak(config, references)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a 10 s soak) instead of the full report")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="classifier .onnx exported by `python -m export` (default: models/lenet.onnx, or a "
                             "random-weights LeNet exported into the work folder when it does not exist)")
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    parser.add_argument("--soak-seconds", type=float, default=None,
                        help="soak length (default: 120, 10 with --quick); the first sixth, at most 20 s, is warm-up")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="calls in flight during the soak and the faults (default: 64)")
    parser.add_argument("--load-processes", type=int, default=2,
                        help="load-generator processes sharing the concurrency (default: 2)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "reliability.json",
                        help="JSON report (default: bench/results/reliability.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the traffic mix (default: 0)")
    parser.add_argument("--workers", type=int, default=2, help="server processes of the --workers runs (default: 2)")
    return parser


def config_from_args(args: argparse.Namespace) -> ReliabilityConfig:
    """The config the flags describe; ValueError when they are wrong."""
    if args.model != DEFAULT_MODEL and not args.model.is_file():
        raise ValueError(f"model file not found: {args.model}")
    return ReliabilityConfig.with_soak(
        args.quick, args.soak_seconds, model_path=args.model, data_dir=resolve_data_dir(args.data_dir),
        workdir=RESULTS_DIR / "reliability-work", concurrency=args.concurrency, load_processes=args.load_processes,
        seed=args.seed, workers=args.workers)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = build_parser()
    config = parse_config(parser, argv, config_from_args)
    if not mnist_raw_dir(config.data_dir).is_dir():
        parser.error(f"MNIST not found under {mnist_raw_dir(config.data_dir)}: pass --data-dir or set {DATA_DIR_ENV}")
    machine = describe_machine()
    try:
        report = run(config)
    except (ProcessError, LoadError, ValueError) as exc:  # a process that failed; a model that is no classifier
        print(f"reliability: error: {exc}", file=sys.stderr)
        return 2
    finish_machine_record(machine)
    report.config["output_path"] = str(args.output)
    document = result_document("reliability", machine, report.config, result_rows(report),
                               [f"requests lost: {report.lost}", f"passed: {report.passed}"])
    document["details"] = report.to_json()
    write_json(args.output, document)
    print(summary(report, machine))
    print(f"\nwritten: {args.output}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
