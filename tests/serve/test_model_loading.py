"""The lifecycle alone: versions from a fake source loaded, swapped in under a held lease, refused, and
re-read; the --model files as a source of one version each. No server, no network: tiny ONNX models."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from onnx_models import tagged_classifier

from contracts.errors import ModelNotFound
from contracts.model_card import PROBABILITIES_OUTPUT
from contracts.model_file import ModelLoadError, load_model
from contracts.repository_layout import ModelFolder
from contracts.sessions import RuntimeOptions
from serve.core.batching import BatchingOptions
from serve.core.control import LifecycleOptions
from serve.core.errors import LoadFailed, NotAllowed
from serve.core.lifecycle import ModelLifecycle
from serve.core.model_index import READY, UNAVAILABLE, UNLOADING, ModelStates
from serve.core.model_sources import ModelFiles
from serve.core.served_models import ServedModels

CPU = RuntimeOptions(device="cpu", instances=1)
BATCHING = BatchingOptions(max_batch_size=8, max_delay_ms=0.0)
PIXELS = np.zeros((1, 1, 28, 28), np.float32)


class FakeSource:
    """A repository held in a dict: name -> version -> model file; counts the loads it is asked for."""

    from_repository = True
    remedy = "fix the fake"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.versions: dict[str, dict[int, Path]] = defaultdict(dict)
        self.loads: list[tuple[str, str]] = []

    def add(self, name: str, version: int, tag: int | None = None) -> Path:
        path = tagged_classifier(self.folder / name / str(version) / "model.onnx", version if tag is None else tag, name=name)
        self.versions[name][version] = path
        return path

    def check(self) -> None:
        pass

    def names(self) -> list[str]:
        return sorted(name for name, versions in self.versions.items() if versions)

    def read(self, name: str) -> ModelFolder:
        if name not in self.names():
            raise ModelNotFound(f"no model {name!r}")
        return ModelFolder(name, self.folder / name, None, "", dict(self.versions[name]))

    def load_version(self, folder: ModelFolder, version: str, runtime: RuntimeOptions):
        self.loads.append((folder.name, version))
        return load_model(folder.versions[int(version)], runtime, name=folder.name, version=version)


class WatchedStates(ModelStates):
    """The states, with an event for each (name, version, state) once it has been recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.reached: dict[tuple[str, str, str], asyncio.Event] = defaultdict(asyncio.Event)

    def set(self, name: str, version: str, state: str, reason: str = "") -> None:
        super().set(name, version, state, reason)
        self.reached[(name, version, state)].set()


def lifecycle_of(source, mode: str = "none", **options) -> tuple[ModelLifecycle, ServedModels, WatchedStates, list]:
    states = WatchedStates()
    table = ServedModels(states.explain_not_served)
    serving: list[tuple[str, bool]] = []

    async def on_serving(name: str, now_serving: bool) -> None:
        serving.append((name, now_serving))

    lifecycle = ModelLifecycle(source, table, states, CPU, BATCHING, options=LifecycleOptions(mode, **options),
                               on_serving=on_serving)
    return lifecycle, table, states, serving


async def digit_of(served) -> int:
    outputs = await served.runner.infer({"pixels": PIXELS})
    return int(outputs[served.model.output_index(PROBABILITIES_OUTPUT)].argmax())


def test_a_call_holding_the_old_version_is_answered_by_it_and_the_old_version_retires_after(tmp_path):
    async def scenario() -> None:
        source = FakeSource(tmp_path)
        source.add("digits", 1)
        lifecycle, table, states, serving = lifecycle_of(source)
        await lifecycle.start()
        try:
            with table.served("digits") as held:
                source.add("digits", 2)
                load = asyncio.create_task(lifecycle.load("digits"))
                await states.reached[("digits", "1", UNLOADING)].wait()
                # Swapped: new calls get version 2, while version 1 waits for the call holding it.
                assert table.served("digits").model.version == "2" and not load.done()
                assert await digit_of(held) == 1
                assert await digit_of(table.served("digits")) == 2
            await load
            assert states.get("digits", "1").state == UNAVAILABLE
            assert states.get("digits", "1").reason == "version 2 replaced it"
            assert table.version_names("digits") == ["2"] and serving == [("digits", True)] * 2
        finally:
            await lifecycle.close()

    asyncio.run(scenario())


