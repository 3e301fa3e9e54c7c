"""What a task module provides. A task owns everything task-specific: its schema and column roles, its Auto model
class, preprocessing, collator, metrics, evaluation rows and pipeline name. Adding a task = one module + one YAML.

A task never reads the whole run config: it receives `TaskSettings`, its own section plus the few shared
values it needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.config.schema import EntryConfig
from hfx.registry import Registry


@dataclass
class TaskConfig(EntryConfig):
    """Base of every task's schema; each task module extends it with its own options."""


@dataclass
class NoColumns:
    """A task's column roles: one field per role, its default the usual column name. `dataset.columns.<role>`
    names the column of the user's data that plays that role."""


@dataclass(frozen=True)
class TaskSettings:
    """What a task sees of the run's config."""

    task: Any  # the task's own section (cfg.task), typed by its schema
    columns: Any  # the task's column roles -> column names in this dataset
    max_length: int  # tokenizer.max_length
    label_names: list[str] | None = None  # dataset.label_names: names for integer labels 0..n-1
    num_predictions: int = -1  # evaluation rows written to predictions.jsonl (-1 = all)


@dataclass
class Evaluation:
    """Final evaluation of a run: metrics in the Trainer's naming (eval_*) and per-example predictions."""

    metrics: dict[str, float]
    predictions: list[dict[str, Any]]


class Task:
    """Default behaviour; task modules override what differs. Heavy imports stay inside methods."""

    name: str = ""
    pipeline_task: str = ""
    schema: type = TaskConfig
    columns: type = NoColumns
    # Inputs that a pipeline call takes for one record of `hfx predict input_file=...`.
    predict_fields: tuple[str, ...] = ("text",)
    # peft.TaskType name for LoRA (SEQ_CLS, TOKEN_CLS, QUESTION_ANS, CAUSAL_LM, SEQ_2_SEQ_LM), or None.
    peft_task_type: str | None = None
    # Task heads trained in full under LoRA where the model has them (their pretrained state, if any, is not
    # trained for this task: all-MiniLM-L6-v2 ships an untrained pooler, for example).
    head_modules: tuple[str, ...] = ()
    # True for encoder-decoder generation tasks: builds Seq2SeqTrainingArguments / Seq2SeqTrainer.
    seq2seq: bool = False
    # True where `preprocess` also maps a stream (datasets.IterableDataset) lazily: dataset.streaming=true.
    streaming: bool = False

    def auto_model_class(self) -> Any:
        raise NotImplementedError

    def check_architecture(self, record: Any) -> None:
        """Raise HfxError when a model built from scratch (an `hfx.architectures.Architecture`) cannot serve this
        task; called when the config is composed, before anything is loaded."""

    def check_model(self, model_config: Any, s: TaskSettings) -> None:
        """Raise HfxError when the model (its transformers config) cannot serve this task."""

    def validate_data(self, raw: Any, s: TaskSettings) -> None:
        """Raise HfxError naming the column or value at fault; called on the raw train/eval splits."""

    def label_names(self, raw: Any, s: TaskSettings) -> list[str] | None:
        return None

    def training_texts(self, split: Any, s: TaskSettings) -> Iterator[str]:
        """Texts to train a tokenizer on (from-scratch runs)."""
        raise NotImplementedError

    def preprocess(self, split: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None, train: bool) -> Any:
        """Raw split -> model features. Must be deterministic: its output is cached by fingerprint."""
        raise NotImplementedError

    def model_kwargs(self, labels: list[str] | None) -> dict[str, Any]:
        return {}

    def collator(self, tokenizer: Any, model: Any, s: TaskSettings) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def training_args(self, s: TaskSettings) -> dict[str, Any]:
        """TrainingArguments defaults this task needs (the user's trainer.* still wins where set)."""
        return {}

    def trainer_kwargs(self, tokenizer: Any, s: TaskSettings, labels: list[str] | None) -> dict[str, Any]:
        """compute_metrics / preprocess_logits_for_metrics for evaluation during training."""
        return {}

    def evaluate(self, trainer: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings,
                 labels: list[str] | None) -> Evaluation:
        raise NotImplementedError

    def pipeline_name(self, s: TaskSettings) -> str:
        """The pipeline saved in hfx_task.json for this run (a task whose flavour picks it overrides this)."""
        return self.pipeline_task

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the pipeline call in `hfx predict` (the user's `pipeline.*` wins)."""
        return {}

    def pipeline_output(self, output: Any) -> Any:
        """One record's pipeline output from a batched call, in the shape a call on that record alone gives."""
        return output

    def pipeline_inputs(self, record: dict[str, Any]) -> Any:
        """One record of an input file -> the pipeline's input."""
        return record["text"] if "text" in record else next(iter(record.values()))


TASKS: Registry[Task] = Registry("task")


def task_settings(cfg: DictConfig, task: Task) -> TaskSettings:
    """The settings a task receives, from a train config: the `dataset.columns` entries set for the task's own
    roles merged onto its column defaults (other tasks' roles are ignored: a dataset option serves several)."""
    roles = {f.name for f in dataclasses.fields(task.columns)}
    given = {k: v for k, v in (OmegaConf.to_container(cfg.dataset.columns) or {}).items()
             if k in roles and v is not None}
    columns = OmegaConf.merge(OmegaConf.structured(task.columns), given)
    label_names = cfg.dataset.label_names
    return TaskSettings(task=cfg.task, columns=columns, max_length=cfg.tokenizer.max_length,
                        label_names=list(label_names) if label_names is not None else None,
                        num_predictions=cfg.num_predictions)


def all_column_roles() -> list[str]:
    return sorted({f.name for name in TASKS for f in dataclasses.fields(TASKS.get(name).columns)})


def prediction_count(num_predictions: int, available: int) -> int:
    """How many evaluation rows go to predictions.jsonl: the config's `num_predictions` (-1 = all) of those
    available."""
    return available if num_predictions < 0 else min(num_predictions, available)
