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


@pytest.mark.extended  # about 25-30 s; out of CI, which measured 19:28 with it
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


@pytest.fixture(scope="module")
def tracked_sweep(hfx_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-job sweep logged to every tracker at once: W&B (offline), TensorBoard, MLflow and trackio."""
    sweep = tmp_path_factory.mktemp("tracked") / "sweep"
    tiny = [a for a in TINY if not a.startswith(("trainer.learning_rate=", "logger="))]
    r = run_hfx("train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={hfx_cache}", *tiny,
                "logger=[wandb,tensorboard,mlflow,trackio]", "logger.wandb.tags=[smoke,tiny]",
                "logger.wandb.job_type=search", "trainer.learning_rate=0.001,0.002",
                "dataset.max_train_samples=32", "dataset.max_eval_samples=16", "trainer.max_steps=2",
                "trainer.logging_steps=1", "trainer.eval_strategy=steps", "trainer.eval_steps=1",
                cache=hfx_cache, env={"WANDB_API_KEY": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    return sweep


def _jobs(sweep: Path) -> dict[float, tuple[Path, dict]]:
    """learning rate -> (job dir, metrics.json) of the tracked sweep's two jobs."""
    from omegaconf import OmegaConf

    jobs = {}
    for job in (sweep / "0", sweep / "1"):
        lr = OmegaConf.load(job / "config.yaml").trainer.learning_rate
        jobs[lr] = (job, json.loads((job / "metrics.json").read_text()))
    assert sorted(jobs) == [0.001, 0.002]
    return jobs


@pytest.mark.slow
def test_a_sweeps_wandb_runs_share_a_group_and_log_final_metrics_once(tracked_sweep, cache) -> None:
    for lr, (job, metrics) in _jobs(tracked_sweep).items():
        summary = _wandb_summary(job, cache)
        run, history = _wandb_records(job, cache)
        assert summary["config"]["trainer"]["learning_rate"] == lr  # the job's resolved config, override included
        assert run.get("run_group") == f"default-{tracked_sweep.name}"  # one group per sweep
        assert run["display_name"] == f"default-learning_rate={lr}"  # named from the swept override
        assert run["tags"] == ["smoke", "tiny"] and run["job_type"] == "search"
        assert any("train/loss" in h for h in history)
        evals = [h.get("train/global_step") for h in history if "eval/accuracy" in h]
        # Evaluated at steps 1 and 2 while training, then the final metrics once, at the last step.
        assert evals == [1, 2, 2], evals
        assert summary["summary"]["eval/accuracy"] == pytest.approx(metrics["eval_accuracy"])


@pytest.mark.slow
def test_tensorboard_and_mlflow_record_every_job_of_the_sweep(tracked_sweep) -> None:
    import os

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    jobs = _jobs(tracked_sweep)
    for job, metrics in jobs.values():
        (events,) = {e.parent for e in (job / "tensorboard").rglob("events.out.tfevents.*")}
        acc = EventAccumulator(str(events))
        acc.Reload()
        assert "train/loss" in acc.Tags()["scalars"]
        assert acc.Scalars("eval/accuracy")[-1].value == pytest.approx(metrics["eval_accuracy"])

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    # One local file store for the sweep (no server), one MLflow run per job.
    client = MlflowClient(tracking_uri=(tracked_sweep / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("default")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["default-learning_rate=0.001", "default-learning_rate=0.002"]
    for lr, (job, metrics) in jobs.items():
        run = runs[f"default-learning_rate={lr}"]
        assert (job / "mlflow_run_id").read_text().strip() == run.info.run_id
        assert float(run.data.params["trainer.learning_rate"]) == lr  # the resolved config as params
        assert run.data.params["logger.mlflow.tracking_uri"] == "None"
        assert run.data.tags["hfx.sweep"] == f"default-{tracked_sweep.name}"
        assert run.data.metrics["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
        history = client.get_metric_history(run.info.run_id, "eval_accuracy")
        assert [m.step for m in history] == [1, 2, 2]  # twice while training, the final metrics once
        assert any(m.step == 2 for m in client.get_metric_history(run.info.run_id, "loss"))


def _trackio_rows(sweep: Path) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """trackio's local store of a sweep, read with sqlite: run name -> config, run name -> logged metric rows."""
    import sqlite3

    (db,) = (sweep / "trackio").glob("*.db")
    assert db.stem == "default"  # the project: the experiment's name
    with sqlite3.connect(db) as conn:
        configs = {name: json.loads(c) for name, c in conn.execute("select run_name, config from configs")}
        rows: dict[str, list[dict]] = {}
        for name, m in conn.execute("select run_name, metrics from metrics order by step"):
            rows.setdefault(name, []).append(json.loads(m))
    return configs, rows


@pytest.mark.slow
def test_trackio_records_every_job_with_its_group_config_and_metrics(tracked_sweep) -> None:
    configs, rows = _trackio_rows(tracked_sweep)
    for lr, (_, metrics) in _jobs(tracked_sweep).items():
        name = f"default-learning_rate={lr}"
        assert configs[name]["_Group"] == f"default-{tracked_sweep.name}"
        assert configs[name]["trainer"]["learning_rate"] == lr
        evals = [r["eval/accuracy"] for r in rows[name] if "eval/accuracy" in r]
        assert len(evals) == 3 and evals[-1] == pytest.approx(metrics["eval_accuracy"])  # the final metrics once
        assert any("train/loss" in r for r in rows[name])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_local_dashboard_shows_the_sweeps_runs_in_a_browser(tracked_sweep, cache) -> None:
    """`hfx dashboard <sweep dir>` serves trackio's dashboard on localhost; headless Chromium (Debian's, driven by
    Playwright) finds both runs and their metrics on the page."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "hfx", "dashboard", str(tracked_sweep), f"port={port}"],
                              env=hfx_env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        for line in server.stdout:  # the server prints its address once it listens
            if "launched at:" in line:
                url = line.split("launched at:")[1].strip().split("\x1b")[0]
                break
        assert url == f"http://127.0.0.1:{port}/?project=default", url
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(chromium), headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                page = browser.new_page()
                page.goto(url)
                for name in ("default-learning_rate=0.001", "default-learning_rate=0.002"):
                    page.get_by_text(name).first.wait_for(timeout=60_000)
                page.get_by_text("accuracy", exact=True).first.wait_for(timeout=60_000)
                text = page.inner_text("body")
            finally:
                browser.close()
        assert "Runs (2)" in text and "loss" in text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_dashboard_without_a_trackio_store_is_one_line(cache, tmp_path) -> None:
    r = run_hfx("dashboard", str(tmp_path), cache=cache)
    assert_one_line_error(r, "no trackio store")
    assert r.returncode == 2


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
