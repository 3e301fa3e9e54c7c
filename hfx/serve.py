"""Serving a finished run: `hfx predict` (transformers.pipeline on the saved model) and `hfx evaluate`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.errors import HfxError
from hfx.rundir import RunDir

log = logging.getLogger("hfx")

TASK_FILE = "hfx_task.json"


def load_run_info(run: str) -> tuple[Path, dict[str, Any]]:
    """The run dir and what `hfx train` recorded about its model; a clear error for anything else."""
    run_dir = Path(run).expanduser()
    info_file = run_dir / "model" / TASK_FILE
    if not run_dir.is_dir():
        raise HfxError(f"run={run}: no such directory (expected a run directory written by `hfx train`)")
    if not info_file.is_file():
        raise HfxError(f"run={run}: not a finished hfx run (expected {run_dir / 'model' / TASK_FILE}, "
                       "written by `hfx train` when it saves the model)")
    return run_dir, json.loads(info_file.read_text())


def check_run(cfg: DictConfig) -> None:
    load_run_info(cfg.run)


def read_records(cfg: DictConfig) -> list[dict[str, Any]]:
    if cfg.input is not None and cfg.input_file is not None:
        raise HfxError("predict: give either input=... or input_file=..., not both")
    if cfg.input is not None:
        return [_record(str(cfg.input))]
    if cfg.input_file is None:
        raise HfxError('predict: give input="some text" or input_file=<file.jsonl|file.txt>')
    path = Path(cfg.input_file).expanduser()
    if not path.is_file():
        raise HfxError(f"input_file: file '{cfg.input_file}' does not exist")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix in (".jsonl", ".json"):
        records = []
        for i, line in enumerate(lines, 1):
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise HfxError(f"input_file: line {i} of '{cfg.input_file}' is not JSON ({e.msg})") from e
            records.append(value if isinstance(value, dict) else {"text": str(value)})
        return records
    return [{"text": line} for line in lines]


def _record(text: str) -> dict[str, Any]:
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
    return {"text": text}


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def predict(cfg: DictConfig, out_path: Path) -> list[dict[str, Any]]:
    from hfx.tasks import TASKS

    run_dir, info = load_run_info(cfg.run)
    task = TASKS.get(info["task"])
    records = read_records(cfg)
    from transformers import pipeline

    model_dir = str(run_dir / "model")
    task.register_pipeline()
    kwargs = {**task.pipeline_kwargs(), **OmegaConf.to_container(cfg.pipeline, resolve=True)}
    pipe = pipeline(info["pipeline"], model=model_dir, tokenizer=model_dir)
    rows = []
    for record in records:
        try:
            inputs = task.pipeline_inputs(record)
        except KeyError as e:
            raise HfxError(f"input: task {task.name} expects fields {', '.join(task.predict_fields)}; "
                           f"missing {e}") from e
        output = _jsonable(pipe(inputs, **kwargs))
        rows.append({"input": record, "prediction": output})
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    if cfg.input_file is not None:
        target = Path(cfg.output_file).expanduser() if cfg.output_file else out_path / "predictions.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        RunDir(target.parent).write_jsonl(target.name, rows)
        print(f"hfx: {len(rows)} predictions written to {target}", flush=True)
    return rows


def evaluate(cfg: DictConfig, out_path: Path) -> dict[str, Any]:
    """Evaluate a saved run on another split or file, with the run's own config for everything else."""
    from transformers import AutoConfig, AutoTokenizer

    from hfx.config.schema import DatasetConfig
    from hfx.data import load_splits, tokenize_splits
    from hfx.run import print_summary
    from hfx.tasks import TASKS
    from hfx.trainer import build_trainer

    run_dir, info = load_run_info(cfg.run)
    task = TASKS.get(info["task"])
    saved = OmegaConf.load(run_dir / "config.yaml")
    try:
        dataset = OmegaConf.merge(OmegaConf.structured(DatasetConfig), saved.dataset, cfg.dataset)
    except Exception as e:  # a misspelled dataset.* key
        from hfx.cli import explain_config_error

        raise HfxError(explain_config_error(e)) from e
    saved.dataset = dataset
    saved.trainer.per_device_eval_batch_size = cfg.per_device_eval_batch_size
    saved.logger.name = "none"

    raw = load_splits(saved.dataset, saved.trainer.seed, eval_only=True)
    task.validate_data(raw, saved)
    model_dir = run_dir / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    labels = info.get("labels")
    features = tokenize_splits(raw, task, tokenizer, saved, labels)
    model = task.auto_model_class(saved).from_pretrained(str(model_dir), config=AutoConfig.from_pretrained(str(model_dir)))
    trainer = build_trainer(saved, task, model, tokenizer, {"train": None, "eval": features["eval"]}, labels,
                            out_path / "checkpoints", [])
    evaluation = task.evaluate(trainer, features["eval"], raw["eval"], tokenizer, saved, labels)
    out = RunDir(out_path)
    out.path.mkdir(parents=True, exist_ok=True)
    (out.path / "dataset.yaml").write_text(OmegaConf.to_yaml(saved.dataset))
    out.write_json("metrics.json", evaluation.metrics)
    out.write_jsonl("predictions.jsonl", evaluation.predictions)
    print_summary(saved, out, evaluation.metrics)
    return evaluation.metrics
