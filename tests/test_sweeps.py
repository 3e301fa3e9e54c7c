"""Sweeps: the objective a job returns, summary.csv / summary.json of every sweep, `hfx sweeps`, the hparams_search
group, Optuna searches resumed from SQLite after a kill, and parallel jobs (joblib) in one sweep directory."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hfx.errors import HfxError
from hfx.sweeps import cpu_cores, direction, objective_value, ranked, summary_csv
from tests.conftest import ROOT, TINY, hfx_env, run_hfx

SMALL = [*TINY, "dataset.max_train_samples=32", "dataset.max_eval_samples=16", "trainer.max_steps=2"]


def _sweep(cache: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run_hfx("train", "-m", *SMALL, f"cache_dir={cache}", *args, cache=cache, cwd=cwd)


def _summary(sweep_dir: Path) -> tuple[dict, list[dict]]:
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    return json.loads((sweep_dir / "summary.json").read_text()), rows


def _table(stdout: str) -> list[list[str]]:
    """The rows of `hfx sweeps`' table (header first), cells split on runs of 2+ spaces."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:] if line.strip() and not line.startswith(" ")]


def _cfg(**top) -> OmegaConf:
    return OmegaConf.create({"optimized_metric": None, "trainer": {"metric_for_best_model": None,
                                                                   "greater_is_better": None}, **top})


# --- the objective, fast ---------------------------------------------------------------------------------------

def test_objective_is_the_optimized_metric_or_the_inferred_one() -> None:
    metrics = {"eval_loss": 0.7, "eval_accuracy": 0.6, "train_loss": 0.8}
    assert objective_value(_cfg(optimized_metric="eval_accuracy"), metrics) == 0.6
    assert objective_value(_cfg(optimized_metric="accuracy"), metrics) == 0.6  # the Trainer's eval_ prefix added
    assert objective_value(_cfg(optimized_metric="train_loss"), metrics) == 0.8
    assert objective_value(_cfg(), metrics) == 0.7  # null: eval_loss
    assert objective_value(_cfg(trainer={"metric_for_best_model": "accuracy"}), metrics) == 0.6
    assert objective_value(_cfg(), {"eval_perplexity": 3.0}) is None  # inferred and absent: nothing to return


def test_an_optimized_metric_the_run_lacks_is_one_line_naming_the_key_and_the_metrics() -> None:
    with pytest.raises(HfxError) as e:
        objective_value(_cfg(optimized_metric="eval_acc"), {"eval_loss": 0.7, "eval_accuracy": 0.6})
    assert str(e.value) == "optimized_metric: 'eval_acc' is not a metric of this run; its metrics: eval_accuracy, eval_loss"


def test_direction_follows_the_sweeper_then_the_trainer_then_the_name() -> None:
    assert direction(_cfg(hydra={"sweeper": {"direction": "maximize"}}), "eval_loss") == "maximize"
    assert direction(_cfg(hydra={"sweeper": {"direction": ["minimize", "maximize"]}}), "x") == "minimize"
    assert direction(_cfg(trainer={"greater_is_better": False}), "eval_accuracy") == "minimize"
    assert direction(_cfg(), "eval_loss") == "minimize" and direction(_cfg(), "eval_perplexity") == "minimize"
    assert direction(_cfg(), "eval_accuracy") == "maximize"


def test_ranking_puts_jobs_without_an_objective_last() -> None:
    jobs = [{"job": i, "objective": v, "overrides": {"x": str(i)}, "metrics": {}, "run_dir": str(i)}
            for i, v in enumerate([0.5, None, 0.9, 0.7])]
    assert [j["job"] for j in ranked({"direction": "maximize", "jobs": jobs})] == [2, 3, 0, 1]
    assert [j["job"] for j in ranked({"direction": "minimize", "jobs": jobs})] == [0, 3, 2, 1]
    rows = list(csv.DictReader(summary_csv(jobs).splitlines()))
    assert [r["x"] for r in rows] == ["0", "1", "2", "3"] and rows[1]["objective"] == ""


# --- the hparams_search group, fast -----------------------------------------------------------------------------

