"""Run under torchrun by tests/test_distributed.py: every evaluation metric through the library, on the
shards of all ranks, with rank 0 writing the tables as JSON for the test to compare with one process.

    torchrun --nproc-per-node 2 tests/distributed_worker.py CHECKPOINT DATA OUT.json
"""

from __future__ import annotations

import json
import sys

import torch

from hahrobust import distributed
from hahrobust.attacks import PGDConfig, run_attack
from hahrobust.checkpoint import load_checkpoint
from hahrobust.data import load_cifar10
from hahrobust.metrics import noise_accuracy, snr, sparsity

#: The settings both sides use (one process in the test, N processes here); batch sizes leave uneven shards.
SETTINGS = {"batch_size": 30, "sigmas": [0.0, 0.05, 0.2], "repeats": 2, "seed": 3}
PGD = PGDConfig(steps=5, restarts=2)


def tables(checkpoint: str, data: str) -> dict[str, dict[str, list]]:
    """Every metric's table as lists per column, which JSON round-trips exactly (the attack without its
    wall-clock column)."""
    model, _ = load_checkpoint(checkpoint, "cpu")
    test = load_cifar10(data, "test")
    b, seed = SETTINGS["batch_size"], SETTINGS["seed"]
    frames = {
        "noise": noise_accuracy(model, test, SETTINGS["sigmas"], repeats=SETTINGS["repeats"], seed=seed, batch_size=b),
        "snr": snr(model, test, 0.1, repeats=SETTINGS["repeats"], seed=seed, batch_size=b),
        "sparsity": sparsity(model, test, batch_size=b),
        "pgd": run_attack(model, test, attack="pgd", norm="linf", eps=[2 / 255, 8 / 255], batch_size=b, seed=seed,
                          config=PGD).drop(columns="seconds"),
    }
    return {name: frame.to_dict(orient="list") for name, frame in frames.items()}


def main() -> None:
    checkpoint, data, out = sys.argv[1:]
    torch.set_num_threads(1)
    shard = distributed.init_from_env()
    result = tables(checkpoint, data)
    if shard.is_main:
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"world_size": shard.world_size, "tables": result}, f)
    distributed.shutdown()


if __name__ == "__main__":
    main()
