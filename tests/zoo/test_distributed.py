"""torchrun and DDP: the process topology, devices per local rank, shards, and a real 2-process CPU run."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zoo import distributed
from zoo.checkpoint import load_checkpoint
from zoo.data import DigitSplit
from zoo.distributed import DistributedSetupError, Topology
from zoo.train import main

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")


def _env(rank: int, local_rank: int, world_size: int) -> dict[str, str]:
    return {"RANK": str(rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world_size)}


def test_without_torchrun_a_run_is_one_process():
    topology = distributed.topology_from_env({"PATH": "/usr/bin"})
    assert topology == Topology(0, 0, 1)
    assert not topology.distributed and topology.is_main


def test_torchrun_variables_give_the_rank_and_world():
    topology = distributed.topology_from_env(_env(3, 1, 4))
    assert (topology.rank, topology.local_rank, topology.world_size) == (3, 1, 4)
    assert topology.distributed and not topology.is_main


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"RANK": "0", "WORLD_SIZE": "2"}, "LOCAL_RANK missing"),
        ({**_env(0, 0, 2), "RANK": "zero"}, "must be integers"),
        (_env(2, 0, 2), "inconsistent"),
        (_env(0, -1, 2), "inconsistent"),
    ],
)
def test_broken_torchrun_variables_are_named(environ, message):
    with pytest.raises(DistributedSetupError, match=message):
        distributed.topology_from_env(environ)


def test_nccl_between_gpus_gloo_between_cpu_processes():
    assert distributed.backend_for("cuda") == "nccl"
    assert distributed.backend_for("cpu") == "gloo"


def test_each_process_takes_the_gpu_of_its_local_rank():
    # Two machines of two GPUs: global rank 3 is the second process of the second machine.
    assert distributed.device_for("cuda", Topology(3, 1, 4), cuda_devices=2) == torch.device("cuda", 1)
    assert distributed.device_for("cuda", Topology(0, 0, 4), cuda_devices=2) == torch.device("cuda", 0)
    assert distributed.device_for("cuda", Topology(), cuda_devices=1) == torch.device("cuda")
    assert distributed.device_for("cpu", Topology(3, 1, 4), cuda_devices=2) == torch.device("cpu")


def test_more_processes_than_gpus_is_refused_with_the_fix():
    with pytest.raises(DistributedSetupError, match="--nproc-per-node 2"):
        distributed.device_for("cuda", Topology(2, 2, 3), cuda_devices=2)


def test_a_gpu_process_binds_its_gpu_before_joining_over_nccl(monkeypatch):
    # No GPU here: the calls torch would make are recorded instead, in the order they are made.
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, rank, world_size: calls.append(("init", backend, rank, world_size)))
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append(("barrier",)))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    topology = Topology(3, 1, 4)
    device = distributed.device_for("cuda", topology, cuda_devices=2)
    with distributed.process_group(topology, device):
        calls.append(("train",))
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl", 3, 4), ("train",), ("barrier",),
                     ("destroy",)]


def test_a_gpu_replica_is_placed_on_its_local_rank(monkeypatch):
    placed = {}

    def record(model, device_ids=None):
        placed.update(model=model, device_ids=device_ids)
        return model

    monkeypatch.setattr(distributed, "DistributedDataParallel", record)
    model = torch.nn.Linear(2, 2)
    distributed.data_parallel(model, torch.device("cuda", 1), Topology(3, 1, 4))
    assert placed == {"model": model, "device_ids": [1]}
    distributed.data_parallel(model, torch.device("cpu"), Topology(1, 1, 2))
    assert placed["device_ids"] is None  # CPU modules take no device ids
    assert distributed.data_parallel(model, torch.device("cpu"), Topology()) is model


def test_shards_are_disjoint_equal_and_leave_out_less_than_one_per_rank():
    count, world_size = 11, 3
    images = torch.arange(count, dtype=torch.uint8).reshape(count, 1, 1).expand(count, 28, 28).contiguous()
    split = DigitSplit(images, torch.arange(count) % 10, "mnist", [str(d) for d in range(10)])
    shards = [distributed.shard(split, Topology(rank, rank, world_size)) for rank in range(world_size)]
    assert [len(part) for part in shards] == [3, 3, 3]
    seen = [int(image[0, 0]) for part in shards for image in part.images]
    assert len(set(seen)) == len(seen) == 9
    for part in shards:
        assert torch.equal(part.labels, part.images[:, 0, 0].to(torch.int64) % 10)  # images keep their labels
    assert distributed.shard(split, Topology()) is split


def test_the_global_batch_splits_evenly_over_processes():
    assert distributed.per_process_batch_size(128, Topology(0, 0, 2)) == 64
    assert distributed.per_process_batch_size(128, Topology()) == 128
    with pytest.raises(ValueError, match="multiple of 3"):
        distributed.per_process_batch_size(100, Topology(0, 0, 3))


@pytest.mark.parametrize(
    "args, message",
    [
        (["lenet", "--batch-size", "33"], "multiple of 2"),
        (["edge"], "without torchrun"),
    ],
)
def test_bad_distributed_runs_exit_2_before_joining(args, message, monkeypatch, capsys):
    for name, value in _env(0, 0, 2).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_torchrun_two_cpu_processes_learn_in_sync_and_write_one_checkpoint(tmp_path, mnist_root):
    out, params = tmp_path / "run", tmp_path / "params"
    params.mkdir()
    train_images, batch_size, epochs = 3200, 64, 2
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER), str(params),
        "lenet-modern", "--device", "cpu", "--data-dir", str(mnist_root), "--dataset", "mnist", "--no-download",
        "--out", str(out), "--epochs", str(epochs), "--batch-size", str(batch_size),
        "--train-limit", str(train_images), "--test-limit", "1000",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-4000:]

    # One set of files, written by rank 0 alone.
    pictures = {"curves.png", "confusion.png", "misclassified.png", "filters.png", "risk_coverage.png"}
    assert {path.name for path in out.iterdir()} == {"checkpoint.pt", "metrics.json", *pictures}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["train_images"] == train_images

    # The recipe's meaning: the global batch, so as many steps an epoch as one process takes.
    steps_per_epoch = math.ceil(train_images / batch_size)
    assert [entry["steps"] for entry in metrics["epochs"]] == [steps_per_epoch, 2 * steps_per_epoch]
    assert all(entry["train_images"] == train_images for entry in metrics["epochs"])

    # Learning happened (chance is 10%).
    assert metrics["epochs"][1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    assert metrics["test_accuracy"] > 0.8

    # Both ranks hold bit-identical weights, and the checkpoint holds them.
    rank0, rank1 = (torch.load(params / f"rank-{rank}.pt", weights_only=True) for rank in (0, 1))
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert set(rank0) == set(rank1) == set(checkpoint.state_dict)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.equal(rank0[name], checkpoint.state_dict[name]), name
    assert checkpoint.meta["recipe"]["processes"] == 2 and checkpoint.meta["recipe"]["batch_size"] == batch_size
    assert "parameters identical on every rank" in result.stderr
    print(f"2 CPU processes: test accuracy {metrics['test_accuracy']:.4f} after "
          f"{metrics['epochs'][-1]['steps']} steps, {metrics['total_seconds']:.1f} s training, {seconds:.1f} s in all")
