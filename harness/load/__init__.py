"""Load generators: client processes that keep calls in flight against a server and report what came back.

spec.py says what a load process sends and reports (LoadSpec, LoadResult), generators.py launches the
processes, replay.py and mixed.py are the two kinds of traffic a process can send.
"""
from .generators import LoadError, LoadGenerators, run_load
from .spec import (
    CHECK_CLASSIFY,
    CHECK_NONE,
    CHECK_STREAM,
    CHECK_V2,
    CHECK_V2_HTTP,
    HTTP,
    STREAM,
    UNARY,
    LoadResult,
    LoadSpec,
    MixedTraffic,
    ReplayTraffic,
)

__all__ = [
    "CHECK_CLASSIFY", "CHECK_NONE", "CHECK_STREAM", "CHECK_V2", "CHECK_V2_HTTP", "HTTP", "STREAM", "UNARY",
    "LoadError", "LoadGenerators", "LoadResult", "LoadSpec", "MixedTraffic", "ReplayTraffic", "run_load",
]
