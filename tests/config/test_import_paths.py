"""Configs name registry entries, never Python import paths: `_target_` anywhere, or a registry name or model name
that looks like a module, is refused in one line before anything runs; and hfx builds nothing from a config with
Hydra's instantiate, even when such a key gets through."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hfx.config.compose import validate
from hfx.errors import UsageError
from tests.conftest import TINY, assert_one_line_error, hfx_env, run_hfx

REFUSED = [
    ("+model._target_=os.system", "model._target_"),
    ("+trainer.extra._target_=os.system", "trainer.extra._target_"),
    ("+model.config._target_=builtins.print", "model.config._target_"),
    ("+model.config.layers=[1,{_target_:os.system}]", "model.config.layers[1]._target_"),
    ("+model.config._partial_=true", "model.config._partial_"),
    ("+hydra.callbacks.mine._target_=builtins.print", "hydra.callbacks.mine._target_"),  # Hydra would build it
    ("task.name=hfx.tasks.foo.Bar", "task.name"),
    ("model.architecture=transformers.BertModel", "model.architecture"),
    ("model.name_or_path=transformers.BertModel", "model.name_or_path"),
    ("tokenizer.kind=os.system", "tokenizer.kind"),
    ("peft.name=peft.LoraConfig", "peft.name"),
]


@pytest.mark.parametrize(("override", "key"), REFUSED, ids=[o for o, _ in REFUSED])
def test_import_paths_are_refused_before_anything_runs(override: str, key: str, cache, tmp_path) -> None:
    run = tmp_path / "run"
    r = run_hfx("train", *TINY, override, f"hydra.run.dir={run}", cache=cache)
    assert_one_line_error(r, key)
    assert r.returncode == 2 and not run.exists()


def test_a_sweep_and_a_dry_run_refuse_them_too(cache, tmp_path) -> None:
    for flag, *args in (["-m", "trainer.learning_rate=1e-3,2e-3"], ["--dry-run"]):
        r = run_hfx("train", flag, *TINY, *args, "+trainer.extra._target_=os.system",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}", cache=cache, cwd=tmp_path)
        assert_one_line_error(r, "trainer.extra._target_")
    assert not list(tmp_path.iterdir())


def test_an_experiment_file_with_a_target_is_refused() -> None:
    from hydra.core.config_store import ConfigStore

    from hfx.config.store import register_configs

    register_configs()
    store = ConfigStore.instance()
    store.store(group="experiment", name="with_target", package="_global_",
                node={"experiment_name": "with_target", "trainer": {"extra": {"callback": {"_target_": "os.system"}}}})
    try:
        with pytest.raises(UsageError, match=r"^trainer\.extra\.callback\._target_: configs name registry entries"):
            validate("train", ["experiment=with_target"])
    finally:
        store.repo["experiment"].pop("with_target.yaml", None)


def test_a_config_dir_experiment_is_refused(cache, tmp_path) -> None:
    """hfx composes its own conf/ and experiments only: an experiment from --config-dir is not an option."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\ntrainer:\n  extra:\n    _target_: os.system\n")
    r = run_hfx("train", "--config-dir", str(tmp_path), "experiment=mine", f"hydra.run.dir={tmp_path / 'run'}",
                cache=cache)
    assert_one_line_error(r, "experiment=mine")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_hfx_never_instantiates_the_user_config(cache, tmp_path) -> None:
    """With the refusal switched off, a `_target_` that would create a folder rides through a whole run inside the
    model config (composition, data, model, trainer, save): nothing instantiates it."""
    marker = tmp_path / "instantiated"
    code = ("import hfx.config.compose as c\n"
            "c.refuse_instantiate_overrides = c.refuse_import_paths = lambda *a, **k: None\n"
            "from hfx.cli import main\n"
            "main()\n")
    r = subprocess.run(
        [sys.executable, "-c", code, "train", *TINY, "trainer.max_steps=1", "dataset.max_train_samples=16",
         "dataset.max_eval_samples=8", f"cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}",
         "+model.config.hook._target_=os.makedirs", f"+model.config.hook._args_=['{marker}']"],
        env=hfx_env(cache), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()  # the run went through with the key in its config
    assert not marker.exists()
