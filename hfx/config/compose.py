"""Composition before a run: the config as Hydra will build it, registry names and files checked, and every
composition error translated into one line. Nothing heavy is imported until the last checks of a train config
(transformers' TrainingArguments and the PEFT method's own config), which the run would import anyway."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hfx.errors import HfxError, UsageError, did_you_mean, one_of

# Hydra's own flags that take a value (the value is not an override).
_FLAGS_WITH_VALUE = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--cfg", "-c",
                     "--package", "-p"}


# Hydra's instantiate keys: a value under one names a Python callable. hfx builds nothing from such a key, and
# refuses them so that no config, experiment file or override carries code (Hydra's own callbacks in conf/ aside).
INSTANTIATE_KEYS = frozenset({"_target_", "_partial_", "_args_", "_recursive_", "_convert_"})
# Keys whose values name registry entries, and names that are hub ids or local paths: never import paths.
REGISTRY_KEYS = ("task.name", "peft.name", "launch.name", "tokenizer.kind", "model.architecture")
NAME_KEYS = ("model.name_or_path", "model.decoder_name_or_path", "tokenizer.name_or_path")
IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def refuse_instantiate_overrides(args: list[str]) -> None:
    """Any override (hydra.* included: Hydra instantiates its callbacks) whose key holds `_target_` and the like."""
    for a in arguments(args):
        key = a.partition("=")[0].lstrip("+~")
        if not a.startswith("-") and INSTANTIATE_KEYS & set(re.split(r"[./@]", key)):
            raise HfxError(_import_path_refused(key))


def refuse_import_paths(cfg: Any) -> None:
    """The composed config (experiment files included): no instantiate key anywhere, and no registry name or model
    name that looks like a Python import path."""
    from omegaconf import OmegaConf

    def walk(node: Any, where: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            full = f"{where}.{key}" if where and isinstance(key, str) else f"{where}[{key}]" if where else str(key)
            if key in INSTANTIATE_KEYS:
                raise HfxError(_import_path_refused(full))
            walk(value, full)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    for key in (*REGISTRY_KEYS, *NAME_KEYS):
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not isinstance(value, str) or not IMPORT_PATH.match(value):
            continue
        if key in NAME_KEYS and Path(value).expanduser().exists():
            continue  # a local directory may have dots in its name
        what = "a registry entry" if key in REGISTRY_KEYS else "a hub id (org/name) or a local directory"
        raise HfxError(f"{key}: '{value}' looks like a Python import path; configs name {what}, never code")


def _import_path_refused(key: str) -> str:
    return (f"{key}: configs name registry entries, never Python import paths "
            f"({', '.join(sorted(INSTANTIATE_KEYS))} are refused)")


def user_overrides(args: list[str]) -> list[str]:
    """The key=value overrides among a command's arguments, minus Hydra's flags and `hydra.*` settings."""
    return [a for a in arguments(args) if not a.startswith("-") and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]


def arguments(args: list[str]) -> Iterator[str]:
    """A command's arguments without the values of Hydra's flags that take one (`--config-dir <dir>`)."""
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in _FLAGS_WITH_VALUE:
            skip = True
        else:
            yield a


def quoted(value: str) -> str:
    """A string as one quoted Hydra value, whatever it holds (commas, quotes, `=`, `${`)."""
    # Hydra reads a backslash as an escape only before a quote or at the end of a quoted value.
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'").replace("${", "\\${")
    return f"'{escaped}'"


def drop_option_files(cfg: Any, overrides: list[str]) -> None:
    """Data named on the command line replaces the dataset option's data as a whole: `dataset.data_files.<split>`
    drops the option's other files and its data_dir (a user's own train file must not be paired with the bundled
    demo's validation file); `dataset.data_dir` drops the option's files. Files named together with a data_dir
    replace those splits of the folder."""
    from omegaconf import open_dict

    keys = [o.partition("=")[0].lstrip("+~") for o in overrides if "=" in o]
    given = {k.removeprefix("dataset.data_files.") for k in keys if k.startswith("dataset.data_files.")}
    dir_given = "dataset.data_dir" in keys
    if not given and not dir_given:
        return
    with open_dict(cfg):
        for split in [s for s in cfg.dataset.data_files or {} if s not in given]:
            del cfg.dataset.data_files[split]
        if given and not dir_given:
            cfg.dataset.data_dir = None


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
        cfg = hydra_compose(config_name, overrides=overrides)
    if config_name == "train":
        drop_option_files(cfg, overrides)
    return cfg


def check_composed(cfg: Any) -> None:
    """Registry names and local files of a train config, checked without importing anything heavy."""
    from omegaconf import OmegaConf

    from hfx.adapters import PEFT_METHODS, check_task_fits
    from hfx.architectures import ARCHITECTURES, buildable
    from hfx.config.data_checks import check_dataset, check_dataset_names
    from hfx.data import FILE_BUILDERS, local_data_files
    from hfx.encoder_decoder import check_warm_start
    from hfx.freezing import check_freeze
    from hfx.launch import check_launch
    from hfx.loggers import LOGGERS
    from hfx.tasks import TASKS
    from hfx.tokenizer import TOKENIZERS, TRAINED_KINDS

    OmegaConf.to_container(cfg, resolve=True)  # interpolation errors surface here
    check_schema_keys(cfg)
    task = TASKS.get(cfg.task.name)
    TOKENIZERS.get(cfg.tokenizer.kind)
    PEFT_METHODS.get(cfg.peft.name)
    for name in cfg.logger:
        LOGGERS.get(name).require_package()
    for key, value in (("tokenizer.max_length", cfg.tokenizer.max_length),
                       ("trainer.per_device_train_batch_size", cfg.trainer.per_device_train_batch_size),
                       ("trainer.per_device_eval_batch_size", cfg.trainer.per_device_eval_batch_size),
                       ("trainer.gradient_accumulation_steps", cfg.trainer.gradient_accumulation_steps)):
        if value < 1:
            raise HfxError(f"{key}: expected a positive number, got {value}")
    if cfg.trainer.max_steps <= 0 and cfg.trainer.num_train_epochs <= 0:
        raise HfxError(f"trainer.num_train_epochs: expected a positive number (or trainer.max_steps > 0), got "
                       f"{cfg.trainer.num_train_epochs}")
    split = cfg.dataset.validation_split
    check_dataset(cfg, task)  # the values of the data operations (hfx/config/data_checks.py)
    check_warm_start(cfg.model, task)  # model.decoder_name_or_path (hfx/encoder_decoder.py)
    if cfg.model.architecture and cfg.model.name_or_path:
        raise HfxError(f"model.architecture={cfg.model.architecture} conflicts with model.name_or_path="
                       f"{cfg.model.name_or_path}: one builds a model from scratch, the other loads a pretrained "
                       "one; set the other to null")
    if cfg.model.architecture:
        if cfg.model.architecture not in buildable():
            raise one_of("model.architecture", cfg.model.architecture, buildable())
        task.check_architecture(ARCHITECTURES.get(cfg.model.architecture))
    if cfg.model.name_or_path and cfg.tokenizer.kind in TRAINED_KINDS:
        raise HfxError(f"tokenizer={cfg.tokenizer.kind} trains a new vocabulary, which does not fit the pretrained "
                       f"model.name_or_path={cfg.model.name_or_path} (its embeddings follow its own tokenizer's ids); "
                       "use tokenizer=auto, or a model built from scratch (model.architecture)")
    for key in ("model.name_or_path", "model.decoder_name_or_path", "tokenizer.name_or_path"):
        check_local_path(key, OmegaConf.select(cfg, key))
    if cfg.dataset.path in FILE_BUILDERS or cfg.dataset.data_dir or cfg.dataset.data_files:
        _, files = local_data_files(cfg.dataset)
        if cfg.dataset.eval_split in files and split is not None:
            raise HfxError(f"dataset.validation_split={split} conflicts with the '{cfg.dataset.eval_split}' file "
                           f"({', '.join(files[cfg.dataset.eval_split])}): evaluate on that file "
                           "(dataset.validation_split=null) or carve from train, not both")
    check_dataset_names(cfg, task)  # columns and labels the data operations name, in the data itself
    PEFT_METHODS.get(cfg.peft.name).check(cfg.peft)
    record = ARCHITECTURES.get(cfg.model.architecture) if cfg.model.architecture else None
    check_task_fits(cfg.peft, task, cfg.task.name, record.shape if record else None)
    check_freeze(cfg.freeze)
    check_training_arguments(cfg, task)
    check_launch(cfg)  # processes, machines, precision and what this machine can run


def check_schema_keys(cfg: Any) -> None:
    """Keys added with `+key=value` are outside the schemas: refuse them as the misspellings they usually are."""
    from omegaconf import OmegaConf

    from hfx.config.store import typed_train_config

    try:
        typed_train_config(OmegaConf.create(OmegaConf.to_container(cfg)), "config")
    except HfxError as e:
        if e.__cause__ is None:  # said in full already
            raise
        raise HfxError(explain_config_error(e.__cause__)) from e


def check_local_path(key: str, value: str | None) -> None:
    """A path-like model or tokenizer source (/..., ./..., ../..., ~/...) must exist; a hub id (org/name) is
    the hub's to check."""
    import os
    from pathlib import Path

    if value and value.startswith(("/", "./", "../", "~")) and not Path(os.path.expanduser(value)).exists():
        raise HfxError(f"{key}: folder '{value}' does not exist (a local model folder, or a hub id such as "
                       "org/name)")


