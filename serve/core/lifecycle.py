"""The served models' lifecycle: versions loaded, warmed up and swapped in while serving, and retired.

Models come from a source (serve.core.model_sources): a model repository folder, or model files
given alone, each presented as one version; both load the same way. Loading happens on a loader
thread, so no call waits for it; the new versions are then swapped into the served table
(serve.core.served_models) in one assignment on the event loop: calls already queued finish on the
old version, new calls go to the new one, and the old version's runner is closed only once its
last lease is returned (which is also how unloading drains a model's queue). A version that fails
to load, to agree with its card or with the version it replaces, or to warm up, is refused and
reported (index state and reason, log line, metric) while the version before it keeps serving.

What is loaded when, and what load and unload requests may do, is the control mode's
(serve.core.control). `ModelManager` at the end composes the parts for the data plane.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable

from contracts.errors import ModelNotFound
from contracts.model_config import describe_policy, instances_for
from contracts.model_file import Model, ModelLoadError
from contracts.repository_layout import FileStamp, ModelFolder
from contracts.sessions import DeviceUnavailable, RuntimeOptions
from serve.core.batching import BatchingOptions, batching_for
from serve.core.control import LifecycleOptions
from serve.core.digit_classifiers import DigitClassifiers
from serve.core.errors import LoadFailed, Unavailable
from serve.core.model_index import (
    LOADING,
    READY,
    UNAVAILABLE,
    UNLOADING,
    ModelIndex,
    ModelStates,
    version_order,
)
from serve.core.model_sources import ModelSource
from serve.core.served_models import ServedModels, ServedVersion
from serve.core.warmup import warm_up

__all__ = ["ModelLifecycle", "ModelManager", "check_replaces"]

log = logging.getLogger(__name__)

_NEVER_FAILED = object()  # not a stamp (a missing file's stamp is None)


def check_replaces(new: Model, old: Model) -> None:
    """A new version must be a drop-in replacement for the one callers use now, or they would break."""
    where = f"version {new.version} of model {new.name}"
    if (new.card is None) != (old.card is None):
        has, lacks = (old, new) if new.card is None else (new, old)
        raise ModelLoadError(
            f"{where}: version {has.version} carries a model card and version {lacks.version} does not; "
            f"export it with `python -m export {new.name} --repository REPO`, or serve it under another name"
        )
    differences = []
    if [(s.name, s.datatype, s.shape) for s in new.inputs] != [(s.name, s.datatype, s.shape) for s in old.inputs]:
        describe = lambda m: ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in m.inputs)  # noqa: E731
        differences.append(f"its inputs are {describe(new)}, version {old.version}'s are {describe(old)}")
    if [(s.name, s.datatype) for s in new.outputs] != [(s.name, s.datatype) for s in old.outputs]:
        differences.append(
            f"its outputs are {[s.name for s in new.outputs]}, version {old.version}'s are {[s.name for s in old.outputs]}"
        )
    if new.card is not None and old.card is not None and (new.task, new.labels) != (old.task, old.labels):
        differences.append(f"its card's task or labels differ from version {old.version}'s")
    if differences:
        raise ModelLoadError(
            f"{where} cannot replace version {old.version}: " + "; ".join(differences)
            + "; a model with another interface needs a name of its own"
        )


class ModelLifecycle:
    """Loads, swaps in, retires and re-reads the source's models, as the control mode allows."""

    def __init__(
        self,
        source: ModelSource,
        served: ServedModels,
        states: ModelStates,
        runtime: RuntimeOptions,
        batching: BatchingOptions,
        metrics=None,
        options: LifecycleOptions = LifecycleOptions(),
        on_serving: Callable[[str, bool], Awaitable[None]] | None = None,
    ) -> None:
        """`on_serving(name, serving)` is told when a model starts or stops being served (health checks)."""
        options.check_source(source.from_repository)
        self.source = source
        self.served = served
        self.states = states
        self.runtime = runtime
        self.batching = batching
        self.metrics = metrics
        self.options = options
        self.on_serving = on_serving
        # Stamps of versions that failed, so that a re-read does not retry an unchanged broken file.
        self._failed: dict[tuple[str, str], FileStamp | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._poller: asyncio.Task | None = None
        self._closed = False

    # Start and stop
    async def start(self) -> None:
        """Serve what the control mode loads at start-up; ModelLoadError when any of it fails."""
        self.source.check()
        for name in self.options.startup_names(self.source.names()):
            try:
                await self.load(name, origin="start-up")
            except (LoadFailed, ModelNotFound) as exc:
                # As Triton (--exit-on-error): a server that starts is serving all it was given.
                raise ModelLoadError(f"{exc}; {self.source.remedy}") from exc
        if self.options.polls:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="repository-poll")

    def drain(self) -> None:
        for served in self.served.all():
            served.runner.drain()

    async def close(self) -> None:
        """Stop polling, answer what is queued, stop every runner."""
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for served in self.served.all():
            await served.runner.close()
        self._loader.shutdown(wait=False, cancel_futures=True)

    # Requests (the repository extension's load and unload)
    async def request_load(self, name: str) -> None:
        """(Re)load the model from the repository, retrying versions that failed before."""
        self.options.check_request("load", self.source.from_repository)
        await self.load(name, origin="load request", retry_failed=True)

    async def request_unload(self, name: str) -> None:
        self.options.check_request("unload", self.source.from_repository)
        await self.unload(name)

    # Loading and unloading
    async def load(self, name: str, origin: str = "reload", retry_failed: bool = False) -> None:
        """Bring the model's served versions in line with the source; LoadFailed when a version fails.

        New and changed versions are loaded and warmed up (in the loader thread), then swapped in
        together; versions the policy no longer wants are retired. When any version fails, nothing
        already served is retired.
        """
        if self._closed:
            raise Unavailable("the server is shutting down")
        async with self._lock(name):
            folder = self.source.read(name)
            if folder.config_error:
                self.states.set(name, "", UNAVAILABLE, folder.config_error)
                self._count_failure(name, "")
                raise LoadFailed(f"model {name}: {folder.config_error}; the versions served before stay")
            self.states.clear_model_state(name)
            wanted = [str(number) for number in folder.wanted_versions()]
            if not wanted:
                raise LoadFailed(
                    f"model {name}: no version folder fits its version policy ({describe_policy(folder.config)}); "
                    f"add {folder.path}/1/model.onnx"
                )
            current = self.served.current(name)
            loaded, failures = await self._load_wanted(folder, wanted, current, origin, retry_failed)
            keep = current if failures else {v: s for v, s in current.items() if v in wanted}
            swapped = {**keep, **loaded}
            retired = [s for v, s in current.items() if swapped.get(v) is not s]
            if loaded or retired:
                await self._swap(name, swapped)
            for served in loaded.values():
                self.states.set(name, served.model.version, READY)
                log.info("model %s version %s is serving (%s)", name, served.model.version, origin)
            newest = max(swapped, key=version_order) if swapped else ""
            for served in retired:
                await self._retire(served, f"version {newest} replaced it" if newest else "unloaded")
            if failures:
                serving = ", ".join(sorted(swapped, key=version_order)) or "none"
                raise LoadFailed(f"model {name}: " + "; ".join(failures) + f". Versions serving now: {serving}")

    async def unload(self, name: str) -> None:
        """Stop serving every version of the model, once the calls it has queued are answered."""
        async with self._lock(name):
            versions = self.served.versions_of(name)  # NOT_FOUND when it is not served
            await self._swap(name, {})
            for served in versions:
                await self._retire(served, "unloaded")

    async def reload(self) -> None:
        """Re-read the repository (SIGHUP, and each poll): load what changed, unload what is gone."""
        if not self.source.from_repository:
            log.info("models given as files (--model) are not reloaded; serve a --model-repository to reload")
            return
        present = self.source.names()
        for name in self.options.reread_names(present, self.served.names()):
            try:
                await self.load(name, origin="repository re-read")
            except (LoadFailed, ModelNotFound) as exc:
                log.debug("%s", exc)  # logged where the version failed
        for name in [name for name in self.served.names() if name not in present]:
            await self.unload(name)

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def _load_wanted(
        self, folder: ModelFolder, wanted: list[str], current: dict[str, ServedVersion], origin: str, retry_failed: bool,
    ) -> tuple[dict[str, ServedVersion], list[str]]:
        """Load the wanted versions that are new or changed on disk; the loaded ones, and why others failed."""
        name = folder.name
        loaded: dict[str, ServedVersion] = {}
        failures: list[str] = []
        # Newest first: each new version is checked against the newest one callers use now.
        reference = current[max(current, key=version_order)].model if current else None
        for version in sorted(wanted, key=version_order, reverse=True):
            stamp = FileStamp.of(folder.versions[int(version)])
            served = current.get(version)
            if served is not None and served.stamp == stamp:
                continue
            if not retry_failed and self._failed.get((name, version), _NEVER_FAILED) == stamp:
                failures.append(f"version {version}: {self.states.get(name, version).reason}")
                continue  # unchanged since it failed: a re-read does not retry it
            self.states.set(name, version, LOADING)
            try:
                loaded[version] = await self._load_version(folder, version, stamp, reference)
            except (ModelLoadError, DeviceUnavailable) as exc:
                self._failed[(name, version)] = stamp
                self.states.set(name, version, UNAVAILABLE, str(exc))
                self._count_failure(name, version)
                log.error("model %s version %s was not loaded (%s): %s", name, version, origin, exc)
                if served is not None:
                    self.states.set(name, version, READY, f"its changed file failed to load, the loaded one serves: {exc}")
                failures.append(f"version {version}: {exc}")
                continue
            self._failed.pop((name, version), None)
        return loaded, failures

    async def _load_version(
        self, folder: ModelFolder, version: str, stamp: FileStamp | None, reference: Model | None,
    ) -> ServedVersion:
        batching = batching_for(folder.config, self.batching)
        instances = instances_for(folder.config, self.runtime.instances)
        runtime = dataclasses.replace(self.runtime, instances=instances)

        def load_and_warm() -> Model:
            model = self.source.load_version(folder, version, runtime)
            if reference is not None and version_order(reference.version) < version_order(version):
                check_replaces(model, reference)
            warm_up(model, batching.max_batch_size if model.batchable else 1)
            return model

        model = await asyncio.get_running_loop().run_in_executor(self._loader, load_and_warm)
        return ServedVersion(model, batching, instances, self.metrics, stamp)

    async def _swap(self, name: str, versions: dict[str, ServedVersion]) -> None:
        self.served.swap(name, versions)
        if self.on_serving is not None:
            await self.on_serving(name, bool(versions))

    async def _retire(self, served: ServedVersion, reason: str) -> None:
        name, version = served.model.name, served.model.version
        self.states.set(name, version, UNLOADING)
        await served.retire()
        self.states.set(name, version, UNAVAILABLE, reason)
        log.info("model %s version %s is unloaded (%s)", name, version, reason)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.options.poll_s)
            try:
                await self.reload()
            except Exception:
                log.exception("reading the model repository %s failed; polling goes on", self.source)

    def _count_failure(self, name: str, version: str) -> None:
        if self.metrics is not None:
            self.metrics.load_failed(name, version)


