"""Every option of every config group, and every experiment file, composes against its schema."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from hfx.config.compose import check_composed, compose
from hfx.config.store import experiment_names, register_configs
from hfx.paths import conf_dir

register_configs()

GROUPS = sorted(p.name for p in conf_dir().iterdir() if p.is_dir())
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((conf_dir() / g).glob("*.yaml"))]


def test_groups_are_found() -> None:
    assert {"model", "tokenizer", "dataset", "task", "peft", "trainer", "logger"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes(group: str, option: str) -> None:
    cfg = compose("train", [f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=False)
    if group == "dataset":
        assert cfg.dataset.path, "a dataset option must set dataset.path"
    if group == "task":
        from hfx.tasks import TASKS

        assert cfg.task.name in TASKS, f"conf/task/{option}.yaml names an unregistered task"


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_composes_and_validates(name: str) -> None:
    cfg = compose("train", [f"experiment={name}"])
    assert cfg.experiment_name == name, "an experiment sets experiment_name to its file name"
    # Registry names resolve; local data dirs are the user's to point at (tests use ../shared/data).
    if not cfg.dataset.data_dir:
        check_composed(cfg)


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_starts_with_its_command(name: str) -> None:
    from hfx.paths import experiments_dir

    first = (experiments_dir() / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("# hfx train experiment=" + name), first


def test_default_config_is_the_documented_default() -> None:
    cfg = compose("train", [])
    assert cfg.task.name == "sequence_classification"
    assert cfg.peft.name == "lora"
    assert cfg.model.name_or_path and "minilm" in cfg.model.name_or_path.lower()
    check_composed(cfg)


def test_misspelled_key_fails_at_composition() -> None:
    with pytest.raises(Exception, match="learning_rat"):
        compose("train", ["trainer.learning_rat=1e-3"])


def test_wrong_type_fails_at_composition() -> None:
    with pytest.raises(Exception, match="learning_rate"):
        compose("train", ["trainer.learning_rate=fast"])


def test_task_options_are_typed_per_task() -> None:
    with pytest.raises(Exception, match="not_an_option"):
        compose("train", ["task.not_an_option=1"])


def test_sweep_prevalidation_reads_hydra_grammar() -> None:
    from hfx.config.compose import first_of_each_sweep

    got = first_of_each_sweep([
        "trainer.learning_rate=1e-3,2e-3",
        "dataset.name='a,b'",  # a quoted comma is one value, not a sweep
        "trainer.seed=range(3,6)",
        "model=glob(tiny_*)",  # cannot be enumerated without the config loader: left out
        "trainer.weight_decay=interval(0,0.1)",  # Optuna's: left out
        "+extra=choice(x,y)",
    ])
    assert got == ["trainer.learning_rate=0.001", "dataset.name='a,b'", "trainer.seed=3", "+extra=x"]


def test_peft_and_logger_options_have_their_own_schema() -> None:
    cfg = compose("train", ["peft=lora", "peft.r=4", "logger=wandb", "logger.wandb.project=p"])
    assert cfg.peft.r == 4 and cfg.logger.wandb.project == "p" and list(cfg.logger) == ["wandb"]
    with pytest.raises(Exception, match="r"):
        compose("train", ["peft=none", "peft.r=4"])  # full fine-tuning has no rank
    with pytest.raises(Exception, match="project"):
        compose("train", ["logger=tensorboard", "logger.tensorboard.project=p"])
    with pytest.raises(Exception, match="tracking_uri"):
        compose("train", ["logger=mlflow", "logger.mlflow.tracking_uri=[1]"])


def test_several_loggers_at_once_each_under_its_name() -> None:
    cfg = compose("train", ["logger=[wandb,tensorboard,mlflow,trackio]", "logger.trackio.project=q"])
    assert list(cfg.logger) == ["wandb", "tensorboard", "mlflow", "trackio"]
    assert cfg.logger.trackio.project == "q" and cfg.logger.wandb.project == "hfx"
    assert dict(compose("train", []).logger) == {}  # logger=none, the default
    with pytest.raises(Exception, match="peft.r"):
        compose("train", ["peft=lora", "peft.r=many"])


def test_a_saved_config_is_typed_again() -> None:
    from hfx.config.store import typed_train_config
    from hfx.errors import HfxError

    saved = OmegaConf.create(OmegaConf.to_container(compose("train", ["peft.r=4"]), resolve=True))
    cfg = typed_train_config(saved, "run=x: config.yaml")
    assert cfg.peft.r == 4 and cfg.trainer.learning_rate == 5e-4
    from omegaconf.errors import ConfigAttributeError

    with pytest.raises(ConfigAttributeError):
        cfg.peft.rank = 3  # struct: the schema's keys only
    saved.trainer.learning_rat = 1.0
    with pytest.raises(HfxError, match="learning_rat"):
        typed_train_config(saved, "run=x: config.yaml")
