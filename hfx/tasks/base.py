"""What a task module provides. A task owns everything task-specific: its Auto model class, preprocessing,
collator, metrics, evaluation predictions and pipeline name. Adding a task = one module + one YAML."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, DictConfig

from hfx.registry import Registry


@dataclass
class TaskConfig:
    """Base of every task's schema; each task module extends it with its own options."""

    name: str = MISSING


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
    # Inputs that a pipeline call takes for one record of `hfx predict input_file=...`.
    predict_fields: tuple[str, ...] = ("text",)
    # peft.TaskType name for LoRA (SEQ_CLS, TOKEN_CLS, QUESTION_ANS, CAUSAL_LM, SEQ_2_SEQ_LM), or None.
    peft_task_type: str | None = None
    # Task heads trained in full under LoRA where the model has them (their pretrained state, if any, is not
    # trained for this task: all-MiniLM-L6-v2 ships an untrained pooler, for example).
    head_modules: tuple[str, ...] = ()
    # True for encoder-decoder generation tasks: builds Seq2SeqTrainingArguments / Seq2SeqTrainer.
    seq2seq: bool = False

    def auto_model_class(self, cfg: DictConfig) -> Any:
        raise NotImplementedError

    def check_model(self, model_config: Any, cfg: DictConfig) -> None:
        """Raise HfxError when the architecture cannot serve this task (e.g. seq2seq on an encoder)."""

    def validate_data(self, raw: Any, cfg: DictConfig) -> None:
        """Raise HfxError naming the column or value at fault; called on the raw train/eval splits."""

    def label_names(self, raw: Any, cfg: DictConfig) -> list[str] | None:
        return None

    def training_texts(self, split: Any, cfg: DictConfig) -> Iterator[str]:
        """Texts to train a tokenizer on (from-scratch runs)."""
        raise NotImplementedError

    def preprocess(self, split: Any, tokenizer: Any, cfg: DictConfig, labels: list[str] | None, train: bool) -> Any:
        """Raw split -> model features. Must be deterministic: its output is cached by fingerprint."""
        raise NotImplementedError

    def model_kwargs(self, labels: list[str] | None) -> dict[str, Any]:
        return {}

    def collator(self, tokenizer: Any, model: Any, cfg: DictConfig) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def training_args(self, cfg: DictConfig) -> dict[str, Any]:
        """TrainingArguments defaults this task needs (the user's trainer.* still wins where set)."""
        return {}

    def trainer_kwargs(self, tokenizer: Any, cfg: DictConfig, labels: list[str] | None) -> dict[str, Any]:
        """compute_metrics / preprocess_logits_for_metrics for evaluation during training."""
        return {}

    def evaluate(self, trainer: Any, features: Any, raw: Any, tokenizer: Any, cfg: DictConfig,
                 labels: list[str] | None) -> Evaluation:
        raise NotImplementedError

    def pipeline_name(self, cfg: DictConfig) -> str:
        """The pipeline saved in hfx_task.json for this run (a task whose flavour picks it overrides this)."""
        return self.pipeline_task

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the pipeline call in `hfx predict` (the user's `pipeline.*` wins)."""
        return {}

    def pipeline_inputs(self, record: dict[str, Any]) -> Any:
        """One record of an input file -> the pipeline's input."""
        return record["text"] if "text" in record else next(iter(record.values()))


TASKS: Registry[Task] = Registry("task")


def prediction_count(num_predictions: int, available: int) -> int:
    """How many evaluation rows go to predictions.jsonl: the config's `num_predictions` (-1 = all) of those
    available."""
    return available if num_predictions < 0 else min(num_predictions, available)
