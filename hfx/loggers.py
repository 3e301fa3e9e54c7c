"""The `logger` group: one registry entry per experiment tracker, with its own schema, giving the Trainer's
`report_to` and doing what the tracker needs first (a W&B run holding the resolved config)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hfx.errors import HfxError
from hfx.registry import Registry

log = logging.getLogger("hfx")


@dataclass
class Logger:
    schema: type
    # (logger config, experiment name, run dir, resolved config) -> the Trainer's report_to
    setup: Callable[[DictConfig, str, Path, dict[str, Any]], list[str]]
    finish: Callable[[], None] = lambda: None
    # The module the tracker needs and the pip name that installs it, checked when the config is composed.
    package: str | None = None
    pip_name: str | None = None

    def require_package(self) -> None:
        if self.package is None:
            return
        # Found, not imported: some trackers read their settings when imported (trackio its TRACKIO_DIR).
        try:
            found = importlib.util.find_spec(self.package) is not None
        except ImportError:
            found = False
        if not found:
            pip = self.pip_name or self.package
            raise HfxError(f"logger: this logger needs the {pip} package (No module named '{self.package}'); "
                           f"install it with `pip install {pip}`")


LOGGERS: Registry[Logger] = Registry("logger")


# `logger` holds one section per chosen tracker, under its name: `logger=wandb` -> logger.wandb.project,
# `logger=[wandb,tensorboard]` -> both (conf/logger/<name>.yaml each place their schema at logger.<name>).
@dataclass
class NoLoggerConfig:
    pass


@dataclass
class TensorBoardConfig:
    # null = <run dir>/tensorboard
    log_dir: str | None = None


@dataclass
class WandbConfig:
    project: str = "hfx"
    entity: str | None = None
    # null = online with an API key, offline without one.
    mode: str | None = None
    tags: list[str] = field(default_factory=list)
    # null = one group per sweep (<experiment>-<sweep dir name>: a resumed search stays in its group); none for a
    # single run.
    group: str | None = None
    job_type: str = "train"


@dataclass
class MlflowConfig:
    # null = a local file store (no server): <sweep dir>/mlruns in a sweep, runs/<experiment>/mlruns otherwise.
    tracking_uri: str | None = None
    # MLflow experiment; null = the hfx experiment name.
    experiment: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class TrackioConfig:
    # Trackio project; null = the hfx experiment name.
    project: str | None = None
    # null = <sweep dir>/trackio in a sweep, runs/<experiment>/trackio otherwise (`hfx dashboard` serves it).
    dir: str | None = None
    # null = one group per sweep, as for W&B.
    group: str | None = None


def chosen(cfg: DictConfig) -> list[str]:
    """The trackers a train config names (`logger=none`: none)."""
    return [name for name in (cfg.get("logger") or {}) if name != "none"]


def setup_logger(cfg: DictConfig, run_dir: Path, resolved: dict[str, Any], main_process: bool) -> list[str]:
    """Returns the Trainer's `report_to`. Only rank 0 logs."""
    if not main_process:
        return []
    report_to: list[str] = []
    for name in chosen(cfg):
        report_to += LOGGERS.get(name).setup(cfg.logger[name], cfg.experiment_name, run_dir, resolved)
    return report_to


def finish_logger(cfg: DictConfig) -> None:
    for name in chosen(cfg):
        LOGGERS.get(name).finish()


def run_name(experiment: str, run_dir: Path) -> str:
    """A run's name in every tracker: <experiment>-<swept values> in a sweep, <experiment>-<run dir> otherwise."""
    sweep = sweep_job()
    return f"{experiment}-{','.join(sweep[1])}" if sweep and sweep[1] else f"{experiment}-{run_dir.name}"


def sweep_group(experiment: str) -> str | None:
    sweep = sweep_job()
    return f"{experiment}-{sweep[0].name}" if sweep else None


def store_dir(run_dir: Path, name: str) -> Path:
    """Where a local tracker store goes: the sweep directory in a sweep (one store for its jobs), else the
    experiment's folder beside its runs."""
    sweep = sweep_job()
    return (sweep[0] if sweep else run_dir.parent) / name


