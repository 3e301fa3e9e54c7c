"""`hfx <command> [overrides]`: train, predict, evaluate, experiments. Hydra parses the overrides."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hfx.errors import HfxError, did_you_mean, one_of

USAGE = """usage: hfx <command> [key=value ...] [hydra flags]

commands:
  train        compose conf/ with your overrides and fine-tune    hfx train model=minilm peft=lora trainer.learning_rate=3e-4
  predict      serve a trained run through transformers.pipeline  hfx predict run=<run dir> input="a great film"
  evaluate     evaluate a saved run on another split or file      hfx evaluate run=<run dir> dataset.eval_split=test
  experiments  list the experiment files (hfx train experiment=<name>)

`hfx train --help` shows the config groups and their options; `hfx train --cfg job` prints the composed config;
`hfx train -m trainer.learning_rate=1e-4,3e-4` runs a sweep. Set HYDRA_FULL_ERROR=1 for tracebacks."""

HYDRA_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc"}
MULTIRUN_FLAGS = {"-m", "--multirun"}


def fail(message: str) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(1)


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def explain_config_error(ex: BaseException) -> str:
    """One line for a Hydra / OmegaConf composition error, with a did-you-mean where one helps."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    cause = ex.__cause__ if isinstance(ex.__cause__, OmegaConfBaseException) else ex
    if isinstance(ex, MissingConfigException) and ex.missing_cfg_file:
        group, _, option = ex.missing_cfg_file.rpartition("/")
        options = _group_options(group) if group else []
        if options:
            return f"{group}={option}: no such option{did_you_mean(option, options)}; valid: {', '.join(options)}"
        return f"config '{ex.missing_cfg_file}' not found"
    if isinstance(cause, ValidationError):
        key = getattr(cause, "full_key", "") or "?"
        m = re.search(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", str(cause))
        if m:
            return f"{key}: expected {m.group(3).lower()}, got '{m.group(1)}'"
        return f"{key}: {str(cause).splitlines()[0]}"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        key = getattr(cause, "full_key", "") or ""
        leaf = key.rsplit(".", 1)[-1]
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        obj = getattr(cause, "object_type", None)
        fields = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
        where = f"'{parent}'" if parent else "the config"
        hint = did_you_mean(leaf, fields)
        if not hint and fields:
            hint = f"; keys: {', '.join(fields[:20])}"
        return f"unknown key '{key}' in {where}{hint}"
    first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
    return first


def _group_options(group: str) -> list[str]:
    from hydra.core.config_store import ConfigStore

    from hfx.paths import conf_dir

    names = {p.stem for p in (conf_dir() / group).glob("*.yaml")}
    try:
        names |= {n.removesuffix(".yaml") for n in ConfigStore.instance().list(group)}
    except OSError:
        pass
    return sorted(names)


def _overrides(args: list[str]) -> list[str]:
    """The key=value overrides among Hydra's arguments, minus Hydra's own settings."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--cfg", "-c", "--package",
                 "-p", "--info", "-i"):
            skip = a not in ("--info", "-i")
            continue
        if a.startswith("-"):
            continue
        key = a.lstrip("+~")
        if key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        out.append(a)
    return out


def compose(config_name: str, overrides: list[str]) -> Any:
    """Compose the config as Hydra will, so that every config error is reported before a run dir exists."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hfx.paths import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="hfx"):
        return hydra_compose(config_name, overrides=overrides)


def check_composed(cfg: Any) -> None:
    """Registry names and files, checked without importing anything heavy."""
    from omegaconf import OmegaConf

    from hfx.adapters import PEFT_METHODS
    from hfx.data import FILE_BUILDERS, local_data_files
    from hfx.loggers import LOGGERS
    from hfx.model import ARCHITECTURES
    from hfx.tasks import TASKS
    from hfx.tokenizer import TOKENIZERS

    OmegaConf.to_container(cfg, resolve=True)  # interpolation errors surface here
    TASKS.get(cfg.task.name)
    TOKENIZERS.get(cfg.tokenizer.kind)
    PEFT_METHODS.get(cfg.peft.name)
    LOGGERS.get(cfg.logger.name)
    if cfg.model.architecture:
        ARCHITECTURES.get(cfg.model.architecture)
    if cfg.dataset.path in FILE_BUILDERS or cfg.dataset.data_dir:
        local_data_files(cfg.dataset)


def prevalidate(config_name: str, args: list[str], check: Callable[[Any], None] | None) -> None:
    try:
        cfg = compose(config_name, _overrides(args))
        if check:
            check(cfg)
    except Exception as e:  # HfxError, or a Hydra / OmegaConf composition error
        if _full_error():
            raise
        fail(str(e) if isinstance(e, HfxError) else explain_config_error(e))


def run_hydra(config_name: str, args: list[str], job: Callable[[Any], None]) -> None:
    import hydra

    from hfx.paths import conf_dir

    sys.argv = [f"hfx {config_name}", *args]
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(job)()


def guarded(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Inside a Hydra job: HfxError (and config errors) become one line and exit 1; a run dir is marked FAILED."""

    def job(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf.errors import OmegaConfBaseException

        run_path = Path(HydraConfig.get().runtime.output_dir)
        try:
            return fn(cfg, run_path)
        except (HfxError, OmegaConfBaseException) as e:
            message = str(e) if isinstance(e, HfxError) else explain_config_error(e)
            _mark_failed(run_path, message)
            if _full_error():
                raise
            if HydraConfig.get().mode.name == "MULTIRUN":
                raise  # let the sweeper record the failure of this job
            fail(message)
        except Exception as e:
            _mark_failed(run_path, f"{type(e).__name__}: {e}")
            raise

    job.__name__ = fn.__name__
    job.__module__ = fn.__module__
    return job


def _mark_failed(run_path: Path, message: str) -> None:
    from hfx.rundir import RunDir

    RunDir(run_path).mark_failed(message)


def _distributed_run_dir(args: list[str]) -> list[str]:
    """Under `accelerate launch`/torchrun every rank must pick the same timestamped run dir."""
    from hfx.distributed import launch_timestamp

    stamp = launch_timestamp()
    if stamp is None or any(a.startswith("hydra.run.dir=") for a in args) or any(a in MULTIRUN_FLAGS for a in args):
        return args
    import datetime

    when = datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d_%H-%M-%S")
    return [*args, f"hydra.run.dir=runs/${{experiment_name}}/{when}"]


def train_command(args: list[str]) -> None:
    from hfx.config.store import register_configs

    register_configs()
    if not (set(args) & (HYDRA_INFO_FLAGS | MULTIRUN_FLAGS)):
        prevalidate("train", args, check_composed)
    elif set(args) & MULTIRUN_FLAGS:
        _prevalidate_sweep("train", args)

    def train_job(cfg: Any, run_path: Path) -> Any:
        from hfx.run import train

        metrics = train(cfg, run_path)
        # Sweepers (Optuna) read the objective from the job's return value.
        return _objective(cfg, metrics)

    run_hydra("train", _distributed_run_dir(args), guarded(train_job))


def _objective(cfg: Any, metrics: dict[str, Any]) -> float | None:
    name = cfg.trainer.metric_for_best_model or ("eval_loss" if "eval_loss" in metrics else None)
    if name and not name.startswith("eval_"):
        name = f"eval_{name}"
    return metrics.get(name) if name else None


def _prevalidate_sweep(config_name: str, args: list[str]) -> None:
    """For -m, compose with the first value of each simple sweep so key and type errors still fail fast."""
    first = []
    for a in _overrides([x for x in args if x not in MULTIRUN_FLAGS]):
        key, eq, value = a.partition("=")
        if eq and "," in value and not value.startswith(("[", "{", "'", '"')) and "(" not in value:
            value = value.split(",")[0]
        if eq and "(" in value:  # range(...), choice(...), interval(...): leave to the sweeper
            continue
        first.append(f"{key}{eq}{value}")
    prevalidate(config_name, first, check_composed)


def experiments_command(args: list[str]) -> None:
    from hfx.paths import experiments_dir

    for path in sorted(experiments_dir().glob("*.yaml")):
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        print(f"{path.stem:<28} {first.lstrip('# ').strip()}")


def predict_command(args: list[str]) -> None:
    from hfx.config.store import register_configs
    from hfx.serve import check_run, predict

    register_configs()
    prevalidate("predict", args, check_run)
    run_hydra("predict", args, guarded(predict))


def evaluate_command(args: list[str]) -> None:
    from hfx.config.store import register_configs
    from hfx.serve import check_run, evaluate

    register_configs()
    # dataset.* here are overrides on the run's saved dataset config (checked against its schema later).
    args = [f"+{a}" if a.startswith("dataset.") else a for a in args]
    prevalidate("evaluate", args, check_run)
    run_hydra("evaluate", args, guarded(evaluate))


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "train": train_command,
    "predict": predict_command,
    "evaluate": evaluate_command,
    "experiments": experiments_command,
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("--version", "-V"):
        from hfx import __version__

        print(f"hfx {__version__}")
        return
    command = argv[0]
    if command not in COMMANDS:
        fail(str(one_of("command", command, COMMANDS)))
    try:
        COMMANDS[command](argv[1:])
    except HfxError as e:
        if _full_error():
            raise
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted")
