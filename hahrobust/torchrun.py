"""Whether torchrun started this process, read from its environment without importing torch: ``hahrobust check``
and ``--help`` decide whether to join a process group (:mod:`hahrobust.distributed`, torch) from this alone."""

import os


def launched_by_torchrun() -> bool:
    """torchrun sets WORLD_SIZE in every process it starts; one process is no group."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
