"""Sequence classification: single texts or text pairs -> one label (sentiment, topic, NLI, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

from hfx.data import map_features, require_columns, require_values
from hfx.errors import HfxError
from hfx.labels import label_maps, require_seen_in_training
from hfx.metrics.classification import argmax_logits, classification_metrics
from hfx.tasks.base import TASKS, Evaluation, Task, TaskConfig, TaskSettings, prediction_count


@dataclass
class SequenceClassificationConfig(TaskConfig):
    name: str = "sequence_classification"


@dataclass
class SequenceClassificationColumns:
    text: str = "text"
    # The second text of a pair (NLI, paraphrase); null for single texts.
    text_pair: Optional[str] = None  # noqa: UP045 (OmegaConf 2.3 reads Optional, not str | None)
    label: str = "label"


def _columns(s: TaskSettings) -> dict[str, str]:
    c = s.columns
    cols = {"columns.text": c.text, "columns.label": c.label}
    if c.text_pair:
        cols["columns.text_pair"] = c.text_pair
    return cols


class SequenceClassification(Task):
    name = "sequence_classification"
    pipeline_task = "text-classification"
    schema = SequenceClassificationConfig
    columns = SequenceClassificationColumns
    predict_fields = ("text", "text_pair")
    peft_task_type = "SEQ_CLS"
    head_modules = ("pooler", "classifier", "score", "pre_classifier")
    streaming = True

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def validate_data(self, raw: Any, s: TaskSettings) -> None:
        for split_name, split in raw.items():
            require_columns(split, _columns(s), split_name)
        require_values(raw, _columns(s))

    def label_names(self, raw: Any, s: TaskSettings) -> list[str]:
        col = s.columns.label
        train_values = raw["train"].unique(col)
        eval_values = raw["eval"].unique(col)
        if any(v is None for v in train_values + eval_values):
            raise HfxError(f"dataset.columns.label: column '{col}' has empty labels")
        require_seen_in_training("columns.label", sorted(map(str, train_values)), eval_values, "labels")
        feature = raw["train"].features[col]
        if getattr(feature, "names", None):
            return list(feature.names)
        if all(isinstance(v, int) for v in train_values):
            n = max(train_values) + 1
            names = s.label_names
            if names is not None:
                if len(names) < n:
                    raise HfxError(f"dataset.label_names: {len(names)} names for integer labels up to {n - 1}")
                return list(names)
            if min(train_values) < 0:
                raise HfxError(f"dataset.columns.label: integer labels must be 0..n-1, got {min(train_values)}")
            return [str(i) for i in range(n)]
        # String labels: a stable, sorted order, saved with the model as id2label.
        return sorted(map(str, train_values))

    def training_texts(self, split: Any, s: TaskSettings) -> Iterator[str]:
        yield from split[s.columns.text]
        if s.columns.text_pair:
            yield from split[s.columns.text_pair]

    def preprocess(self, split: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None, train: bool) -> Any:
        c = s.columns
        label_id = {name: i for i, name in enumerate(labels or [])}
        max_length = s.max_length

        def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
            pair = batch[c.text_pair] if c.text_pair else None
            enc = tokenizer(batch[c.text], pair, truncation=True, max_length=max_length)
            # Integer labels are class ids already; string labels map through the saved label list.
            unknown = [v for v in batch[c.label] if not isinstance(v, int) and str(v) not in label_id]
            if unknown:
                raise HfxError(f"dataset.columns.label: label '{unknown[0]}' is not one of the model's labels "
                               f"({', '.join(label_id)})")
            # A streamed run knows its labels from the first rows: a later id beyond them is refused, not trained on.
            beyond = [v for v in batch[c.label] if isinstance(v, int) and not 0 <= v < len(label_id)]
            if beyond:
                raise HfxError(f"dataset.columns.label: label {beyond[0]} is beyond the model's {len(label_id)} labels "
                               f"({', '.join(label_id)}); name them all: dataset.label_names=[...]")
            enc["labels"] = [v if isinstance(v, int) else label_id[str(v)] for v in batch[c.label]]
            # Precomputed lengths let length-grouped sampling skip a pass over the data.
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        return map_features(split, encode, train)

    def model_kwargs(self, labels: list[str] | None) -> dict[str, Any]:
        return label_maps(labels)

    def trainer_kwargs(self, tokenizer: Any, s: TaskSettings, labels: list[str] | None) -> dict[str, Any]:
        return {"compute_metrics": classification_metrics, "preprocess_logits_for_metrics": argmax_logits}

    def evaluate(self, trainer: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings,
                 labels: list[str] | None) -> Evaluation:
        out = trainer.predict(features, metric_key_prefix="eval")
        names = labels or []
        preds = out.predictions.tolist()
        refs = out.label_ids.tolist()
        c = s.columns
        rows = []
        limit = prediction_count(s.num_predictions, len(preds))
        for i in range(limit):
            row = {"input": raw[i][c.text]}
            if c.text_pair:
                row["input_pair"] = raw[i][c.text_pair]
            row.update(reference=names[refs[i]], prediction=names[preds[i]], correct=refs[i] == preds[i])
            rows.append(row)
        return Evaluation(metrics=dict(out.metrics), predictions=rows)

    def pipeline_kwargs(self) -> dict[str, Any]:
        # Inputs longer than the model takes are cut to the run's tokenizer.max_length, as in training.
        return {"truncation": True}

    def pipeline_output(self, output: Any) -> Any:
        # text-classification wraps a lone string's result in a list, but not each result of a batch.
        return output if isinstance(output, list) else [output]

    def pipeline_inputs(self, record: dict[str, Any]) -> Any:
        if "text_pair" in record:
            return {"text": record["text"], "text_pair": record["text_pair"]}
        return record["text"]


TASKS.add(SequenceClassification.name, SequenceClassification())
