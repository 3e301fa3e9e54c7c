"""Process-rank helpers that work before and without torch.distributed being initialised, and the hand-over from
the process that launches ranks (`hfx train launch=ddp ...`) to them."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


# Set in every process that torchrun / `accelerate launch` starts (accelerate's single-process launch sets only the
# last): such a process is a rank and must not launch again.
LAUNCHER_ENV = ("LOCAL_RANK", "WORLD_SIZE", "RANK", "ACCELERATE_MIXED_PRECISION")


def under_launcher() -> bool:
    return any(name in os.environ for name in LAUNCHER_ENV)


# The resolved config (JSON) of the process that ran `hfx train launch=...`, for the ranks it starts. An environment
# variable rather than a file: it holds the secrets (API keys, tokens) that no file a run writes may hold.
FROZEN_CONFIG_ENV = "HFX_LAUNCH_CONFIG"


def run_child(command: list[str], env: dict[str, str]) -> int:
    """The launcher as a child process. SIGTERM to hfx goes on to it (its ranks save a checkpoint and stop);
    Ctrl-C reaches every process of the terminal's group by itself, so here it only must not end the wait."""
    import signal
    import subprocess

    child = subprocess.Popen(command, env=env)

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
                    signal.SIGINT: signal.signal(signal.SIGINT, lambda signum, frame: None)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def frozen_config(cfg: Any) -> Any:
    """In a rank that hfx launched: the launching process's resolved config, typed again (so every rank has the
    same run directory and `${now:...}` values); otherwise cfg."""
    text = os.environ.get(FROZEN_CONFIG_ENV)
    if text is None or not under_launcher():
        return cfg
    from hfx.config.store import typed_train_config

    return typed_train_config(json.loads(text), "the launching process's config")


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a cache); the others wait, then reuse its result."""
    if world_size() <= 1:
        yield
        return
    with process_state().main_process_first():
        yield


def process_state() -> Any:
    """accelerate's PartialState, set up for this launch. On a machine without an accelerator it must be told
    `cpu=True`: a bare PartialState() there resolves to ONE process even under a 2-rank launch (every rank is its
    own "main process", so main_process_first never waits and each rank tokenized on its own)."""
    import torch
    from accelerate import PartialState

    accelerated = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return PartialState(cpu=not accelerated)


def process_group() -> tuple[int, int]:
    """(world size, rank) of the initialised torch.distributed group; (1, 0) without one."""
    import torch

    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(), dist.get_rank()


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
