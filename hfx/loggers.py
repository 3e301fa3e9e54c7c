"""The `logger` group: one registry entry per experiment tracker, with its own schema, giving the Trainer's
`report_to` and doing what the tracker needs first (a W&B run holding the resolved config)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    # null = one group per sweep (<experiment>-<sweep dir name>: a resumed search stays in its group); none for a
    # single run.
    group: str | None = None
    job_type: str = "train"


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
    sweep = sweep_job()
    group = lcfg.group or (f"{experiment}-{sweep[0].name}" if sweep else None)
    name = f"{experiment}-{','.join(sweep[1])}" if sweep and sweep[1] else f"{experiment}-{run_dir.name}"
    # W&B records the command line in the run's metadata: a secret typed as an override would go with it.
    argv, sys.argv = sys.argv, [redact_text(a) for a in sys.argv]
    try:
        wandb.init(
            project=lcfg.project, entity=lcfg.entity, group=group, job_type=lcfg.job_type,
            tags=list(lcfg.tags) or None, name=name, dir=str(run_dir), mode=mode,
            # One W&B run per run directory: `hfx train resume=<run dir>` continues the same W&B run.
            id=wandb_run_id(run_dir), resume="allow",
            config=resolved,  # the resolved config, secrets redacted, CLI overrides included
            settings=wandb.Settings(x_disable_stats=False, console="off"),
        )
    finally:
        sys.argv = argv
    os.environ["WANDB_LOG_MODEL"] = "false"
    return ["wandb"]


def sweep_job() -> tuple[Path, list[str]] | None:
    """In a sweep's job: the sweep directory and the job's values of the swept keys (`learning_rate=0.001`, the
    last part of a key unless two swept keys share it); None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    from hfx.redaction import redact_text

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    sweep_dir = Path(hydra.sweep.dir)
    parser = OverridesParser.create()
    swept = set(hydra.sweeper.get("params") or {})  # a search space in config (the Optuna sweeper's params)
    try:  # sweeps typed on the command line: a job sees its own values only; the sweep's line is in multirun.yaml
        from omegaconf import OmegaConf

        typed = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
        swept |= {o.key_or_group for o in parser.parse_overrides(list(typed)) if o.is_sweep_override()}
    except Exception as e:  # the name falls back to the run directory's; nothing else depends on it
        log.debug("W&B: no sweep overrides read from %s: %s", sweep_dir, e)
    values = {o.key_or_group: o.get_value_element_as_str() for o in parser.parse_overrides(list(hydra.overrides.task))
              if o.key_or_group in swept}
    leaves = [key.rsplit(".", 1)[-1] for key in values]
    return sweep_dir, [redact_text(f"{leaf if leaves.count(leaf) == 1 else key}={short_value(value)}")
                       for key, leaf, value in zip(values, leaves, values.values(), strict=True)]


def short_value(value: str) -> str:
    """A float as 4 significant digits (Optuna samples 0.00031622776601683794); anything else as typed."""
    try:
        return format(float(value), ".4g") if any(c in value for c in ".eE") else value
    except ValueError:
        return value


@contextmanager
def final_evaluation(trainer: Any) -> Iterator[None]:
    """The final evaluation, with transformers' W&B callback set aside: its `on_predict` logs the metrics of every
    `trainer.predict` by itself (with no step), and hfx logs the final metrics once right after through
    `trainer.log` (W&B history at the last step and summary, TensorBoard, log_history)."""
    from transformers.integrations import WandbCallback

    callback = trainer.pop_callback(WandbCallback)
    try:
        yield
    finally:
        if callback is not None:
            trainer.add_callback(callback)


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