def check_training_arguments(cfg: Any, task: Any) -> None:
    """`trainer.*` through transformers' own TrainingArguments, which checks values and conflicting settings
    (a scheduler that does not exist, load_best_model_at_end with mismatched strategies, ...)."""
    import tempfile
    from pathlib import Path

    from hfx.tasks import task_settings
    from hfx.trainer import check_attention, check_compile, training_arguments, use_bf16

    use_bf16(cfg.trainer)  # fp16 without a GPU: hfx's own line
    check_attention(cfg)
    check_compile(cfg.trainer)
    if cfg.trainer.extra:
        import dataclasses

        from transformers import Seq2SeqTrainingArguments

        fields = sorted(f.name for f in dataclasses.fields(Seq2SeqTrainingArguments))
        for key in cfg.trainer.extra:
            if key not in fields:
                raise HfxError(f"trainer.extra.{key}: not a field of transformers' TrainingArguments"
                               f"{did_you_mean(key, fields)}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            training_arguments(cfg, task.training_args(task_settings(cfg, task)), Path(tmp) / "checkpoints", [],
                               seq2seq=getattr(task, "seq2seq", False))
        except HfxError as e:
            if not isinstance(e.__cause__, ValueError):
                raise
            # transformers' message, all of it on one line, its `--field` flags named as hfx's keys.
            message = re.sub(r"--(\w+)", r"trainer.\1", " ".join(str(e.__cause__).split()))
            # "<value> is not a valid <Enum>" names the value: name the key it came from.
            m = re.match(r"'?([^' ]+)'? is not a valid \w+", message)
            keys = [k for k, v in cfg.trainer.items() if m and isinstance(v, str) and v == m.group(1)]
            if len(keys) == 1:
                message = f"trainer.{keys[0]}: {message}"
            raise HfxError(message if message.startswith("trainer.") else f"trainer: {message}") from e


