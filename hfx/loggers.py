"""The `logger` group: one registry entry per experiment tracker, with its own schema, giving the Trainer's
`report_to` and doing what the tracker needs first (a W&B run holding the resolved config)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hfx.config.schema import EntryConfig
from hfx.errors import HfxError
from hfx.registry import Registry

log = logging.getLogger("hfx")


@dataclass
class Logger:
    schema: type
    # (logger config, experiment name, run dir, resolved config) -> the Trainer's report_to
    setup: Callable[[DictConfig, str, Path, dict[str, Any]], list[str]]
    finish: Callable[[], None] = lambda: None
    # The package the tracker needs (pip name), checked when the config is composed.
    package: str | None = None

    def require_package(self) -> None:
        if self.package is None:
            return
        try:
            importlib.import_module(self.package)
        except ImportError as e:
            raise HfxError(f"logger: this logger needs the {self.package} package ({e}); install it with "
                           f"`pip install {self.package}`") from e


LOGGERS: Registry[Logger] = Registry("logger")


@dataclass
class NoLoggerConfig(EntryConfig):
    name: str = "none"


@dataclass
class TensorBoardConfig(EntryConfig):
    name: str = "tensorboard"


@dataclass
class WandbConfig(EntryConfig):
    name: str = "wandb"
    project: str = "hfx"
    entity: str | None = None
    # null = online with an API key, offline without one.
    mode: str | None = None
    tags: list[str] = field(default_factory=list)
    group: str | None = None


def setup_logger(cfg: DictConfig, run_dir: Path, resolved: dict[str, Any], main_process: bool) -> list[str]:
    """Returns the Trainer's `report_to`. Only rank 0 logs."""
    if not main_process:
        return []
    return LOGGERS.get(cfg.logger.name).setup(cfg.logger, cfg.experiment_name, run_dir, resolved)


def finish_logger(cfg: DictConfig) -> None:
    LOGGERS.get(cfg.logger.name).finish()


def _tensorboard(lcfg: DictConfig, experiment: str, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    # transformers 5 has no logging_dir argument; the TensorBoard callback reads this variable.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    return ["tensorboard"]


def _wandb(lcfg: DictConfig, experiment: str, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    import wandb

    from hfx.redaction import redact_text

    # logger.mode, else W&B's own WANDB_MODE, else online only with an API key.
    mode = lcfg.mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    if mode == "offline":
        log.info("W&B: logging offline into %s/wandb (upload later with `wandb sync`)", run_dir)
    # W&B records the command line in the run's metadata: a secret typed as an override would go with it.
    argv, sys.argv = sys.argv, [redact_text(a) for a in sys.argv]
    try:
        wandb.init(
            project=lcfg.project, entity=lcfg.entity, group=lcfg.group, tags=list(lcfg.tags) or None,
            name=f"{experiment}-{run_dir.name}", dir=str(run_dir), mode=mode,
            # One W&B run per run directory: `hfx train resume=<run dir>` continues the same W&B run.
            id=wandb_run_id(run_dir), resume="allow",
            config=resolved,  # the resolved config, secrets redacted, CLI overrides included
            settings=wandb.Settings(x_disable_stats=False, console="off"),
        )
    finally:
        sys.argv = argv
    os.environ["WANDB_LOG_MODEL"] = "false"
    return ["wandb"]


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of a run directory: the same whenever the run is resumed, different for every directory."""
    import hashlib

    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]


def _finish_wandb() -> None:
    import wandb

    if wandb.run is not None:
        wandb.finish()


LOGGERS.add("none", Logger(NoLoggerConfig, lambda *_: []))
LOGGERS.add("tensorboard", Logger(TensorBoardConfig, _tensorboard, package="tensorboard"))
LOGGERS.add("wandb", Logger(WandbConfig, _wandb, _finish_wandb, package="wandb"))
