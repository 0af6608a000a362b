"""The machine a benchmark ran on, recorded with every result: numbers mean nothing without it.

Cores (the ones this process may use, and the physical ones), the CPU model from /proc/cpuinfo,
a container's CPU quota, memory, the load average when the run started and ended (other work on a
shared machine skews timings), the GPU when there is one, the ONNX Runtime providers this build
offers, and the versions of the libraries that did the work. Nothing here imports torch: the serve
benchmark's processes stay as light as a serving install.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from contracts.sessions import cgroup_cpu_limit

# Distribution names whose versions are recorded (absent ones are skipped).
_DISTRIBUTIONS = (
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "torch",
    "torchvision",
    "grpcio",
    "protobuf",
    "pillow",
    "opencv-python-headless",
)


def usable_cores() -> int:
    """CPUs this process may run on (affinity), which is what thread counts should follow."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpuinfo() -> tuple[str, int | None]:
    """The CPU model name and the number of physical cores, from /proc/cpuinfo (Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), None
    model = ""
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = ""
    for line in text.splitlines() + [""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and not model:
            model = value
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
        elif not key:  # a blank line ends one logical CPU's block
            if core_id:
                cores.add((physical_id, core_id))
            physical_id = core_id = ""
    return model or platform.processor() or platform.machine(), (len(cores) or None)


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _gpus() -> list[str]:
    """GPU names from nvidia-smi (empty without an NVIDIA driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def onnxruntime_providers() -> list[str]:
    """Providers this onnxruntime build offers (offered is not running: each result says what ran)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def describe_machine() -> dict[str, Any]:
    """Everything about the machine that a reader needs to judge a result (JSON-serialisable)."""
    cpu_model, physical_cores = _cpuinfo()
    return {
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "physical_cores": physical_cores,
        "cgroup_cpu_quota": cgroup_cpu_limit(),
        "memory_gib": _memory_gib(),
        "gpus": _gpus(),
        "onnxruntime_providers": onnxruntime_providers(),
        "platform": platform.platform(),
        "versions": library_versions(),
        "load_average_at_start": load_average(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def finish_machine_record(machine: dict[str, Any]) -> dict[str, Any]:
    """Add the load average at the end of the run (a busy machine at either end skews the numbers)."""
    machine["load_average_at_end"] = load_average()
    machine["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return machine


def machine_summary(machine: dict[str, Any]) -> str:
    """The one-paragraph header printed above a result table."""
    quota = machine.get("cgroup_cpu_quota")
    cores = f"{machine['usable_cores']} usable cores"
    if machine.get("physical_cores"):
        cores += f" ({machine['physical_cores']} physical)"
    if quota:
        cores += f", cgroup quota {quota:g} CPUs"
    versions = machine["versions"]
    ort_version = versions.get("onnxruntime-gpu") or versions.get("onnxruntime", "?")
    lines = [
        f"machine: {machine['cpu_model']}, {cores}, {machine.get('memory_gib')} GiB",
        f"gpu: {', '.join(machine['gpus']) or 'none'}; onnxruntime {ort_version} offers "
        f"{', '.join(machine['onnxruntime_providers']) or 'no providers'}",
        "versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"load average (1, 5, 15 min) at start {machine.get('load_average_at_start')}"
        + (f", at end {machine['load_average_at_end']}" if machine.get("load_average_at_end") else ""),
    ]
    return "\n".join(lines)
