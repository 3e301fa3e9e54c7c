"""Experiment loggers, read back from what they wrote: a W&B offline run and TensorBoard event files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, hfx_env, train_ok

SMALL = [*TINY, "dataset.max_train_samples=64", "dataset.max_eval_samples=16", "trainer.max_steps=4",
         "trainer.logging_steps=1", "trainer.per_device_train_batch_size=16"]


def _wandb_summary(run_dir: Path, cache: Path) -> dict:
    (offline,) = list((run_dir / "wandb").glob("offline-run-*"))
    wandb_bin = Path(sys.executable).with_name("wandb")
    r = subprocess.run([str(wandb_bin), "leet", "inspect", "--summary", "--json", str(offline)],
                       capture_output=True, text=True, env=hfx_env(cache), timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.slow
def test_wandb_offline_run_has_resolved_config_and_metrics(cache, tmp_path) -> None:
    run = tmp_path / "run"
    metrics = train_ok(run, *SMALL, "logger=wandb", "trainer.learning_rate=0.00077", cache=cache,
                       env={"WANDB_API_KEY": ""})
    summary = _wandb_summary(run, cache)
    config = summary["config"]
    assert config["trainer"]["learning_rate"] == 0.00077  # the CLI override, in the resolved config
    assert config["model"]["architecture"] == "bert" and config["task"]["name"] == "sequence_classification"
    assert summary["summary"]["eval/accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert "train_loss" in summary["summary"]
    history = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json",
                              str(next((run / "wandb").glob("offline-run-*")))],
                             capture_output=True, text=True, env=hfx_env(cache), timeout=120).stdout
    assert '"train/loss"' in history  # per-step training loss was logged (secrets: tests/test_secrets.py)


@pytest.mark.slow
def test_tensorboard_writes_event_files(cache, tmp_path) -> None:
    run = tmp_path / "run"
    train_ok(run, *SMALL, "logger=tensorboard", cache=cache)
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_wandb_run(cache, tmp_path) -> None:
    from tests.conftest import run_hfx

    run = tmp_path / "run"
    train_ok(run, *SMALL, "logger=wandb", "trainer.save_steps=2", cache=cache, env={"WANDB_API_KEY": ""})
    r = run_hfx("train", f"resume={run}", "trainer.max_steps=6", cache=cache, env={"WANDB_API_KEY": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in (run / "train.log").read_text()
    first, second = sorted((run / "wandb").glob("offline-run-*"))
    # offline-run-<time>-<run id>: one W&B run id, so `wandb sync` puts both sessions into one run.
    assert first.name.rsplit("-", 1)[1] == second.name.rsplit("-", 1)[1]
    history = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json",
                              str(second)], capture_output=True, text=True, env=hfx_env(cache), timeout=120).stdout
    records = [json.loads(line) for line in history.splitlines() if line.startswith("{")]
    steps = [r["history"]["item"].get("train/global_step") for r in records if "history" in r]
    assert 6 in steps and 1 not in steps  # the second session logged steps 5-6 only
