"""What the repository and statistics extensions report: each version's state, and its statistics.

`ModelStates` is the record the lifecycle keeps of every version it has tried: READY, LOADING,
UNLOADING or UNAVAILABLE (Triton's states), with the reason a version is not ready; it also
explains to a caller why a model it names is not served. `ModelIndex` answers the index (every
model of the source and every model served, with its versions' states) and the statistics of the
versions served.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from contracts.errors import InvalidInput
from serve.core.statistics import VersionStatistics

if TYPE_CHECKING:
    from serve.core.served_models import ServedModels

# Triton's model states, as the repository index reports them.
READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"


def version_order(version: str) -> int:
    """Versions sort by number ("10" after "9"); a model's state that no version has ("") comes first."""
    return int(version) if version.isdigit() else 0


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str = ""


class ModelStates:
    """The state of every version tried, by model; version "" is a state of the model itself
    (a config that cannot be used, or a model never loaded)."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, IndexEntry]] = {}

    def set(self, name: str, version: str, state: str, reason: str = "") -> None:
        self._entries.setdefault(name, {})[version] = IndexEntry(name, version, state, reason)

    def clear_model_state(self, name: str) -> None:
        """Forget a state of the model itself (its config is usable again)."""
        self._entries.get(name, {}).pop("", None)

    def get(self, name: str, version: str) -> IndexEntry | None:
        return self._entries.get(name, {}).get(version)

    def of(self, name: str) -> list[IndexEntry]:
        """The model's entries, in version order."""
        entries = self._entries.get(name, {})
        return [entries[version] for version in sorted(entries, key=version_order)]

    def names(self) -> list[str]:
        return list(self._entries)

    def explain_not_served(self, name: str, served: Sequence[str]) -> str:
        """Why a call naming `name` finds nothing to serve it, and what is served instead."""
        serving = ", ".join(served) or "no models"
        entries = self.of(name)
        if entries:
            reasons = "; ".join(f"version {e.version}: {e.state}{' (' + e.reason + ')' if e.reason else ''}"
                                for e in entries)
            return f"model {name!r} is not being served ({reasons}); this server serves: {serving}"
        return f"unknown model {name!r}; this server has: {serving}"


class ModelIndex:
    """The repository index and the statistics, read from the served table and the states."""

    def __init__(self, served: "ServedModels", states: ModelStates, source_names: Callable[[], list[str]]) -> None:
        self._served = served
        self._states = states
        self._source_names = source_names

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model of the source (and every model served, or tried) with its versions' states."""
        names = list(self._served.names())
        names += [name for name in self._states.names() if name not in names]
        with contextlib.suppress(OSError):  # a repository that cannot be read now adds no names
            names += [name for name in self._source_names() if name not in names]
        entries = []
        for name in sorted(names):
            states = self._states.of(name)
            if not states and not ready_only:
                entries.append(IndexEntry(name, "", UNAVAILABLE, "not loaded"))
            entries += [entry for entry in states if not ready_only or entry.state == READY]
        return entries

    def statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        """The statistics of every served version, of a model's, or of one version (NOT_FOUND when not served)."""
        if not name:
            if version:
                raise InvalidInput("a statistics request that names a version must name its model too")
            return self.all_statistics()
        if version:
            return [self._served.served(name, version).statistics]
        return [served.statistics for served in self._served.versions_of(name)]

    def all_statistics(self) -> list[VersionStatistics]:
        return [served.statistics for served in self._served.all()]