SEARCHES = sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_names_keys_the_config_has(search: str) -> None:
    """Each search space names real config keys (a typo would fail only when the first trial starts) and sets an
    explicit optimized_metric, a direction and persistent storage."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hfx.config.store import register_configs
    from hfx.paths import conf_dir

    register_configs()
    GlobalHydra.instance().clear()
    first = (ROOT / "conf" / "hparams_search" / f"{search}.yaml").read_text().splitlines()[1]
    experiment = re.findall(r"experiment=(\w+)", first)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", [f"hparams_search={search}", *(f"experiment={e}" for e in experiment)],
                      return_hydra_config=True)
    assert first.startswith("# hfx train -m ") and f"hparams_search={search}" in first, first
    assert cfg.optimized_metric and cfg.hydra.sweeper.direction in ("maximize", "minimize")
    assert str(cfg.hydra.sweeper.storage).startswith("sqlite:///")
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", f"{search}: no key {key}"


def test_train_help_lists_the_searches(cache) -> None:
    r = run_hfx("train", "--help", cache=cache)
    assert r.returncode == 0
    assert "hparams_search [null]" in r.stdout
    for search in SEARCHES:
        assert re.search(rf"^\s+{search}\s+hfx train -m ", r.stdout, re.M), r.stdout


def test_hfx_sweeps_without_a_sweep_is_one_line(cache, tmp_path) -> None:
    r = run_hfx("sweeps", cache=cache, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: no sweep with a summary.json under multirun/")
    r = run_hfx("sweeps", str(tmp_path), cache=cache, cwd=tmp_path)
    assert r.returncode == 2 and "no summary.json" in r.stderr


# --- end to end ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_grid_leaves_a_summary_that_hfx_sweeps_ranks(cache, tmp_path) -> None:
    r = _sweep(cache, tmp_path, "trainer.learning_rate=1e-3,3e-3", "trainer.seed=1,2")
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "multirun" / "default").iterdir()
    summary, rows = _summary(sweep_dir)
    jobs = summary["jobs"]
    assert (summary["objective"], summary["direction"]) == ("eval_loss", "minimize")
    grid = sorted((float(j["overrides"]["trainer.learning_rate"]), int(j["overrides"]["trainer.seed"])) for j in jobs)
    assert grid == [(1e-3, 1), (1e-3, 2), (3e-3, 1), (3e-3, 2)]
    for job in jobs:
        run_dir = tmp_path / job["run_dir"]
        assert (job["status"], job["error"]) == ("ok", "")
        assert job["metrics"] == json.loads((run_dir / "metrics.json").read_text())
        assert job["objective"] == job["metrics"]["eval_loss"] and job["wall_s"] > 0
        lr = float(job["overrides"]["trainer.learning_rate"])
        assert f"learning_rate: {lr}" in (run_dir / "config.yaml").read_text()
    assert [(r["job"], r["status"], r["run_dir"], float(r["eval_loss"])) for r in rows] == \
        [(str(j["job"]), "ok", j["run_dir"], j["metrics"]["eval_loss"]) for j in jobs]
    assert {"trainer.learning_rate", "trainer.seed", "eval_accuracy", "wall_s"} <= set(rows[0])

    shown = run_hfx("sweeps", cache=cache, cwd=tmp_path)  # the newest sweep under multirun/
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == run_hfx("sweeps", str(sweep_dir), cache=cache, cwd=tmp_path).stdout.replace(
        str(sweep_dir), str(sweep_dir.relative_to(tmp_path)))
    header, *table = _table(shown.stdout)
    assert header[:3] == ["rank", "job", "eval_loss"] and {"trainer.learning_rate", "trainer.seed"} <= set(header)
    best_first = sorted(jobs, key=lambda j: j["objective"])
    assert [row[0] for row in table] == ["1", "2", "3", "4"]
    assert [row[-1] for row in table] == [Path(j["run_dir"]).name for j in best_first]


@pytest.mark.slow
def test_a_failed_job_is_recorded_and_the_others_kept(cache, tmp_path) -> None:
    # The first job fails inside the run (a hidden size the heads do not divide); the second still runs.
    r = _sweep(cache, tmp_path, "model.config.hidden_size=65,64", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 of 2 sweep jobs did not finish (job 0: ValueError" in errors[0], r.stderr[-3000:]
    assert errors == r.stderr.strip().splitlines()[-1:]
    summary, rows = _summary(tmp_path / "sweep")
    failed, ok = summary["jobs"]
    assert (failed["job"], failed["status"], ok["job"], ok["status"]) == (0, "failed", 1, "ok")
    assert "ValueError" in failed["error"] and "hidden size (65)" in failed["error"]
    assert failed["error"] == (tmp_path / failed["run_dir"]).joinpath("FAILED").read_text().strip()
    assert failed["objective"] is None and ok["objective"] == ok["metrics"]["eval_loss"]
    assert [r["status"] for r in rows] == ["failed", "ok"] and rows[0]["error"] == failed["error"]

    shown = run_hfx("sweeps", str(tmp_path / "sweep"), cache=cache, cwd=tmp_path)
    assert "2 jobs (1 ok, 1 failed)" in shown.stdout.splitlines()[0]
    header, best, last = _table(shown.stdout)
    assert (best[0], best[-2], last[0], last[-2]) == ("1", "ok", "-", "failed")
    assert f"  job 0 failed: {failed['error']}" in shown.stdout


def _trials(db: Path) -> list[tuple[int, str, dict, float | None]]:
    """(number, state, parameters, value) of each trial, read from Optuna's SQLite file as it is."""
    with sqlite3.connect(db) as con:
        trials = con.execute("SELECT trial_id, number, state FROM trials ORDER BY number").fetchall()
        params = con.execute("SELECT trial_id, param_name, param_value FROM trial_params").fetchall()
        values = dict(con.execute("SELECT trial_id, value FROM trial_values").fetchall())
    return [(number, state, {p: v for t, p, v in params if t == trial_id}, values.get(trial_id))
            for trial_id, number, state in trials]


