"""Composition before a run: the config as Hydra will build it, registry names and files checked, and every
composition error translated into one line. Nothing heavy is imported here."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hfx.errors import HfxError, UsageError, did_you_mean, one_of

# Hydra's own flags that take a value (the value is not an override).
_FLAGS_WITH_VALUE = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--cfg", "-c",
                     "--package", "-p"}


def user_overrides(args: list[str]) -> list[str]:
    """The key=value overrides among a command's arguments, minus Hydra's flags and `hydra.*` settings."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in _FLAGS_WITH_VALUE:
            skip = True
            continue
        if a.startswith("-") or a.lstrip("+~").startswith(("hydra.", "hydra/")):
            continue
        out.append(a)
    return out


def quoted(value: str) -> str:
    """A string as one quoted Hydra value, whatever it holds (commas, quotes, `=`, `${`)."""
    # Hydra reads a backslash as an escape only before a quote or at the end of a quoted value.
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'").replace("${", "\\${")
    return f"'{escaped}'"


def drop_option_files(cfg: Any, overrides: list[str]) -> None:
    """`dataset.data_files.<split>=<file>` given on the command line replace the dataset option's files as a whole:
    a user's own train file must not be paired with the option's (e.g. the bundled demo) validation file."""
    from omegaconf import open_dict

    given = {o.partition("=")[0].removeprefix("dataset.data_files.") for o in overrides
             if o.lstrip("+").startswith("dataset.data_files.") and "=" in o}
    if not given or not cfg.dataset.data_files:
        return
    with open_dict(cfg):
        for split in [s for s in cfg.dataset.data_files if s not in given]:
            del cfg.dataset.data_files[split]


def first_of_each_sweep(overrides: list[str]) -> list[str]:
    """For `-m`: each sweep replaced by its first value (Hydra's own parser reads the grammar), so that key and
    type errors fail before any job starts. Sweeps that cannot be enumerated (interval, glob) are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    except Exception as e:  # Hydra's OverrideParseException: a malformed override
        raise HfxError(f"override: {str(e).strip().splitlines()[0]}") from e
    out = []
    for o in parsed:
        if not o.is_sweep_override():
            out.append(o.input_line)
        elif o.is_discrete_sweep() and o.value_type.name != "GLOB_CHOICE_SWEEP":
            first = next(iter(o.sweep_string_iterator()), None)
            if first is not None:
                out.append(f"{o.get_key_element()}={first}")
    return out


def compose(config_name: str, overrides: list[str]) -> Any:
    """Compose `conf/<config_name>.yaml` with overrides, as Hydra will for the job."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hfx.config.store import register_configs
    from hfx.paths import conf_dir

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="hfx"):
        return hydra_compose(config_name, overrides=overrides)


def check_composed(cfg: Any) -> None:
    """Registry names and local files of a train config, checked without importing anything heavy."""
    from omegaconf import OmegaConf

    from hfx.adapters import PEFT_METHODS
    from hfx.architectures import ARCHITECTURES, buildable
    from hfx.data import FILE_BUILDERS, local_data_files
    from hfx.loggers import LOGGERS
    from hfx.tasks import TASKS
    from hfx.tokenizer import TOKENIZERS

    OmegaConf.to_container(cfg, resolve=True)  # interpolation errors surface here
    task = TASKS.get(cfg.task.name)
    TOKENIZERS.get(cfg.tokenizer.kind)
    PEFT_METHODS.get(cfg.peft.name)
    LOGGERS.get(cfg.logger.name).require_package()
    for key, value in (("tokenizer.max_length", cfg.tokenizer.max_length),
                       ("trainer.per_device_train_batch_size", cfg.trainer.per_device_train_batch_size),
                       ("trainer.per_device_eval_batch_size", cfg.trainer.per_device_eval_batch_size),
                       ("trainer.gradient_accumulation_steps", cfg.trainer.gradient_accumulation_steps)):
        if value < 1:
            raise HfxError(f"{key}: expected a positive number, got {value}")
    if cfg.model.architecture and not cfg.model.name_or_path:
        if cfg.model.architecture not in buildable():
            raise one_of("model.architecture", cfg.model.architecture, buildable())
        task.check_architecture(ARCHITECTURES.get(cfg.model.architecture))
    if cfg.dataset.path in FILE_BUILDERS or cfg.dataset.data_dir or cfg.dataset.data_files:
        local_data_files(cfg.dataset)
    if cfg.trainer.fp16 or cfg.trainer.bf16:
        from hfx.trainer import use_bf16  # imports torch: only when a precision is asked for

        use_bf16(cfg.trainer)


def validate(config_name: str, args: list[str], check: Any = None, sweep: bool = False) -> Any:
    """Compose and check the config of a command line; any fault becomes an HfxError with one line."""
    overrides = user_overrides(args)
    if sweep:
        overrides = first_of_each_sweep(overrides)
    try:
        cfg = compose(config_name, overrides)
        if config_name == "train":
            drop_option_files(cfg, overrides)
        if check:
            check(cfg)
        return cfg
    except HfxError as e:
        raise UsageError(str(e)) from e
    except Exception as e:  # a Hydra / OmegaConf composition error
        raise UsageError(explain_config_error(e)) from e


def explain_config_error(ex: BaseException) -> str:
    """One line for a Hydra / OmegaConf composition error, with a did-you-mean where one helps."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    cause = ex.__cause__ if isinstance(ex.__cause__, OmegaConfBaseException) else ex
    if isinstance(ex, MissingConfigException) and ex.missing_cfg_file:
        group, _, option = ex.missing_cfg_file.rpartition("/")
        options = group_options(group) if group else []
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
        parent, _, leaf = key.rpartition(".")
        obj = getattr(cause, "object_type", None)
        fields = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
        where = f"'{parent}'" if parent else "the config"
        hint = did_you_mean(leaf, fields)
        if not hint and fields:
            hint = f"; keys: {', '.join(fields[:20])}"
        return f"unknown key '{key}' in {where}{hint}"
    first = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
    return first


def group_options(group: str) -> list[str]:
    """The options of a config group: conf/<group>/*.yaml and what the ConfigStore holds under it."""
    from hydra.core.config_store import ConfigStore

    from hfx.paths import conf_dir

    names = {p.stem for p in (conf_dir() / group).glob("*.yaml")}
    try:
        names |= {n.removesuffix(".yaml") for n in ConfigStore.instance().list(group)}
    except OSError:
        pass
    return sorted(names)
