"""Experiment loggers: `report_to` for the Trainer plus what each needs set up (W&B run with the resolved config)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hfx.registry import Registry

log = logging.getLogger("hfx")

LOGGERS: Registry[Callable[[DictConfig, Path, dict[str, Any]], list[str]]] = Registry("logger")


def setup_logger(cfg: DictConfig, run_dir: Path, resolved: dict[str, Any], main_process: bool) -> list[str]:
    """Returns the Trainer's `report_to`. Only rank 0 logs."""
    factory = LOGGERS.get(cfg.logger.name)
    return factory(cfg, run_dir, resolved) if main_process else []


@LOGGERS.register("none")
def no_logger(cfg: DictConfig, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    return []


@LOGGERS.register("tensorboard")
def tensorboard(cfg: DictConfig, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    # transformers 5 has no logging_dir argument; the TensorBoard callback reads this variable.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    return ["tensorboard"]


@LOGGERS.register("wandb")
def wandb_logger(cfg: DictConfig, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    import wandb

    lcfg = cfg.logger
    mode = lcfg.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    if mode == "offline":
        log.info("W&B: no API key, logging offline into %s/wandb (upload later with `wandb sync`)", run_dir)
    wandb.init(
        project=lcfg.project, entity=lcfg.entity, group=lcfg.group, tags=list(lcfg.tags) or None,
        name=f"{cfg.experiment_name}-{run_dir.name}", dir=str(run_dir), mode=mode,
        config=resolved,  # the resolved config, secrets redacted, CLI overrides included
        settings=wandb.Settings(x_disable_stats=False, console="off"),
    )
    os.environ["WANDB_LOG_MODEL"] = "false"
    return ["wandb"]


def finish_logger(cfg: DictConfig) -> None:
    if cfg.logger.name == "wandb":
        import wandb

        if wandb.run is not None:
            wandb.finish()
