"""Process-rank helpers that work before and without torch.distributed being initialised."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a cache); the others wait, then reuse its result."""
    if world_size() <= 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def launch_timestamp() -> float | None:
    """Start time of the launcher that spawned this rank (the same on every rank), so that all ranks of one
    `accelerate launch` / `torchrun` agree on one timestamped run directory."""
    if world_size() <= 1:
        return None
    import psutil

    return psutil.Process(os.getppid()).create_time()
