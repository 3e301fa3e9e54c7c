"""`hfx evaluate run=<run dir> [dataset.eval_split=test | dataset.data_files.validation=<file>]`: the run's saved
model evaluated on another split or file, with the run's own config for everything else. Without a run,
`model=... zero_shot=true dataset=...` (or candidate_labels=[...]) scores a model zero-shot (hfx/zero_shot.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.errors import HfxError


def main(args: list[str]) -> None:
    from hfx import zero_shot
    from hfx.commands.job import run_job
    from hfx.config.compose import validate

    # dataset.* are overrides on the run's saved dataset config (typed by its schema when merged); zero-shot, on
    # the dataset option's (`++`: added, or replacing the option's own value).
    args = zero_shot.command_args([f"++{a}" if a.startswith("dataset.") else a for a in args])
    # The run, the dataset overrides and the evaluation data itself are checked before anything is written inside
    # the run directory (the job reuses the features cached here).
    cfg = validate("evaluate", args, check_inputs)
    run_job("evaluate", zero_shot.job_args(args) if zero_shot.requested(cfg) else args, evaluate)


def check_inputs(cfg: DictConfig) -> None:
    from hfx import zero_shot
    from hfx.stages import load_run, prepare_data

    if zero_shot.requested(cfg):
        zero_shot.check_evaluate(cfg)
        return
    zero_shot.require_run_or_zero_shot(cfg, "evaluated", "model=... zero_shot=true dataset=... for zero-shot "
                                                      "evaluation")
    if cfg.per_device_eval_batch_size < 1:
        raise HfxError(f"per_device_eval_batch_size: expected a positive number, got {cfg.per_device_eval_batch_size}")
    run = load_run(cfg.run)
    prepare_data(evaluation_config(run, cfg), tokenizer=run.tokenizer(), labels=run.labels, eval_only=True)


def evaluation_config(run: Any, cfg: DictConfig) -> DictConfig:
    """The run's saved config with the command's dataset overrides and eval batch size; local files checked."""
    from hfx.data import FILE_BUILDERS, local_data_files

    saved = run.cfg
    overrides = OmegaConf.to_container(cfg.dataset, resolve=True)
    files = overrides.pop("data_files", None)
    try:
        saved.dataset = OmegaConf.merge(saved.dataset, overrides)
    except Exception as e:  # a misspelled or mistyped dataset.* key
        from hfx.config.compose import explain_config_error

        raise HfxError(explain_config_error(e)) from e
    if files is not None:  # the user's files replace the run's data (a data_dir would win over them)
        if not isinstance(files, dict):
            raise HfxError("dataset.data_files: expected split=file pairs, e.g. dataset.data_files.validation=x.csv")
        saved.dataset.data_dir = None
        saved.dataset.data_files = files
        if "validation" in files and saved.dataset.eval_split not in files:
            saved.dataset.eval_split = "validation"
    saved.trainer.per_device_eval_batch_size = cfg.per_device_eval_batch_size
    if saved.dataset.path in FILE_BUILDERS or saved.dataset.data_dir or saved.dataset.data_files:
        local_data_files(saved.dataset)
    return saved


def evaluate(cfg: DictConfig, out_path: Path) -> dict[str, Any]:
    from hfx import zero_shot
    from hfx.rundir import RunDir, print_summary
    from hfx.stages import load_run, prepare_data
    from hfx.trainer import build_trainer

    if zero_shot.requested(cfg):
        return zero_shot.evaluate(cfg, out_path)
    run = load_run(cfg.run)
    saved = evaluation_config(run, cfg)

    data = prepare_data(saved, tokenizer=run.tokenizer(), labels=run.labels, eval_only=True)
    trainer = build_trainer(saved, run.task, run.model(), data.tokenizer, {"train": None, "eval": data.features["eval"]},
                            data.labels, out_path / "checkpoints", [])
    evaluation = run.task.evaluate(trainer, data.features["eval"], data.raw["eval"], data.tokenizer, data.settings,
                                   data.labels)

    out = RunDir(out_path)
    out.path.mkdir(parents=True, exist_ok=True)
    (out.path / "dataset.yaml").write_text(OmegaConf.to_yaml(saved.dataset))
    out.write_json("metrics.json", evaluation.metrics)
    out.write_jsonl("predictions.jsonl", evaluation.predictions)
    print_summary(f"hfx: evaluated {run.path} ({run.task.name})", out.path, evaluation.metrics)
    return evaluation.metrics