def check_flags(args: list[str]) -> None:
    """The `-`/`--` options among the arguments, read by Hydra's own argument parser: an unknown one or a bad
    value is one line here rather than argparse's usage block."""
    import argparse

    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        _, unknown = parser.parse_known_args(args)
    except argparse.ArgumentError as e:
        raise HfxError(f"option {e}") from e
    if unknown:
        flags = sorted(s for a in parser._actions for s in a.option_strings if s.startswith("--"))
        raise HfxError(f"unknown option '{unknown[0]}'{did_you_mean(unknown[0], flags)}; options: {', '.join(flags)} "
                       "(settings are key=value)")


def validate(config_name: str, args: list[str], check: Any = None, sweep: bool = False) -> Any:
    """Compose and check the config of a command line; any fault becomes an HfxError with one line."""
    with usage_errors():
        overrides = user_overrides(args)
        if sweep:
            overrides = first_of_each_sweep(overrides)
        check_flags(args)
        refuse_instantiate_overrides(args)
        return checked(compose(config_name, overrides), check)


def checked(cfg: Any, check: Any = None) -> Any:
    """A composed config (without its `hydra` node) past the checks every command makes, and the command's own."""
    refuse_import_paths(cfg)
    if check:
        check(cfg)
    return cfg


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """hfx's own errors and Hydra / OmegaConf composition errors, raised inside, as one-line UsageErrors."""
    try:
        yield
    except HfxError as e:
        raise UsageError(str(e)) from e
    except Exception as e:  # a Hydra / OmegaConf composition error
        raise UsageError(explain_config_error(e)) from e