def test_a_refused_version_leaves_the_one_before_serving_and_is_retried_only_when_asked_or_changed(tmp_path):
    async def scenario() -> None:
        source = FakeSource(tmp_path)
        source.add("digits", 1)
        lifecycle, table, states, _ = lifecycle_of(source, "explicit", startup_models=("*",))
        await lifecycle.start()
        try:
            broken = source.add("digits", 2)
            broken.write_bytes(broken.read_bytes()[:200])
            with pytest.raises(LoadFailed, match=r"version 2: .*not a loadable ONNX model.*Versions serving now: 1"):
                await lifecycle.load("digits")
            assert table.version_names("digits") == ["1"] and states.get("digits", "2").state == UNAVAILABLE
            loads = len(source.loads)
            await lifecycle.reload()  # a re-read does not retry an unchanged broken file...
            with pytest.raises(LoadFailed, match="not a loadable ONNX model"):
                await lifecycle.load("digits")  # (and says why it failed before)
            assert len(source.loads) == loads and states.get("digits", "2").state == UNAVAILABLE
            with pytest.raises(LoadFailed):
                await lifecycle.request_load("digits")  # ...a load request does
            assert len(source.loads) == loads + 1
            source.add("digits", 2)  # fixed in place
            await lifecycle.reload()
            assert table.version_names("digits") == ["2"] and states.get("digits", "2").state == READY
        finally:
            await lifecycle.close()

    asyncio.run(scenario())


def test_a_re_read_unloads_the_models_gone_from_the_source(tmp_path):
    async def scenario() -> None:
        source = FakeSource(tmp_path)
        source.add("digits", 1)
        source.add("other", 1, tag=7)
        lifecycle, table, states, serving = lifecycle_of(source)
        await lifecycle.start()
        try:
            del source.versions["other"]
            await lifecycle.reload()
            assert table.names() == ["digits"] and serving[-1] == ("other", False)
            assert (states.get("other", "1").state, states.get("other", "1").reason) == (UNAVAILABLE, "unloaded")
        finally:
            await lifecycle.close()

    asyncio.run(scenario())


def test_a_source_that_cannot_be_read_unloads_nothing(tmp_path):
    class Unmounted(FakeSource):
        readable = True

        def names(self) -> list[str]:
            if not self.readable:
                raise FileNotFoundError(self.folder)
            return super().names()

    async def scenario() -> None:
        source = Unmounted(tmp_path)
        source.add("digits", 1)
        lifecycle, table, _, _ = lifecycle_of(source)
        await lifecycle.start()
        try:
            source.readable = False
            with pytest.raises(FileNotFoundError):
                await lifecycle.reload()  # the poller logs it and polls on
            assert table.version_names("digits") == ["1"]
        finally:
            await lifecycle.close()

    asyncio.run(scenario())


def test_model_files_are_served_as_version_1_and_never_reloaded(tmp_path):
    files = ModelFiles.load([tagged_classifier(tmp_path / "seven.onnx", 7, name="seven")], CPU)

    async def scenario() -> None:
        lifecycle, table, states, _ = lifecycle_of(files)
        await lifecycle.start()
        try:
            assert table.version_names("seven") == ["1"] and states.get("seven", "1").state == READY
            assert await digit_of(table.served("seven")) == 7
            await lifecycle.reload()  # nothing to re-read
            assert table.version_names("seven") == ["1"]
            with pytest.raises(NotAllowed, match="given as files"):
                await lifecycle.request_unload("seven")
        finally:
            await lifecycle.close()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="need a --model-repository"):
        lifecycle_of(files, "poll")


def test_two_model_files_of_one_name_are_refused(tmp_path):
    first = load_model(tagged_classifier(tmp_path / "a.onnx", 1, name="digits"), CPU)
    second = load_model(tagged_classifier(tmp_path / "b.onnx", 2, name="digits"), CPU)
    with pytest.raises(ModelLoadError, match=r"two models are named 'digits': .*a\.onnx and .*b\.onnx"):
        ModelFiles([first, second])
