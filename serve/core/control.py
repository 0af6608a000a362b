"""Model control modes, as Triton's, and the one place that says what each allows.

    none      the models are read at start-up and never again on their own (SIGHUP re-reads a repository)
    poll      as none, and the repository is also re-read every few seconds
    explicit  only the models named are loaded (at start-up --load-model, then the repository
              extension's load and unload requests)

The command line, the server's configuration and the lifecycle all ask the rules here, so a mode
cannot allow a thing in one of them and refuse it in another.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from serve.core.errors import NotAllowed

NONE, POLL, EXPLICIT = "none", "poll", "explicit"
CONTROL_MODES = (NONE, POLL, EXPLICIT)
# --load-model's name for every model of the repository.
ALL_MODELS = "*"


@dataclass(frozen=True)
class LifecycleOptions:
    control_mode: str = NONE
    # Seconds between two reads of the repository in poll mode.
    poll_s: float = 15.0
    # Models loaded at start-up in explicit mode ("*": every model of the repository).
    startup_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(f"model control mode must be one of {', '.join(CONTROL_MODES)}, got {self.control_mode!r}")
        if self.poll_s <= 0:
            raise ValueError(f"the repository poll interval must be > 0 seconds, got {self.poll_s:g}")
        if self.startup_models and self.control_mode != EXPLICIT:
            raise ValueError("--load-model names the models to load in explicit mode; use --model-control-mode explicit")

    # What the mode allows
    @property
    def polls(self) -> bool:
        return self.control_mode == POLL

    @property
    def loads_on_request(self) -> bool:
        """Whether the repository extension's load and unload requests change what is served."""
        return self.control_mode == EXPLICIT

    @property
    def one_process_only(self) -> bool:
        # A load or unload request changes the models of the one process that answers it: with
        # several workers they would disagree.
        return self.loads_on_request

    def check_source(self, from_repository: bool) -> None:
        """ValueError unless the mode can work with where the models come from."""
        if not from_repository and self.control_mode != NONE:
            raise ValueError("--model-control-mode poll and explicit need a --model-repository to load from")

    def check_workers(self, workers: int) -> None:
        """ValueError unless the mode can be served by `workers` processes."""
        if workers > 1 and self.one_process_only:
            raise ValueError("--model-control-mode explicit needs --workers 1: a load or unload would reach one worker "
                             "only (poll and none re-read the repository in every worker; SIGHUP reaches them all)")

    def check_request(self, action: str, from_repository: bool) -> None:
        """NotAllowed unless a load or unload request (`action`) may change what is served."""
        if not from_repository:
            raise NotAllowed(
                f"cannot {action} models: they were given as files (--model); serve a --model-repository "
                "with --model-control-mode explicit to load and unload them while serving"
            )
        if not self.loads_on_request:
            raise NotAllowed(
                f"cannot {action} models: the server runs with --model-control-mode {self.control_mode}, "
                "where the repository decides what is served; restart it with --model-control-mode explicit"
            )

    # What the mode loads
    def startup_names(self, available: Sequence[str]) -> list[str]:
        """The models to load at start-up, of those the source has."""
        if self.control_mode != EXPLICIT or ALL_MODELS in self.startup_models:
            return list(available)
        return list(self.startup_models)

    def reread_names(self, available: Sequence[str], served: Sequence[str]) -> list[str]:
        """The models a re-read of the source brings up to date: all of them, or in explicit mode
        only those already loaded (a re-read never loads what nobody asked for)."""
        if self.control_mode == EXPLICIT:
            return [name for name in served if name in available]
        return list(available)
