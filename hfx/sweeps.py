"""Sweeps (`hfx train -m`) that leave something to read: the objective a job returns, one summary per sweep
directory (`summary.csv`, `summary.json`, a row per job as it ends), Optuna studies kept in SQLite and resumed,
and CPU threads shared out between the parallel jobs of one machine. The two Hydra callbacks here are configured
in conf/train.yaml (`hydra.callbacks`)."""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, open_dict, read_write

from hfx.errors import HfxError

log = logging.getLogger("hfx")

SUMMARY_JSON, SUMMARY_CSV = "summary.json", "summary.csv"
STUDY_DB = "optuna.db"
# Metrics where lower is better when nothing says otherwise (transformers treats names ending in `loss` so).
LOWER_IS_BETTER = ("loss", "perplexity")


# --- the objective --------------------------------------------------------------------------------------------

def objective_metric(cfg: DictConfig) -> str:
    """The metric a sweep optimises: `optimized_metric`, else eval_<trainer.metric_for_best_model>, else eval_loss."""
    if cfg.get("optimized_metric"):
        return cfg.optimized_metric
    name = cfg.trainer.metric_for_best_model or "eval_loss"
    return name if name.startswith("eval_") else f"eval_{name}"


def find_metric(name: str, metrics: dict[str, Any]) -> str | None:
    """The key of `name` among a run's metrics, as written or in the Trainer's `eval_` naming."""
    for key in (name, f"eval_{name}"):
        if key in metrics:
            return key
    return None


def objective_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """What a job returns to the sweeper. An explicit `optimized_metric` that the run did not report is an error
    (a search would otherwise optimise nothing); the inferred default is simply absent for tasks without it."""
    name = objective_metric(cfg)
    key = find_metric(name, metrics)
    if key is not None:
        return metrics[key]
    if cfg.get("optimized_metric"):
        known = ", ".join(sorted(k for k, v in metrics.items() if isinstance(v, (int, float))))
        raise HfxError(f"optimized_metric: '{name}' is not a metric of this run; its metrics: {known}")
    return None


def direction(cfg: DictConfig, metric: str) -> str:
    """`maximize` or `minimize`: the Optuna sweeper's direction when it runs the sweep, else
    `trainer.greater_is_better`, else lower-is-better for losses and perplexities."""
    sweeper = cfg.hydra.sweeper if "hydra" in cfg else {}
    if "direction" in sweeper:
        d = sweeper.direction
        d = d[0] if isinstance(d, (list, tuple, ListConfig)) else d  # multi-objective: ranked by the first
        return str(getattr(d, "name", d))
    if cfg.trainer.get("greater_is_better") is not None:
        return "maximize" if cfg.trainer.greater_is_better else "minimize"
    return "minimize" if any(s in metric for s in LOWER_IS_BETTER) else "maximize"


# --- CPU threads of parallel jobs ------------------------------------------------------------------------------

def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_jobs(hydra_cfg: Any) -> int:
    """How many jobs of this sweep run at once on this machine: the joblib launcher's n_jobs (-1 = one per core,
    as joblib counts), else 1."""
    launcher = hydra_cfg.launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n = launcher.get("n_jobs") or 1
    return max(cpu_cores() + 1 + n, 1) if n < 0 else n


