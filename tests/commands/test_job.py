"""hfx/commands/job.py: a single run composed once and run as Hydra's run mode runs it; a sweep through Hydra's
main."""

from __future__ import annotations

import json
import subprocess
import sys

from omegaconf import OmegaConf

from tests.conftest import ROOT, TINY, hfx_env

# `hfx` with Hydra's compositions counted, the objects frozen out of the garbage collector while the run trains,
# and those still frozen at exit, printed at exit.
COUNTING = """
import atexit, gc, runpy, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
import hfx.commands.train as command
calls, frozen = [], [0]
compose, train = ConfigLoaderImpl.load_configuration, command.train
def counted(self, *args, **kwargs):
    calls.append(kwargs.get("run_mode"))
    return compose(self, *args, **kwargs)
def training(*args, **kwargs):
    frozen[0] = max(frozen[0], gc.get_freeze_count())
    return train(*args, **kwargs)
ConfigLoaderImpl.load_configuration, command.train = counted, training
atexit.register(lambda: print("COUNTS", len(calls), frozen[0], gc.get_freeze_count()))
sys.argv = ["hfx", *sys.argv[1:]]
runpy.run_module("hfx", run_name="__main__")
"""


def counted_hfx(*args: str, cache) -> tuple[subprocess.CompletedProcess, int, int, int]:
    r = subprocess.run([sys.executable, "-c", COUNTING, *args], cwd=ROOT, env=hfx_env(cache), capture_output=True,
                       text=True, timeout=600)
    counts = [line.split() for line in r.stdout.splitlines() if line.startswith("COUNTS ")]
    assert counts, r.stdout[-2000:] + r.stderr[-3000:]
    return r, *map(int, counts[-1][1:])


def test_a_single_run_is_composed_once_and_recorded_as_hydras_main_records_it(cache, tmp_path) -> None:
    run = tmp_path / "run"
    r, compositions, frozen, left_frozen = counted_hfx("train", *TINY, "trainer.max_steps=2", f"hydra.run.dir={run}",
                                                       f"cache_dir={cache}", cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    # hydra.main composes twice (once to read hydra.mode, once to run) besides hfx's check before any directory.
    assert compositions == 1
    assert frozen > 100_000  # the modules' objects, out of the collections before the first step
    assert left_frozen == 0  # collectable again once the job is done
    assert json.loads((run / "metrics.json").read_text())["train_loss"] > 0
    hydra = OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra
    assert hydra.mode == "RUN" and hydra.runtime.output_dir == str(run) and hydra.job.name == "train"
    assert hydra.overrides.hydra == [f"hydra.run.dir={run}", "hydra.mode=RUN"]
    assert OmegaConf.load(run / ".hydra" / "overrides.yaml") == [*TINY, "trainer.max_steps=2", f"cache_dir={cache}"]
    assert OmegaConf.load(run / ".hydra" / "config.yaml").trainer.max_steps == 2


def test_a_bad_value_is_refused_before_a_directory_with_one_composition(cache, tmp_path) -> None:
    run = tmp_path / "run"
    r, compositions, _, _ = counted_hfx("train", *TINY, "trainer.max_steps=-1", "trainer.num_train_epochs=0",
                                     f"hydra.run.dir={run}", cache=cache)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: trainer.num_train_epochs: expected a positive number (or trainer.max_steps > 0), got 0.0"]
    assert compositions == 1 and not run.exists()


def test_a_sweep_goes_through_hydras_main_and_freezes_nothing(cache, tmp_path) -> None:
    """Sweep jobs run one after another in one process: what one job leaves must stay collectable."""
    sweep = tmp_path / "sweep"
    r, compositions, frozen, _ = counted_hfx("train", "-m", *TINY, "trainer.max_steps=1", "trainer.seed=1,2",
                                          f"hydra.sweep.dir={sweep}", f"cache_dir={cache}", cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert compositions > 2 and frozen == 0
    assert sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file()) == ["0", "1"]
