"""Experiment loggers, read back from what they wrote: a W&B offline run and TensorBoard event files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, assert_one_line_error, hfx_env, run_hfx, train_ok

SMALL = [*TINY, "dataset.max_train_samples=64", "dataset.max_eval_samples=16", "trainer.max_steps=4",
         "trainer.logging_steps=1", "trainer.per_device_train_batch_size=16"]


def _wandb_summary(run_dir: Path, cache: Path) -> dict:
    (offline,) = list((run_dir / "wandb").glob("offline-run-*"))
    return json.loads(_leet(offline, cache, "--summary"))


def _wandb_records(run_dir: Path, cache: Path) -> tuple[dict, list[dict]]:
    """The run record (name, group, job type, tags) and the history records (one per `wandb.log` call) of a run
    dir's W&B offline run."""
    (offline,) = list((run_dir / "wandb").glob("offline-run-*"))
    records = [json.loads(line) for line in _leet(offline, cache).splitlines() if line.startswith("{")]
    (run,) = [r["run"] for r in records if r.get("type") == "run"]
    return run, [r["history"]["item"] for r in records if "history" in r]


def _leet(offline: Path, cache: Path, *flags: str) -> str:
    r = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", *flags, "--json",
                        str(offline)], capture_output=True, text=True, env=hfx_env(cache), timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


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
    record, _ = _wandb_records(run, cache)
    # A single run: named <experiment>-<run dir name>, no group, job type train.
    assert record["display_name"] == "default-run" and not record.get("run_group") and record["job_type"] == "train"


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


@pytest.mark.slow
def test_a_sweeps_wandb_runs_share_a_group_and_log_final_metrics_once(cache, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    tiny = [a for a in TINY if not a.startswith(("trainer.learning_rate=", "logger="))]
    r = run_hfx("train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={cache}", *tiny, "logger=wandb",
                "logger.tags=[smoke,tiny]", "logger.job_type=search", "trainer.learning_rate=0.001,0.002",
                "dataset.max_train_samples=32", "dataset.max_eval_samples=16", "trainer.max_steps=2",
                "trainer.logging_steps=1", "trainer.eval_strategy=steps", "trainer.eval_steps=1",
                cache=cache, env={"WANDB_API_KEY": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {}
    for job in (sweep / "0", sweep / "1"):
        summary = _wandb_summary(job, cache)
        runs[summary["config"]["trainer"]["learning_rate"]] = (job, summary, *_wandb_records(job, cache))
    assert sorted(runs) == [0.001, 0.002]  # each run's config is its job's resolved config, override included
    for lr, (job, summary, run, history) in runs.items():
        assert run.get("run_group") == f"default-{sweep.name}"  # one group per sweep: <experiment>-<sweep dir name>
        assert run["display_name"] == f"default-learning_rate={lr}"  # named from the swept override
        assert run["tags"] == ["smoke", "tiny"] and run["job_type"] == "search"
        assert any("train/loss" in h for h in history)
        evals = [h.get("train/global_step") for h in history if "eval/accuracy" in h]
        # Evaluated at steps 1 and 2 while training, then the final metrics once, at the last step.
        assert evals == [1, 2, 2], evals
        metrics = json.loads((job / "metrics.json").read_text())
        assert summary["summary"]["eval/accuracy"] == pytest.approx(metrics["eval_accuracy"])

@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_logger_whose_package_is_missing_is_one_line_with_the_install_command(cache, tmp_path, package) -> None:
    # sitecustomize runs at interpreter start: from then on `import <package>` fails as if it were not installed.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] == {package!r}:\n"
        f"            raise ModuleNotFoundError({f'No module named {package!r}'!r})\n"
        "sys.meta_path.insert(0, Hide())\n")
    assert subprocess.run([sys.executable, "-c", f"import {package}"], env={"PYTHONPATH": str(tmp_path)},
                          capture_output=True).returncode != 0  # the shim hides it
    tiny = [a for a in TINY if not a.startswith("logger=")]
    r = run_hfx("train", f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={cache}", *tiny, f"logger={package}",
                "trainer.max_steps=1", cache=cache, env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_error(r, f"pip install {package}")
    assert r.returncode == 2 and not (tmp_path / "run").exists()  # refused before a run directory exists
