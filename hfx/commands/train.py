"""`hfx train [overrides]`: the run, top to bottom: config, data, tokenizer, model, PEFT, trainer, train,
evaluate, save."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hfx.errors import HfxError

log = logging.getLogger("hfx")

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_loss")
INFO_FLAGS = {"--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc"}
MULTIRUN_FLAGS = {"-m", "--multirun"}


def main(args: list[str]) -> None:
    from hfx.commands.job import run_job
    from hfx.config.compose import check_composed, validate
    from hfx.distributed import shared_run_dir

    if {"--help", "-h"} & set(args):
        from hfx.commands.help import print_train_help

        print_train_help()
        return
    if "--dry-run" in args:  # hfx check: config, a few rows, parameter counts, the launch command; no run
        from hfx.commands import check

        check.main([a for a in args if a != "--dry-run"])
        return
    checked_here = not set(args) & INFO_FLAGS and not launched_by_hfx()  # hfx's ranks: checked by their launcher
    if checked_here:
        from hfx.resume import resume_args

        args = resume_args(args)  # resume=<run dir>|auto: that run's overrides, checked, in its directory
    if not any(a.startswith("-") for a in args) and run_once(shared_run_dir(args), checked_here):
        return
    if checked_here:  # every config error is reported before a run directory exists
        cfg = validate("train", args, check_composed, sweep=bool(set(args) & MULTIRUN_FLAGS))
        if printed_plan(cfg, args):
            return
    run_job("train", shared_run_dir(args), train_job)
    from hfx.sweeps import failed_jobs_error

    if message := failed_jobs_error():  # a sweep ran every job; some failed
        raise HfxError(message)


def run_once(args: list[str], check: bool) -> bool:
    """A single run (no Hydra flag): composed once, checked (before a run directory exists) and run. False when the
    config asks for a sweep itself (an hparams_search), which goes through Hydra's main."""
    from hfx.commands.job import job_config, run_composed, single_run
    from hfx.config.compose import check_composed, checked, drop_option_files, usage_errors, user_overrides

    with single_run("train", args) as cfg:
        if cfg is None:
            return False
        if check:
            with usage_errors():
                job = job_config(cfg)
                drop_option_files(job, user_overrides(args))
                checked(job, check_composed)
            if printed_plan(job, args):
                return True
        run_composed("train", cfg, train_job)
    return True


def printed_plan(cfg: DictConfig, args: list[str]) -> bool:
    """launch.print_only: each machine's command printed; nothing runs."""
    if not cfg.launch.get("print_only"):
        return False
    from hfx.launch import print_plan

    print_plan(args)
    return True


def train_job(cfg: DictConfig, run_path: Path) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from hfx.config.compose import drop_option_files
    from hfx.distributed import frozen_config
    from hfx.launch import apply_launch_settings, launch, needs_launch
    from hfx.sweeps import limit_threads, objective_value

    overrides = list(HydraConfig.get().overrides.task)
    drop_option_files(cfg, overrides)
    limit_threads(HydraConfig.get())  # parallel jobs of a sweep share the machine's cores
    cfg = frozen_config(cfg)  # a rank hfx launched: the launching process's resolved config
    apply_launch_settings(cfg)
    # launch=ddp / fsdp / ...: this job again under accelerate launch, on this config (hfx/launch.py)
    metrics = launch(cfg, run_path, overrides) if needs_launch(cfg) else train(cfg, run_path)
    # Sweepers (Optuna) read the objective from the job's return value: optimized_metric, else
    # eval_<trainer.metric_for_best_model>, else eval_loss (hfx/sweeps.py).
    return objective_value(cfg, metrics)


def launched_by_hfx() -> bool:
    """A rank that `hfx train launch=...` started: its config was composed and checked by the launching process."""
    from hfx.distributed import FROZEN_CONFIG_ENV, under_launcher

    return under_launcher() and FROZEN_CONFIG_ENV in os.environ


