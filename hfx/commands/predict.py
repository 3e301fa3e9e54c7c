"""`hfx predict run=<run dir> input="..." | input_file=<jsonl|txt> | messages=[...]`: the run's saved model served
through `transformers.pipeline`, one JSON line per record. Without a run, `model=... candidate_labels=[...]` ranks
the labels zero-shot (hfx/zero_shot.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.errors import HfxError


def main(args: list[str]) -> None:
    from hfx import zero_shot
    from hfx.commands.job import run_job
    from hfx.config.compose import validate

    args = zero_shot.command_args([quote_free_text(a) for a in args])
    # The run and every input record are checked before anything is written (a bad input leaves no folder).
    cfg = validate("predict", args, check_inputs)
    run_job("predict", zero_shot.job_args(args) if zero_shot.requested(cfg) else args, predict)


def check_inputs(cfg: DictConfig) -> None:
    from hfx import zero_shot
    from hfx.stages import load_run

    if zero_shot.requested(cfg):
        if cfg.batch_size < 1:
            raise HfxError(f"batch_size: expected a positive number, got {cfg.batch_size}")
        zero_shot.check_predict(cfg, read_records(cfg))
        return
    zero_shot.require_run_or_zero_shot(cfg, "served", "model=... candidate_labels=[...] for zero-shot "
                                                   "classification")
    run = load_run(cfg.run)
    if cfg.batch_size < 1:
        raise HfxError(f"batch_size: expected a positive number, got {cfg.batch_size}")
    conversations = []
    for i, record in enumerate(read_records(cfg), 1):
        try:
            served = pipeline_input(run.task, record)
        except HfxError as e:
            if cfg.input_file is None or "messages" not in record:
                raise
            raise HfxError(f"input_file: record {i} of '{cfg.input_file}': {e}") from e
        if "messages" in record:
            conversations.append(served)
    if conversations:  # every turn must reach the prompt the run's chat template renders
        from hfx.chat_template import check_rendered

        tokenizer = run.tokenizer()
        for messages in conversations:
            check_rendered(tokenizer, messages)


def quote_free_text(arg: str) -> str:
    """`input=` (and `messages=`, JSON) take free text (commas, quotes, `=`, `${`): quoted here so Hydra's override
    grammar keeps it whole."""
    from hfx.config.compose import quoted

    key, eq, value = arg.partition("=")
    return f"{key}={quoted(value)}" if key in ("input", "messages") and eq else arg


def predict(cfg: DictConfig, out_path: Path) -> list[dict[str, Any]]:
    from transformers import pipeline

    from hfx import zero_shot
    from hfx.pipelines import register
    from hfx.stages import load_run

    if zero_shot.requested(cfg):
        return write_predictions(cfg, zero_shot.predict(cfg, read_records(cfg)), out_path)
    run = load_run(cfg.run)
    records = read_records(cfg)
    inputs = [pipeline_input(run.task, record) for record in records]

    register(run.pipeline)
    model_dir = str(run.model_dir)
    # An adapter kept beside its base (prefix / prompt tuning, peft.merge_on_save=false) is loaded through peft.
    pipe = pipeline(run.pipeline, model=run.model() if run.adapter else model_dir, tokenizer=model_dir)
    kwargs = {**run.task.pipeline_kwargs(), **OmegaConf.to_container(cfg.pipeline, resolve=True)}
    rows = []
    for start in range(0, len(inputs), cfg.batch_size):
        batch = inputs[start : start + cfg.batch_size]
        outputs = pipe(batch, batch_size=len(batch), **kwargs)
        if run.pipeline == "fill-mask" and len(batch) == 1:  # it returns a lone record's output unwrapped
            outputs = [outputs]
        for record, output in zip(records[start : start + len(batch)], outputs, strict=True):
            rows.append({"input": record, "prediction": _jsonable(run.task.pipeline_output(output))})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    return write_predictions(cfg, rows, out_path)


def write_predictions(cfg: DictConfig, rows: list[dict[str, Any]], out_path: Path) -> list[dict[str, Any]]:
    """input_file's predictions to output_file, or predictions.jsonl in the command's own folder."""
    from hfx.rundir import RunDir

    if cfg.input_file is not None:
        target = Path(cfg.output_file).expanduser() if cfg.output_file else out_path / "predictions.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        RunDir(target.parent).write_jsonl(target.name, rows)
        print(f"hfx: {len(rows)} predictions written to {target}", flush=True)
    return rows


def pipeline_input(task: Any, record: dict[str, Any]) -> Any:
    if "messages" in record:  # a conversation: checked here, served by a task that takes them (sft)
        from hfx.chat_template import check_messages

        check_messages(record["messages"])
        if not getattr(task, "takes_messages", False):
            raise HfxError(f"messages: a {task.name} run takes {', '.join(task.predict_fields)}, not a conversation "
                           "(an sft run does)")
    try:
        return task.pipeline_inputs(record)
    except KeyError as e:
        raise HfxError(f"input: task {task.name} expects fields {', '.join(task.predict_fields)}; "
                       f"missing {e}") from e


def read_records(cfg: DictConfig) -> list[dict[str, Any]]:
    if cfg.messages is not None:
        if cfg.input is not None or cfg.input_file is not None:
            raise HfxError("predict: give messages=... alone, not with input= or input_file=")
        try:
            return [{"messages": json.loads(str(cfg.messages))}]
        except json.JSONDecodeError as e:
            raise HfxError(f"messages: not JSON ({e.msg} at character {e.pos}); expected a list like "
                           '[{"role": "user", "content": "hi"}]') from e
    if cfg.input is not None and cfg.input_file is not None:
        raise HfxError("predict: give either input=... or input_file=..., not both")
    if cfg.input is not None:
        return [_record(str(cfg.input))]
    if cfg.input_file is None:
        raise HfxError('predict: give input="some text" or input_file=<file.jsonl|file.txt>')
    path = Path(cfg.input_file).expanduser()
    if not path.is_file():
        raise HfxError(f"input_file: file '{cfg.input_file}' does not exist")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise HfxError(f"input_file: '{cfg.input_file}' is not UTF-8 text ({e.reason} at byte {e.start})") from e
    if not lines:
        raise HfxError(f"input_file: '{cfg.input_file}' holds no records (one text or JSON object per line)")
    if path.suffix not in (".jsonl", ".json"):
        return [{"text": line} for line in lines]
    records = []
    for i, line in enumerate(lines, 1):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise HfxError(f"input_file: line {i} of '{cfg.input_file}' is not JSON ({e.msg})") from e
        records.append(value if isinstance(value, dict) else {"text": str(value)})
    return records


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
