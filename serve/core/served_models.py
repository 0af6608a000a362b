"""The table of served versions: which version of which model a call uses, and the lease it holds.

Every served version has its own runner (batcher, inference threads) and statistics. A call takes
a lease on the version current when it arrives (`with table.served(name) as served:`) and keeps it
until it is answered. The lifecycle replaces a model's versions in one assignment (`swap`) on the
event loop, so a call looks its version up either before a swap or after it, never in between; and
it closes a version's runner only once the last lease on it is returned (`ServedVersion.retire`).
"""
from __future__ import annotations

import asyncio
from typing import Callable

from contracts.errors import ModelNotFound
from contracts.model_file import Model
from contracts.repository_layout import FileStamp
from serve.core.batching import BatchingOptions
from serve.core.model_index import version_order
from serve.core.runner import ModelRunner
from serve.core.statistics import VersionStatistics


class VersionObserver:
    """What one version's runner reports: to the server's metrics (by model) and to its own statistics."""

    def __init__(self, metrics, statistics: VersionStatistics) -> None:
        self._metrics = metrics
        self._statistics = statistics

    def batch_done(self, model: str, images: int, requests: int, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.batch_done(model, images, requests, seconds)

    def execution_timed(self, model, images, queue_seconds, input_s, infer_s, output_s) -> None:
        self._statistics.execution_done(images, queue_seconds, input_s, infer_s, output_s)
        if self._metrics is not None:
            self._metrics.execution_timed(model, images, queue_seconds, input_s, infer_s, output_s)

    def queue_depth(self, model: str, images: int) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth(model, images)

    def dropped(self, model: str, reason: str, requests: int) -> None:
        if self._metrics is not None:
            self._metrics.dropped(model, reason, requests)


class ServedVersion:
    """One loaded version: its model, runner and statistics, and the calls holding it."""

    def __init__(self, model: Model, batching: BatchingOptions, instances: int, metrics, stamp: FileStamp | None):
        self.model = model
        self.batching = batching
        # The file as it was loaded: a re-read loads the version again only when the file changed.
        self.stamp = stamp
        self.statistics = VersionStatistics(model.name, model.version)
        self.runner = ModelRunner(model, batching, VersionObserver(metrics, self.statistics), instances)
        self.leases = 0
        self._released: asyncio.Event | None = None

    @property
    def max_batch_size(self) -> int:
        """Most images one inference call takes (1 when requests cannot be stacked)."""
        return self.batching.max_batch_size if self.model.batchable else 1

    # A call holds its version as a context manager (a class's, not a generator's: it is on every call's path).
    def __enter__(self) -> "ServedVersion":
        self.leases += 1
        return self

    def __exit__(self, *exc_info) -> None:
        self.leases -= 1
        if self.leases == 0 and self._released is not None:
            self._released.set()

    async def retire(self) -> None:
        """Wait for the calls holding this version, then infer what is queued and stop its threads."""
        if self.leases:
            self._released = asyncio.Event()
            await self._released.wait()
        self.runner.drain()
        await self.runner.close()


class ServedModels:
    """name -> version -> ServedVersion, in the order the models were first served."""

    def __init__(self, explain_not_served: Callable[[str, list[str]], str]) -> None:
        """`explain_not_served(name, served_names)`: the NOT_FOUND message for a model not served."""
        # A model's versions are replaced whole (never edited), so a lookup sees one table or the other.
        self._versions: dict[str, dict[str, ServedVersion]] = {}
        self._explain_not_served = explain_not_served

    def served(self, name: str, version: str = "") -> ServedVersion:
        """The version a call uses: the one named, or the newest served; NOT_FOUND when it is not served."""
        versions = self._versions.get(name)
        if not versions:
            raise ModelNotFound(self._explain_not_served(name, self.names()))
        if not version:
            return next(reversed(versions.values()))  # kept in version order by swap: the newest is the last
        served = versions.get(version)
        if served is None:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} being served; it serves version(s) "
                f"{', '.join(versions)}"
            )
        return served

    def versions_of(self, name: str) -> list[ServedVersion]:
        """The model's served versions, oldest first; NOT_FOUND when it is not served."""
        self.served(name)
        return list(self._versions[name].values())

    def version_names(self, name: str) -> list[str]:
        return [served.model.version for served in self.versions_of(name)]

    def current(self, name: str) -> dict[str, ServedVersion]:
        """A copy of the model's served versions by version (empty when it is not served)."""
        return dict(self._versions.get(name, {}))

    def names(self) -> list[str]:
        return list(self._versions)

    def newest(self) -> list[ServedVersion]:
        """The newest served version of every model, in the order the models were first served."""
        return [next(reversed(versions.values())) for versions in list(self._versions.values())]

    def all(self) -> list[ServedVersion]:
        """Every served version (copied first: the metrics thread reads this while the loop swaps)."""
        return [served for versions in list(self._versions.values()) for served in list(versions.values())]

    def swap(self, name: str, versions: dict[str, ServedVersion]) -> None:
        """Serve `versions` of the model from now on (none: stop serving it), in one assignment."""
        if versions:
            self._versions[name] = dict(sorted(versions.items(), key=lambda item: version_order(item[0])))
        else:
            self._versions.pop(name, None)