def limit_threads(hydra_cfg: Any) -> int | None:
    """A job that runs beside others on one machine (hydra/launcher=joblib) takes cores // n_jobs CPU threads
    (torch, and OpenMP / MKL in anything it starts) rather than all of them: n jobs x all cores oversubscribes
    the machine. Returns the thread count set, or None when the job runs alone."""
    n = parallel_jobs(hydra_cfg)
    if n <= 1:
        return None
    threads = max(cpu_cores() // n, 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    log.info("sweep: %d parallel jobs on %d cores: %d CPU thread(s) for this job", n, cpu_cores(), threads)
    return threads


# --- the summary of a sweep ------------------------------------------------------------------------------------

def is_multirun(config: DictConfig) -> bool:
    mode = config.hydra.get("mode")
    return mode is not None and getattr(mode, "name", str(mode)) == "MULTIRUN"


class SweepSummary(Callback):
    """`summary.csv` and `summary.json` in the sweep directory, rewritten (atomically, under a lock: parallel jobs
    end at the same time) as each job ends: its overrides, status (ok / failed / interrupted, with the one-line
    reason the job left in its run dir), objective and metrics, wall time and run directory. A resumed Optuna
    search adds its rows to the same files."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        pin_sweep_dir(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_multirun(config):
            self._started[config.hydra.runtime.output_dir] = time.time()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not is_multirun(config):
            return
        try:
            started = self._started.pop(config.hydra.runtime.output_dir, None)
            record_job(Path(config.hydra.sweep.dir), config, job_return, started)
        except Exception as e:  # the summary must never cost a sweep its jobs
            log.warning("sweep summary not updated: %s: %s", type(e).__name__, e)


    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if (sweep_dir / SUMMARY_JSON).is_file():
            FINISHED.append(sweep_dir)


# Sweep directories finished in this process: `hfx train -m` reports their failed jobs in one line at the end.
FINISHED: list[Path] = []


def failed_jobs_error() -> str | None:
    """One line for the sweeps that just ended with failed jobs, or None."""
    for sweep_dir in FINISHED:
        jobs = read_summary(sweep_dir)["jobs"]
        failed = [j for j in jobs if j["status"] != "ok"]
        if failed:
            first = failed[0]
            return (f"{len(failed)} of {len(jobs)} sweep jobs did not finish (job {first['job']}: {first['error']}); "
                    f"the others' results are in {shown_path(sweep_dir / 'summary.csv')} (`hfx sweeps` ranks them)")
    return None


def pin_sweep_dir(config: DictConfig) -> None:
    """Resolve the sweep directory once, here, for every job: `${run_stamp:}` gives each process its own stamp,
    so jobs run in other processes (the joblib launcher) would each land in a sweep directory of their own.
    Every job's config is composed again from `hydra.overrides.hydra`, so the resolved path goes there."""
    from hfx.config.compose import quoted

    sweep_dir = str(config.hydra.sweep.dir)
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.sweep.dir = sweep_dir
        config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted(sweep_dir)}")


def record_job(sweep_dir: Path, config: DictConfig, job_return: Any, started: float | None) -> None:
    row = job_row(config, job_return, started)
    metric = objective_metric(config)
    with locked(sweep_dir / ".summary.lock"):
        summary = read_summary(sweep_dir) if (sweep_dir / SUMMARY_JSON).is_file() else {"jobs": []}
        jobs = [j for j in summary["jobs"] if j["run_dir"] != row["run_dir"]] + [row]
        jobs.sort(key=lambda j: (j.get("started") or "", j["job"]))
        write_summary(sweep_dir, {"sweep_dir": shown_path(sweep_dir), "objective": metric,
                                  "direction": direction(config, metric), "jobs": jobs})


def job_row(config: DictConfig, job_return: Any, started: float | None) -> dict[str, Any]:
    from hydra.core.utils import JobStatus

    from hfx.redaction import redact, redact_text

    run_dir = Path(config.hydra.runtime.output_dir)
    written = run_dir / "metrics.json"
    # A sweep run again into the same directory: an earlier job's metrics are not this job's.
    fresh = written.is_file() and (started is None or written.stat().st_mtime >= started - 1)
    metrics = json.loads(written.read_text()) if fresh else {}
    status, error = "ok", ""
    # A failed job returns None (so the sweep goes on without a traceback) and leaves FAILED / INTERRUPTED.
    if job_return.status != JobStatus.COMPLETED or (run_dir / "FAILED").is_file() or (
            run_dir / "INTERRUPTED").is_file():
        status = "interrupted" if (run_dir / "INTERRUPTED").is_file() else "failed"
        error = first_line(run_dir / ("INTERRUPTED" if status == "interrupted" else "FAILED"))
        if not error:
            from hfx.commands.job import library_error

            error = library_error(job_return._return_value)  # Hydra keeps the exception there
    key = find_metric(objective_metric(config), metrics)
    now = time.time()
    return {
        "job": int(config.hydra.job.num),
        "status": status,
        "objective": metrics[key] if key else None,
        "overrides": redact(dict(o.split("=", 1) for o in job_return.overrides or [] if "=" in o)),
        "metrics": metrics,
        "wall_s": round(now - started, 1) if started else None,
        "run_dir": shown_path(run_dir),
        "error": redact_text(error),
        "started": datetime.datetime.fromtimestamp(started or now).isoformat(timespec="seconds"),
    }