@pytest.mark.slow
def test_an_interrupted_optuna_search_resumes_from_sqlite(cache, tmp_path) -> None:
    args = ["train", "-m", "hparams_search=sequence_classification", "hydra.sweeper.n_trials=3",
            *[a for a in SMALL if a != "peft=none"], f"cache_dir={cache}"]  # the search tunes LoRA's r and alpha
    search = tmp_path / "multirun" / "default" / "search_sequence_classification"
    proc = subprocess.Popen([sys.executable, "-m", "hfx", *args], cwd=tmp_path, env=hfx_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # killed (no chance to clean up) once trial 0 is summarised and trial 1 has started
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (search / "summary.json").is_file() and len([p for p in search.glob("*_*") if p.is_dir()]) == 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the search ended before it could be interrupted"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _trials(search / "optuna.db")
    assert [(n, s) for n, s, _, _ in before] == [(0, "COMPLETE"), (1, "RUNNING")]

    r = run_hfx(*args, cache=cache, cwd=tmp_path)  # the same command again
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed: 1 of 3 trials finished; 1 interrupted trial(s) run again first" in r.stdout + r.stderr
    after = _trials(search / "optuna.db")
    assert [(n, s) for n, s, _, _ in after] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert after[1][2] == before[1][2]  # the interrupted trial ran again with its own parameters
    summary, rows = _summary(search)  # one summary for the search, rows from both invocations
    assert [j["status"] for j in summary["jobs"]] == ["ok"] * 3 and len(rows) == 3
    assert (summary["objective"], summary["direction"]) == ("eval_accuracy", "maximize")
    assert [j["objective"] for j in summary["jobs"]] == [value for *_, value in after]
    shown = run_hfx("sweeps", cache=cache, cwd=tmp_path)
    assert "3 jobs (3 ok), ranked by eval_accuracy (higher is better)" in shown.stdout


@pytest.mark.slow
def test_joblib_runs_two_jobs_at_once_into_one_sweep_dir(cache, tmp_path) -> None:
    r = _sweep(cache, tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.learning_rate=1e-3,2e-3")
    assert r.returncode == 0, r.stderr[-3000:]
    # One sweep dir (multirun/default/<stamp>), though each job composed its config in a worker process of its own.
    (sweep_dir,) = (tmp_path / "multirun" / "default").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    summary, _ = _summary(sweep_dir)
    jobs = summary["jobs"]
    assert sorted(j["job"] for j in jobs) == [0, 1] and {j["status"] for j in jobs} == {"ok"}
    threads = max(cpu_cores() // 2, 1)
    for job in jobs:
        log = (tmp_path / job["run_dir"] / "train.log").read_text()
        assert f"2 parallel jobs on {cpu_cores()} cores: {threads} CPU thread(s) for this job" in log
    starts = [time.mktime(time.strptime(j["started"], "%Y-%m-%dT%H:%M:%S")) for j in jobs]
    ends = [s + j["wall_s"] for s, j in zip(starts, jobs, strict=True)]
    assert max(starts) < min(ends), "the two jobs did not overlap"
