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


def shared_run_dir(args: list[str], pattern: str = "runs/${experiment_name}/%Y-%m-%d_%H-%M-%S") -> list[str]:
    """Under `accelerate launch` / torchrun, every rank must pick the same timestamped run dir: stamp it from the
    launcher's start time (unless the user set hydra.run.dir, or this is a sweep)."""
    stamp = launch_timestamp()
    if stamp is None or any(a.startswith("hydra.run.dir=") or a in ("-m", "--multirun") for a in args):
        return args
    import datetime

    # The launcher's pid stands in for run_stamp's random suffix: the same on every rank, unlike a random one.
    when = datetime.datetime.fromtimestamp(stamp).strftime(pattern)
    return [*args, f"hydra.run.dir={when}-{os.getppid() % 65536:04x}"]
