"""Started by torchrun in test_distributed.py: `python -m zoo.train`'s main(), then each rank saves its weights.

The run's checkpoint holds rank 0's weights only. To see that every rank ended with the same ones,
each rank writes what its own model holds to PARAMS_DIR/rank-R.pt, a folder apart from the run's.

    torchrun --standalone --nproc-per-node N tests/zoo/distributed_worker.py PARAMS_DIR NAME [zoo.train flags]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import zoo.train as train_module


def main() -> int:
    params_dir, argv = Path(sys.argv[1]), sys.argv[2:]
    models = []
    build_model = train_module.build_model

    def build_and_keep(*args, **kwargs):
        model = build_model(*args, **kwargs)
        models.append(model)
        return model

    train_module.build_model = build_and_keep
    code = train_module.main(argv)
    state = {name: tensor.detach().cpu() for name, tensor in models[0].state_dict().items()}
    torch.save(state, params_dir / f"rank-{os.environ['RANK']}.pt")
    return code


if __name__ == "__main__":
    sys.exit(main())
