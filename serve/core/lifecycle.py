"""The served models' lifecycle: versions loaded, warmed up and swapped in while serving, and drained out.

Every served version has its own runner (batcher, inference threads) and statistics. A call takes
a lease on the version that is current when it arrives and keeps it until it is answered; so a
swap is one assignment on the event loop: calls already queued finish on the old version, new
calls go to the new one, and the old version's runner is closed only once its last lease is
returned (which is also how unloading drains a model's queue). Loading happens on a loader
thread, so no call waits for it; a version that fails to load, to agree with its card or with the
version it replaces, or to warm up, is refused and reported (index state and reason, log line,
metric) while the version before it keeps serving.

Control modes, as Triton's: `none` loads the repository at start-up and never again (SIGHUP
re-reads it); `poll` also re-reads it every few seconds; `explicit` loads only what it is told to
(at start-up, --load-model; then the repository extension's load and unload).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from contracts.errors import InvalidInput, ModelNotFound
from contracts.model_config import describe_policy, instances_for
from contracts.model_file import Model, ModelLoadError, load_model
from contracts.repository_layout import (
    FileStamp,
    ModelFolder,
    model_names,
    read_model_folder,
)
from contracts.sessions import DeviceUnavailable, RuntimeOptions
from serve.core.batching import BatchingOptions, batching_for
from serve.core.errors import LoadFailed, NotAllowed, Unavailable
from serve.core.runner import ModelRunner
from serve.core.statistics import VersionStatistics
from serve.core.warmup import warm_up

log = logging.getLogger(__name__)

CONTROL_MODES = ("none", "poll", "explicit")
# Triton's model states, as the repository index reports them.
READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"
ALL_MODELS = "*"
_NEVER_FAILED = object()  # not a stamp (a missing file's stamp is None)


@dataclass(frozen=True)
class LifecycleOptions:
    control_mode: str = "none"
    # Seconds between two reads of the repository in poll mode.
    poll_s: float = 15.0
    # Models loaded at start-up in explicit mode ("*": every model of the repository).
    startup_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(f"model control mode must be one of {', '.join(CONTROL_MODES)}, got {self.control_mode!r}")
        if self.poll_s <= 0:
            raise ValueError(f"the repository poll interval must be > 0 seconds, got {self.poll_s:g}")
        if self.startup_models and self.control_mode != "explicit":
            raise ValueError("--load-model names the models to load in explicit mode; use --model-control-mode explicit")


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str = ""


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


def _version_order(version: str) -> int:
    return int(version) if version.isdigit() else 0


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


class ModelManager:
    def __init__(
        self,
        runtime: RuntimeOptions,
        batching: BatchingOptions,
        metrics=None,
        repository_root: Path | None = None,
        options: LifecycleOptions = LifecycleOptions(),
        on_serving: Callable[[str, bool], Awaitable[None]] | None = None,
    ) -> None:
        """`on_serving(name, serving)` is told when a model starts or stops being served (health checks)."""
        if repository_root is None and options.control_mode != "none":
            raise ValueError("--model-control-mode poll and explicit need a --model-repository to load from")
        self.runtime = runtime
        self.batching = batching
        self.metrics = metrics
        self.root = Path(repository_root) if repository_root is not None else None
        self.options = options
        self.on_serving = on_serving
        # name -> version -> what serves it; a name's dict is replaced whole (never edited) on a swap.
        self._served: dict[str, dict[str, ServedVersion]] = {}
        self._states: dict[str, dict[str, IndexEntry]] = {}
        # Stamps of versions that failed, so that polling does not retry an unchanged broken file.
        self._failed: dict[tuple[str, str], FileStamp | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._poller: asyncio.Task | None = None
        self._closed = False

    # Start and stop
    async def start(self, models: Sequence[Model] = ()) -> None:
        """Serve `models` (files given alone, version 1) and what the control mode loads from the repository."""
        for model in models:
            served = await self._prepare_loaded(model)
            self._served[model.name] = {model.version: served}
            self._set_state(model.name, model.version, READY)
        if self.root is None:
            return
        if not self.root.is_dir():
            raise ModelLoadError(f"the model repository {self.root} is not a folder")
        if self.options.control_mode == "explicit":
            names = self.options.startup_models
            if ALL_MODELS in names:
                names = tuple(model_names(self.root))
        else:
            names = tuple(model_names(self.root))
        for name in names:
            try:
                await self.load(name, origin="start-up")
            except (LoadFailed, ModelNotFound) as exc:
                # As Triton (--exit-on-error): a server that starts is serving all it was given.
                raise ModelLoadError(f"{exc}; fix the repository, or leave the model out of it") from exc
        if self.options.control_mode == "poll":
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="repository-poll")

    def drain(self) -> None:
        for versions in self._served.values():
            for served in versions.values():
                served.runner.drain()

    async def close(self) -> None:
        """Stop polling, answer what is queued, stop every runner."""
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for versions in self._served.values():
            for served in versions.values():
                await served.runner.close()
        self._loader.shutdown(wait=False, cancel_futures=True)

    # What calls use
    def served(self, name: str, version: str = "") -> ServedVersion:
        """The version a call uses: the one named, or the newest served. A call holds it with
        `with manager.served(...) as served:`, so that it is not closed until the call is answered."""
        versions = self._served.get(name)
        if not versions:
            raise ModelNotFound(self._not_served(name))
        if not version:
            # Kept in version order by _swap: the newest is the last.
            return next(reversed(versions.values()))
        served = versions.get(version)
        if served is None:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} being served; it serves version(s) "
                f"{', '.join(sorted(versions, key=_version_order))}"
            )
        return served

    def _not_served(self, name: str) -> str:
        entries = self._states.get(name)
        served = ", ".join(self._served) or "no models"
        if entries:
            reasons = "; ".join(f"version {e.version}: {e.state}{' (' + e.reason + ')' if e.reason else ''}"
                                for e in entries.values())
            return f"model {name!r} is not being served ({reasons}); this server serves: {served}"
        return f"unknown model {name!r}; this server has: {served}"


    def newest(self) -> list[ServedVersion]:
        """The newest served version of every model, in the order they were loaded."""
        return [self.served(name) for name, versions in self._served.items() if versions]

    def versions(self, name: str) -> list[str]:
        self.served(name)  # NOT_FOUND for a model not served
        return sorted(self._served[name], key=_version_order)

    def default_classifier(self) -> ServedVersion | None:
        """The digits API's default: the first classifier that is not a variant (lenet before lenet.int8)."""
        classifiers = [served for served in self.newest() if served.model.classifies_images]
        # A folder lists "lenet.int8.onnx" before "lenet.onnx": prefer a model over its variants
        # (export names those NAME.opt and NAME.int8), then the order the models were given in.
        classifiers.sort(key=lambda served: "." in served.model.name)
        return classifiers[0] if classifiers else None

    def classifier(self, name: str, version: str = "") -> ServedVersion:
        if not name:
            served = self.default_classifier()
            if served is None:
                raise ModelNotFound(
                    "this server has no digit classifier with a model card; use the KServe v2 API for its models: "
                    + (", ".join(self._served) or "none loaded")
                )
            if version and version != served.model.version:
                return self.served(served.model.name, version)
            return served
        served = self.served(name, version)
        model = served.model
        if not model.classifies_images:
            kind = "a third-party model without a model card" if model.card is None else f"a {model.task} model"
            raise InvalidInput(
                f"model {name!r} is {kind}, not a digit classifier: use it through the KServe v2 API (ModelInfer)"
            )
        return served

    def statistics(self, name: str = "", version: str = "") -> list[VersionStatistics]:
        if not name:
            if version:
                raise InvalidInput("a statistics request that names a version must name its model too")
            return [served.statistics for versions in self._served.values() for served in versions.values()]
        if version:
            return [self.served(name, version).statistics]
        self.served(name)
        return [served.statistics for served in self._served[name].values()]

    def all_statistics(self) -> list[VersionStatistics]:
        return [served.statistics for versions in list(self._served.values()) for served in list(versions.values())]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model of the repository (and every model served) with its versions' states."""
        names = list(self._served) + [name for name in self._states if name not in self._served]
        if self.root is not None and self.root.is_dir():
            names += [name for name in model_names(self.root) if name not in names]
        entries = []
        for name in sorted(names):
            states = self._states.get(name)
            if not states:
                if not ready_only:
                    entries.append(IndexEntry(name, "", UNAVAILABLE, "not loaded"))
                continue
            for version in sorted(states, key=_version_order):
                entry = states[version]
                if not ready_only or entry.state == READY:
                    entries.append(entry)
        return entries

    # Loading and unloading
    def _check_control(self, action: str) -> None:
        if self.root is None:
            raise NotAllowed(
                f"cannot {action} models: they were given as files (--model); serve a --model-repository "
                "with --model-control-mode explicit to load and unload them while serving"
            )
        if self.options.control_mode != "explicit":
            raise NotAllowed(
                f"cannot {action} models: the server runs with --model-control-mode {self.options.control_mode}, "
                "where the repository decides what is served; restart it with --model-control-mode explicit"
            )

    async def request_load(self, name: str) -> None:
        """The repository extension's load: (re)load the model from the repository."""
        self._check_control("load")
        await self.load(name, origin="load request", retry_failed=True)

    async def request_unload(self, name: str) -> None:
        self._check_control("unload")
        await self.unload(name)

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def _set_state(self, name: str, version: str, state: str, reason: str = "") -> None:
        self._states.setdefault(name, {})[version] = IndexEntry(name, version, state, reason)

    async def load(self, name: str, origin: str = "reload", retry_failed: bool = False) -> None:
        """Bring the model's served versions in line with the repository; LoadFailed when a version fails.

        New and changed versions are loaded and warmed up (in the loader thread), then swapped in
        together; versions the policy no longer wants are retired. When any version fails, nothing
        already served is retired.
        """
        if self._closed:
            raise Unavailable("the server is shutting down")
        async with self._lock(name):
            folder = read_model_folder(self.root, name)
            if folder.config_error:
                self._set_state(name, "", UNAVAILABLE, folder.config_error)
                self._count_failure(name, "")
                raise LoadFailed(f"model {name}: {folder.config_error}; the versions served before stay")
            self._states.get(name, {}).pop("", None)
            wanted = [str(number) for number in folder.wanted_versions()]
            if not wanted:
                raise LoadFailed(
                    f"model {name}: no version folder fits its version policy ({describe_policy(folder.config)}); "
                    f"add {folder.path}/1/model.onnx"
                )
            current = dict(self._served.get(name, {}))
            loaded, failures = await self._load_wanted(folder, wanted, current, origin, retry_failed)
            keep = current if failures else {v: s for v, s in current.items() if v in wanted}
            swapped = {**keep, **loaded}
            retired = [s for v, s in current.items() if swapped.get(v) is not s]
            if loaded or retired:
                await self._swap(name, swapped)
            for served in loaded.values():
                self._set_state(name, served.model.version, READY)
                log.info("model %s version %s is serving (%s)", name, served.model.version, origin)
            newest = max(swapped, key=_version_order) if swapped else ""
            for served in retired:
                await self._retire(served, f"version {newest} replaced it" if newest else "unloaded")
            if failures:
                serving = ", ".join(sorted(swapped, key=_version_order)) or "none"
                raise LoadFailed(
                    f"model {name}: " + "; ".join(failures) + f". Versions serving now: {serving}"
                )

    async def _load_wanted(
        self, folder: ModelFolder, wanted: list[str], current: dict[str, ServedVersion], origin: str, retry_failed: bool,
    ) -> tuple[dict[str, ServedVersion], list[str]]:
        """Load the wanted versions that are new or changed on disk; the loaded ones, and why others failed."""
        name = folder.name
        loaded: dict[str, ServedVersion] = {}
        failures: list[str] = []
        # Newest first: each new version is checked against the newest one callers use now.
        reference = self._newest_model(current)
        for version in sorted(wanted, key=_version_order, reverse=True):
            path = folder.versions[int(version)]
            stamp = FileStamp.of(path)
            served = current.get(version)
            if served is not None and served.stamp == stamp:
                continue
            if not retry_failed and self._failed.get((name, version), _NEVER_FAILED) == stamp:
                failures.append(f"version {version}: {self._states[name][version].reason}")
                continue  # unchanged since it failed: polling does not retry it
            self._set_state(name, version, LOADING)
            try:
                loaded[version] = await self._load_version(folder, version, path, stamp, reference)
            except (ModelLoadError, DeviceUnavailable) as exc:
                self._failed[(name, version)] = stamp
                self._set_state(name, version, UNAVAILABLE, str(exc))
                self._count_failure(name, version)
                log.error("model %s version %s was not loaded (%s): %s", name, version, origin, exc)
                if served is not None:
                    self._set_state(name, version, READY, f"its changed file failed to load, the loaded one serves: {exc}")
                failures.append(f"version {version}: {exc}")
                continue
            self._failed.pop((name, version), None)
        return loaded, failures

    def _newest_model(self, versions: dict[str, ServedVersion]) -> Model | None:
        if not versions:
            return None
        return versions[max(versions, key=_version_order)].model

    async def _load_version(
        self, folder: ModelFolder, version: str, path: Path, stamp: FileStamp | None, reference: Model | None,
    ) -> ServedVersion:
        batching = batching_for(folder.config, self.batching)
        instances = instances_for(folder.config, self.runtime.instances)
        runtime = dataclasses.replace(self.runtime, instances=instances)
        loop = asyncio.get_running_loop()

        def load_and_warm() -> Model:
            model = load_model(path, runtime, name=folder.name, version=version)
            if reference is not None and _version_order(reference.version) < _version_order(version):
                check_replaces(model, reference)
            warm_up(model, batching.max_batch_size if model.batchable else 1)
            return model

        model = await loop.run_in_executor(self._loader, load_and_warm)
        return ServedVersion(model, batching, instances, self.metrics, stamp)

    async def _prepare_loaded(self, model: Model) -> ServedVersion:
        """A model loaded before start (a file given alone), warmed up like any other."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._loader, warm_up, model, self.batching.max_batch_size if model.batchable else 1)
        return ServedVersion(model, self.batching, self.runtime.instances, self.metrics, None)

    async def _swap(self, name: str, versions: dict[str, ServedVersion]) -> None:
        # One assignment on the event loop: a call looks the version up either before it or after it.
        if versions:
            self._served[name] = dict(sorted(versions.items(), key=lambda item: _version_order(item[0])))
        else:
            self._served.pop(name, None)
        if self.on_serving is not None:
            await self.on_serving(name, bool(versions))

    async def _retire(self, served: ServedVersion, reason: str) -> None:
        name, version = served.model.name, served.model.version
        self._set_state(name, version, UNLOADING)
        await served.retire()
        self._set_state(name, version, UNAVAILABLE, reason)
        log.info("model %s version %s is unloaded (%s)", name, version, reason)

    async def unload(self, name: str) -> None:
        """Stop serving every version of the model, once the calls it has queued are answered."""
        async with self._lock(name):
            versions = self._served.get(name)
            if not versions:
                raise ModelNotFound(self._not_served(name))
            await self._swap(name, {})
            for served in versions.values():
                await self._retire(served, "unloaded")

    async def reload(self) -> None:
        """Re-read the repository (SIGHUP, and each poll): load what changed, unload what is gone."""
        if self.root is None:
            log.info("models given as files (--model) are not reloaded; serve a --model-repository to reload")
            return
        present = model_names(self.root)
        if self.options.control_mode == "explicit":
            names = [name for name in self._served if name in present]
        else:
            names = present
        for name in names:
            try:
                await self.load(name, origin="repository re-read")
            except (LoadFailed, ModelNotFound) as exc:
                log.debug("%s", exc)  # logged where the version failed
        for name in [name for name in self._served if name not in present and self._served[name]]:
            if any(served.stamp is not None for served in self._served[name].values()):
                await self.unload(name)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.options.poll_s)
            try:
                await self.reload()
            except Exception:
                log.exception("reading the model repository %s failed; polling goes on", self.root)

    def _count_failure(self, name: str, version: str) -> None:
        if self.metrics is not None:
            self.metrics.load_failed(name, version)