class ModelManager:
    """The served models as the data plane and the server use them: the table of served versions,
    the digits API's classifiers, the index and statistics, and the lifecycle, each its own part."""

    def __init__(
        self,
        source: ModelSource,
        runtime: RuntimeOptions,
        batching: BatchingOptions,
        metrics=None,
        options: LifecycleOptions = LifecycleOptions(),
        default_model: str = "",
        on_serving: Callable[[str, bool], Awaitable[None]] | None = None,
    ) -> None:
        states = ModelStates()
        self.table = ServedModels(states.explain_not_served)
        self.classifiers = DigitClassifiers(self.table, default_model)
        self.model_index = ModelIndex(self.table, states, source.names)
        self.lifecycle = ModelLifecycle(source, self.table, states, runtime, batching, metrics, options, on_serving)
        # What calls use: each holds the version it gets as `with manager.served(...) as served:`.
        self.served = self.table.served
        self.newest = self.table.newest
        self.versions = self.table.version_names
        self.classifier = self.classifiers.classifier
        self.index = self.model_index.index
        self.statistics = self.model_index.statistics
        self.all_statistics = self.model_index.all_statistics
        # What the server and the repository extension do.
        self.start = self.lifecycle.start
        self.reload = self.lifecycle.reload
        self.request_load = self.lifecycle.request_load
        self.request_unload = self.lifecycle.request_unload
        self.drain = self.lifecycle.drain
        self.close = self.lifecycle.close