def first_line(path: Path) -> str:
    if not path.is_file():
        return ""
    lines = path.read_text().strip().splitlines()
    return lines[0] if lines else ""


def shown_path(path: Path) -> str:
    """Relative to the working directory when under it (as `runs/...` in the README), else absolute."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_summary(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / SUMMARY_JSON).read_text())


def write_summary(sweep_dir: Path, summary: dict[str, Any]) -> None:
    from hfx.files import write_text

    write_text(sweep_dir / SUMMARY_JSON, json.dumps(summary, indent=2, default=str) + "\n")
    write_text(sweep_dir / SUMMARY_CSV, summary_csv(summary["jobs"]))


def summary_csv(jobs: list[dict[str, Any]]) -> str:
    """One row per job: job, status, objective, one column per override and per metric, wall_s, run_dir, error."""
    overrides = list(dict.fromkeys(k for j in jobs for k in j["overrides"]))
    metrics = sorted({k for j in jobs for k in j["metrics"]}, key=lambda k: (not k.startswith("eval_"), k))
    columns = ["job", "status", "objective", *overrides, *metrics, "wall_s", "run_dir", "error", "started"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for j in jobs:
        writer.writerow({**{k: j.get(k) for k in ("job", "status", "objective", "wall_s", "run_dir", "error",
                                                   "started")},
                         **j["overrides"], **j["metrics"]})
    return out.getvalue()


def ranked(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Jobs best first by the objective; jobs without a value (failed, interrupted) last, in job order."""
    sign = -1 if summary.get("direction") == "maximize" else 1
    scored = [j for j in summary["jobs"] if isinstance(j.get("objective"), (int, float))]
    rest = [j for j in summary["jobs"] if j not in scored]
    return sorted(scored, key=lambda j: sign * j["objective"]) + rest


# --- Optuna studies in SQLite ----------------------------------------------------------------------------------

class OptunaStudy(Callback):
    """Makes an Optuna search resumable. The study is stored in SQLite (`sqlite:///<sweep dir>/optuna.db` unless
    `hydra.sweeper.storage` names another; the study is named after the experiment unless
    `hydra.sweeper.study_name` is set), and `hydra.sweeper.n_trials` counts the trials the study already finished:
    run the same command again and the search continues where it stopped. A trial the interruption left running is
    retried first with its own parameters."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        if "optuna" not in str(sweeper.get("_target_", "")):
            return
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its SQLite schema set-up, line by line
        with read_write(sweeper), open_dict(sweeper):
            if sweeper.storage is None:
                sweeper.storage = f"sqlite:///{Path(str(config.hydra.sweep.dir)).resolve() / STUDY_DB}"
            if sweeper.study_name is None:
                sweeper.study_name = config.experiment_name
            storage, name = str(sweeper.storage), str(sweeper.study_name)
            sweeper.storage, sweeper.study_name = storage, name  # resolved once, here
            if storage.startswith("sqlite:///"):
                Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            done, retried = resume_study(storage, name)
            if done or retried:
                log.info("optuna: study '%s' (%s) resumed: %d of %d trials finished%s", name, storage, done,
                         sweeper.n_trials, f"; {retried} interrupted trial(s) run again first" if retried else
                         "; nothing left to run" if done >= sweeper.n_trials else "")
            sweeper.n_trials = max(int(sweeper.n_trials) - done, 0)


def resume_study(storage_url: str, name: str) -> tuple[int, int]:
    """(trials finished, trials put back in the queue): trials a killed sweep left RUNNING become WAITING again,
    so the sweeper's next `ask()` hands out the same trial (number and parameters) instead of a new one.
    Failed trials do not count towards n_trials (Optuna's MaxTrialsCallback counts the same way)."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(storage_url)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0, 0  # a new study: the sweeper creates it
    trials = storage.get_all_trials(study_id, deepcopy=False)
    retried = sum(storage.set_trial_state(t._trial_id, TrialState.WAITING)
                  for t in trials if t.state == TrialState.RUNNING)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return done, retried