def explain_config_error(ex: BaseException) -> str:
    """One line for a Hydra / OmegaConf composition error, with a did-you-mean where one helps."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    cause = ex.__cause__ if isinstance(ex.__cause__, OmegaConfBaseException) else ex
    if isinstance(ex, OverrideParseException):  # Hydra's grammar: name the override; its last line is a link
        reason = [line for line in str(ex).splitlines() if line.strip() and not line.startswith("See https:")]
        return f"override '{ex.override}': {reason[-1].strip() if reason else 'cannot be parsed'} (expected key=value)"
    if isinstance(ex, MissingConfigException) and ex.missing_cfg_file:
        group, _, option = ex.missing_cfg_file.rpartition("/")
        options = group_options(group) if group else []
        if options:
            return f"{group}={option}: no such option{did_you_mean(option, options)}; valid: {', '.join(options)}"
        return f"config '{ex.missing_cfg_file}' not found"
    if isinstance(cause, MissingMandatoryValue) and getattr(cause, "full_key", ""):
        return f"{cause.full_key}: required and not given ({cause.full_key}=...)"
    if isinstance(cause, ValidationError):
        key = getattr(cause, "full_key", "") or "?"
        m = re.search(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", str(cause))
        if m:
            return f"{key}: expected {m.group(3).lower()}, got '{m.group(1)}'"
        m = re.search(r"Value '(.*)' is not a valid (\w+)", str(cause))
        if m:
            expected = "bool (true or false)" if m.group(2) == "bool" else m.group(2).lower()
            return f"{key}: expected {expected}, got '{m.group(1)}'"
        if "is not a ListConfig" in str(cause):  # a single value where the schema holds a list
            return f"{key}: expected a list, e.g. {key}=[a,b]"
        if re.search(r"Cannot assign \w+ to Dict", str(cause)):
            return f"{key}: expected name=value entries under it, e.g. {key}.<name>=<value>"
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
        if parent == "logger":  # each chosen logger's settings sit under its name
            hint = f" (a logger's settings go under its name: logger.<name>.{leaf}, e.g. logger.wandb.{leaf})"
        elif obj is dict and parent:  # a free-form section (model.config, trainer.extra): new keys take a '+'
            hint = f" (a new key there: +{key}=...)"
        return f"unknown key '{key}' in {where}{hint}"
    m = re.match(r"Ambiguous value for argument '([^=]+)=(.*)'", str(ex))
    if m:  # a comma in a value of a single run: Hydra reads it as a sweep
        key, value = m.groups()
        return (f"{key}={value}: a comma-separated value is a sweep; add -m to run one job per value, write "
                f"{key}=[{value}] for a list, or quote it for one string: {key}=\"'{value}'\"")
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