def train(cfg: DictConfig, run_path: Path) -> dict[str, Any]:
    from hfx.adapters import merge_for_saving
    from hfx.checkpointing import loss_before, stopped_by
    from hfx.distributed import is_main_process
    from hfx.errors import Stopped
    from hfx.loggers import final_evaluation, finish_logger, setup_logger, tracked_callbacks
    from hfx.plots import plot_curves
    from hfx.provenance import environment
    from hfx.resume import log_changes
    from hfx.rundir import RunDir, print_summary, resolved_config
    from hfx.stages import model_info, prepare
    from hfx.trainer import build_trainer

    run_dir, main = RunDir(run_path), is_main_process()
    if cfg.resume and main:
        log_changes(run_dir.path / "config.yaml", resolved_config(cfg))
        run_dir.clear_marks()
    resolved = run_dir.write_config(cfg) if main else resolved_config(cfg)
    if main:
        run_dir.write_json("environment.json", environment(cfg))

    run = prepare(cfg)

    report_to = setup_logger(cfg, run_dir.path, resolved, main)
    trainer = build_trainer(cfg, run.task, run.model, run.tokenizer, run.features, run.labels,
                            run_dir.checkpoints, report_to)
    tracked_callbacks(trainer)
    checkpoint = resume_from(cfg, run_dir, main)
    if checkpoint:
        trainer.loss_before_session = loss_before(Path(checkpoint))
    from hfx.streaming import count

    log.info("training: %s train / %s eval rows, world size %d", count(run.features["train"]),
             count(run.features["eval"]), trainer.args.world_size)
    setup_s = time.time() - process_start()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if (signum := stopped_by(trainer)) is not None:
        finish_logger(cfg)
        step = trainer.state.global_step
        raise Stopped(f"stopped by {signal.Signals(signum).name} at step {step} with a checkpoint "
                      f"({run_dir.checkpoints / f'checkpoint-{step}'}); continue with: hfx train resume={run_dir.path}")
    with final_evaluation(trainer):  # W&B would log trainer.predict's metrics by itself: they go once, below
        evaluation = run.task.evaluate(trainer, run.features["eval"], run.raw["eval"], run.tokenizer, run.settings,
                                       run.labels)
    trainer.log(evaluation.metrics)  # the final metrics, once: every tracker, log_history

    metrics = {**evaluation.metrics, **{k: v for k, v in result.metrics.items() if k != "total_flos"}}
    metrics.update(world_size=trainer.args.world_size, setup_s=round(setup_s, 2), **parameter_counts(run.model),
                   **({"frozen": run.frozen} if run.frozen else {}), **peak_memory())
    if main:
        run_dir.write_json("metrics.json", metrics)
        run_dir.write_jsonl("predictions.jsonl", evaluation.predictions)
        run_dir.write_jsonl("log_history.jsonl", trainer.state.log_history)
        plot_curves(trainer.state.log_history, run_dir.path / "loss.png")
        run_dir.save_model(merge_for_saving(trainer.model, cfg.peft), run.tokenizer,
                           model_info(run))
        print_summary(f"hfx: {cfg.experiment_name} ({cfg.task.name}) finished", run_dir.path, metrics, SUMMARY_KEYS)
    finish_logger(cfg)
    return metrics


def resume_from(cfg: DictConfig, run_dir: Any, main: bool) -> str | None:
    """The checkpoint `trainer.train` continues from: the newest complete one when resuming."""
    from hfx.checkpointing import latest_checkpoint

    if not cfg.resume:
        return None
    checkpoint = latest_checkpoint(run_dir.checkpoints, tidy=main)
    if checkpoint is None:
        log.info("resume: no complete checkpoint in %s yet: training from step 0", run_dir.checkpoints)
        return None
    log.info("resuming from %s", checkpoint)
    return str(checkpoint)


def parameter_counts(model: Any) -> dict[str, Any]:
    """parameters_total, parameters_trainable, parameters_trainable_percent (as peft's print_trainable_parameters)."""
    from hfx.freezing import parameter_counts as counts

    return counts(model)


def peak_memory() -> dict[str, float]:
    """Peak GPU memory of this process (CUDA only)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def process_start() -> float:
    """When this process started: `setup_s` (start to first training step) includes imports and data prep. From
    /proc (start time and uptime in clock ticks, 10 ms); psutil's create_time adds the boot time, which Linux gives
    in whole seconds (measured: 0.8 s too early here)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process(os.getpid()).create_time()