def _tensorboard(lcfg: DictConfig, experiment: str, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    # transformers 5 has no logging_dir argument; the TensorBoard callback reads this variable.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(lcfg.log_dir or run_dir / "tensorboard")
    return ["tensorboard"]


def _wandb(lcfg: DictConfig, experiment: str, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    import wandb

    from hfx.redaction import redact_text

    # logger.wandb.mode, else W&B's own WANDB_MODE, else online only with an API key.
    mode = lcfg.mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    if mode == "offline":
        log.info("W&B: logging offline into %s/wandb (upload later with `wandb sync`)", run_dir)
    # W&B records the command line in the run's metadata: a secret typed as an override would go with it.
    argv, sys.argv = sys.argv, [redact_text(a) for a in sys.argv]
    try:
        wandb.init(
            project=lcfg.project, entity=lcfg.entity, group=lcfg.group or sweep_group(experiment),
            job_type=lcfg.job_type, tags=list(lcfg.tags) or None, name=run_name(experiment, run_dir),
            dir=str(run_dir), mode=mode,
            # One W&B run per run directory: `hfx train resume=<run dir>` continues the same W&B run.
            id=wandb_run_id(run_dir), resume="allow",
            config=resolved,  # the resolved config, secrets redacted, CLI overrides included
            settings=wandb.Settings(x_disable_stats=False, console="off"),
        )
    finally:
        sys.argv = argv
    os.environ["WANDB_LOG_MODEL"] = "false"
    return ["wandb"]


def flat_params(resolved: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The resolved config as dotted keys (`trainer.learning_rate`), the form MLflow params take."""
    out: dict[str, str] = {}
    for key, value in resolved.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{full}."))
        else:
            out[full] = str(value)
    return out


def _mlflow(lcfg: DictConfig, experiment: str, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    # MLflow 3 keeps its file store (no server, no database) in maintenance mode behind this switch.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    import mlflow

    uri = lcfg.tracking_uri or store_dir(run_dir, "mlruns").resolve().as_uri()
    mlflow.set_tracking_uri(uri)
    name = lcfg.experiment or experiment
    try:
        mlflow.set_experiment(name)
    except Exception:  # another job of a parallel sweep created it in the meantime
        mlflow.set_experiment(name)
    # One MLflow run per run directory: a resumed run continues it.
    id_file = run_dir / "mlflow_run_id"
    run_id = id_file.read_text().strip() if id_file.exists() else None
    tags = {**dict(lcfg.tags), "hfx.run_dir": str(run_dir)}
    if group := sweep_group(experiment):
        tags["hfx.sweep"] = group
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name(experiment, run_dir), tags=tags)
    id_file.write_text(run.info.run_id + "\n")
    if run_id is None:  # MLflow params are write-once
        params = flat_params(resolved)
        for i in range(0, len(params), 100):
            mlflow.log_params(dict(list(params.items())[i:i + 100]))
    log.info("MLflow: logging to %s (experiment %s, run %s)", uri, name, run.info.run_id)
    # transformers' callback logs TrainingArguments too; keep its keys apart from hfx's dotted ones.
    os.environ.setdefault("MLFLOW_FLATTEN_PARAMS", "true")
    return ["mlflow"]


def _finish_mlflow() -> None:
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.end_run()


def trackio_project(cfg: DictConfig) -> str:
    section = (cfg.get("logger") or {}).get("trackio")
    return (section.project if section is not None else None) or cfg.experiment_name


def _trackio(lcfg: DictConfig, experiment: str, run_dir: Path, resolved: dict[str, Any]) -> list[str]:
    # trackio reads TRACKIO_DIR once, when it is imported.
    directory = Path(lcfg.dir) if lcfg.dir else store_dir(run_dir, "trackio")
    if "trackio" in sys.modules and Path(sys.modules["trackio"].utils.TRACKIO_DIR) != directory:
        log.warning("trackio: already imported with its store in %s; logging there",
                    sys.modules["trackio"].utils.TRACKIO_DIR)
    os.environ["TRACKIO_DIR"] = str(directory)
    import trackio  # noqa: F401

    # transformers' callback starts the run (project and name from TrainingArguments); hfx's adds the group and
    # the resolved config (tracked_callbacks).
    _TRACKIO_RUN.update(group=lcfg.group or sweep_group(experiment), config=resolved)
    log.info("trackio: logging to %s (project %s); see it with `hfx dashboard %s`", directory,
             lcfg.project or experiment, directory.parent)
    return ["trackio"]


_TRACKIO_RUN: dict[str, Any] = {}


def tracked_callbacks(trainer: Any) -> None:
    """Swaps transformers' trackio callback for one whose run carries the sweep group and hfx's resolved config
    (the stock one passes neither)."""
    from transformers.integrations import TrackioCallback

    if trainer.pop_callback(TrackioCallback) is None:
        return

    class HfxTrackioCallback(TrackioCallback):
        def setup(self, args, state, model, **kwargs):
            if state.is_world_process_zero:
                self._trackio.init(project=args.project, name=args.run_name, resume="allow", embed=False,
                                   **_TRACKIO_RUN)
                self._space_id = None
            self._initialized = True

    trainer.add_callback(HfxTrackioCallback())


def _finish_trackio() -> None:
    import trackio

    trackio.finish()


# A sweep job run as several processes (launch=ddp ...): its ranks run as single runs, so the job hands them its
# sweep directory and swept values (JSON) to name and group the run as every other job of the sweep.
SWEEP_JOB_ENV = "HFX_SWEEP_JOB"


def launched_sweep_job() -> tuple[Path, list[str]] | None:
    from hfx.distributed import under_launcher

    text = os.environ.get(SWEEP_JOB_ENV)
    if text is None or not under_launcher():
        return None
    sweep_dir, values = json.loads(text)
    return Path(sweep_dir), list(values)


def sweep_job() -> tuple[Path, list[str]] | None:
    """In a sweep's job: the sweep directory and the job's values of the swept keys (`learning_rate=0.001`, the
    last part of a key unless two swept keys share it); None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    from hfx.redaction import redact_text

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return launched_sweep_job()
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
    """The final evaluation, with transformers' W&B and trackio callbacks set aside: their `on_predict` logs the metrics of every
    `trainer.predict` by itself (with no step), and hfx logs the final metrics once right after through
    `trainer.log` (W&B history at the last step and summary, TensorBoard, log_history)."""
    from transformers.integrations import TrackioCallback, WandbCallback

    popped = [c for c in (trainer.pop_callback(WandbCallback), trainer.pop_callback(TrackioCallback)) if c]
    try:
        yield
    finally:
        for callback in popped:
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
LOGGERS.add("mlflow", Logger(MlflowConfig, _mlflow, _finish_mlflow, package="mlflow", pip_name="mlflow-skinny"))
LOGGERS.add("trackio", Logger(TrackioConfig, _trackio, _finish_trackio, package="trackio"))
