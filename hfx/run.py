"""The run, top to bottom: seed, data, tokenizer, model, PEFT, trainer, train, evaluate, save."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hfx.adapters import apply_peft, merge_for_saving
from hfx.data import load_splits, tokenize_splits
from hfx.distributed import is_main_process
from hfx.loggers import finish_logger, setup_logger
from hfx.model import build_model, load_config
from hfx.plots import plot_curves
from hfx.rundir import RunDir, resolved_config
from hfx.tasks import TASKS
from hfx.tokenizer import build_tokenizer
from hfx.trainer import build_trainer

log = logging.getLogger("hfx")

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_loss")


def train(cfg: DictConfig, run_path: Path) -> dict[str, Any]:
    from transformers import set_seed

    run_dir, main = RunDir(run_path), is_main_process()
    task = TASKS.get(cfg.task.name)
    resolved = run_dir.write_config(cfg) if main else resolved_config(cfg)
    seed = cfg.trainer.seed
    set_seed(seed)

    raw = load_splits(cfg.dataset, seed)
    task.validate_data(raw, cfg)
    tokenizer = build_tokenizer(cfg.tokenizer, cfg.model, lambda: task.training_texts(raw["train"], cfg),
                                cfg.cache_dir, raw["train"]._fingerprint)
    labels = task.label_names(raw, cfg)
    features = tokenize_splits(raw, task, tokenizer, cfg, labels)

    model_config = load_config(cfg.model, tokenizer, task.model_kwargs(labels))
    task.check_model(model_config, cfg)
    # The Trainer seeds only when it is created, after new heads exist: seed here so runs repeat.
    set_seed(seed)
    built = build_model(cfg.model, task.auto_model_class(cfg), model_config)
    model = apply_peft(built.model, cfg.peft, built.fresh_modules, task.peft_task_type, task.head_modules)

    report_to = setup_logger(cfg, run_dir.path, resolved, main)
    trainer = build_trainer(cfg, task, model, tokenizer, features, labels, run_dir.path / "checkpoints", report_to)
    log.info("training: %d train / %d eval rows, world size %d", len(features["train"]), len(features["eval"]),
             trainer.args.world_size)
    setup_s = time.time() - process_start()
    result = trainer.train(resume_from_checkpoint=cfg.trainer.resume_from_checkpoint)
    evaluation = task.evaluate(trainer, features["eval"], raw["eval"], tokenizer, cfg, labels)
    trainer.log(evaluation.metrics)

    metrics = {**evaluation.metrics, **{k: v for k, v in result.metrics.items() if k != "total_flos"}}
    metrics.update(world_size=trainer.args.world_size, setup_s=round(setup_s, 2))
    if main:
        run_dir.write_json("metrics.json", metrics)
        run_dir.write_jsonl("predictions.jsonl", evaluation.predictions)
        run_dir.write_jsonl("log_history.jsonl", trainer.state.log_history)
        plot_curves(trainer.state.log_history, run_dir.path / "loss.png")
        run_dir.save_model(merge_for_saving(trainer.model, cfg.peft), tokenizer,
                           {"hfx_task.json": {"task": task.name, "pipeline": task.pipeline_name(cfg), "labels": labels}})
        print_summary(cfg, run_dir, metrics)
    finish_logger(cfg)
    return metrics


def process_start() -> float:
    """When this process started: `setup_s` (start to first training step) includes imports and data prep."""
    import psutil

    return psutil.Process(os.getpid()).create_time()


def print_summary(cfg: DictConfig, run_dir: RunDir, metrics: dict[str, Any]) -> None:
    shown = {k: v for k, v in metrics.items()
             if k.startswith("eval_") and not any(s in k for s in ("runtime", "per_second", "preparation_time"))}
    shown.update({k: metrics[k] for k in SUMMARY_KEYS if k in metrics})
    width = max(map(len, shown)) if shown else 0
    lines = [f"hfx: {cfg.experiment_name} ({cfg.task.name}) finished"]
    lines += [f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in shown.items()]
    lines.append(f"  run dir  {run_dir.path}")
    print("\n".join(lines), flush=True)
