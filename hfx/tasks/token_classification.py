"""Token classification (NER, POS): one tag per word, aligned to sub-word tokens; entity-level seqeval scores
(hfx.metrics.entities)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hfx.data import map_features, require_columns
from hfx.errors import HfxError
from hfx.labels import IGNORE_INDEX, label_maps, require_seen_in_training
from hfx.metrics.classification import argmax_logits
from hfx.metrics.entities import entity_scores, word_level_from_tokens
from hfx.tasks.base import TASKS, Evaluation, Task, TaskConfig, TaskSettings, prediction_count

OUTSIDE = "O"


@dataclass
class TokenClassificationConfig(TaskConfig):
    name: str = "token_classification"
    # Train on every sub-token of a word (continuations of B-X are labelled I-X), not only the first one.
    # Evaluation always reads the first sub-token of each word.
    label_all_tokens: bool = False


@dataclass
class TokenClassificationColumns:
    tokens: str = "tokens"  # lists of words
    tags: str = "ner_tags"  # one tag per word: strings, or integers named by dataset.label_names


def _columns(s: TaskSettings) -> dict[str, str]:
    return {"columns.tokens": s.columns.tokens, "columns.tags": s.columns.tags}


def order_labels(tags: Sequence[str]) -> list[str]:
    """String tags -> the saved label order: "O" first, then sorted (stable across runs and data order)."""
    unique = set(map(str, tags))
    rest = sorted(unique - {OUTSIDE})
    return [OUTSIDE, *rest] if OUTSIDE in unique else rest


def continuation_ids(labels: Sequence[str]) -> list[int]:
    """Label id for the non-first sub-tokens of a word: B-X becomes I-X where the label list has it."""
    index = {name: i for i, name in enumerate(labels)}
    return [index.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(labels)]


def align_labels(
    word_ids: Sequence[int | None],
    word_labels: Sequence[int],
    label_all_tokens: bool,
    continuation: Sequence[int] | None = None,
) -> list[int]:
    """Word-level label ids -> one label per token: the first sub-token of each word carries the word's label;
    the others get -100 (or, with label_all_tokens, the continuation label); special tokens get -100."""
    out, previous = [], None
    for w in word_ids:
        if w is None:
            out.append(IGNORE_INDEX)
        elif w != previous:
            out.append(word_labels[w])
        elif label_all_tokens:
            label = word_labels[w]
            out.append(continuation[label] if continuation is not None else label)
        else:
            out.append(IGNORE_INDEX)
        previous = w
    return out


def word_predictions(
    token_preds: Sequence[int], word_ids: Sequence[int | None], n_words: int, labels: Sequence[str]
) -> list[str]:
    """Token-level predicted ids -> one tag per word, read at the word's first sub-token. Words with no token
    (truncated away, or normalised to nothing by the tokenizer) are predicted "O"."""
    tags = [OUTSIDE] * n_words
    seen = set()
    for pos, w in enumerate(word_ids):
        if w is None or w in seen or w >= n_words:
            continue
        seen.add(w)
        if pos < len(token_preds) and token_preds[pos] >= 0:
            tags[w] = labels[int(token_preds[pos])]
    return tags


def _tag_names(labels: list[str] | None, tags: Sequence[Any]) -> list[str]:
    names = labels or []
    return [names[t] if isinstance(t, int) else str(t) for t in tags]


class TokenClassification(Task):
    streaming = True  # its preprocessing maps row by row (map_features)
    name = "token_classification"
    pipeline_task = "token-classification"
    schema = TokenClassificationConfig
    columns = TokenClassificationColumns
    predict_fields = ("text",)
    peft_task_type = "TOKEN_CLS"
    head_modules = ("classifier",)

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def validate_data(self, raw: Any, s: TaskSettings) -> None:
        c = s.columns
        for split_name, split in raw.items():
            require_columns(split, _columns(s), split_name)
            for i, (words, tags) in enumerate(zip(split[c.tokens], split[c.tags], strict=True)):
                if not isinstance(words, list):
                    raise HfxError(
                        f"dataset.columns.tokens: column '{c.tokens}' must hold lists of words; "
                        f"row {i} of the {split_name} data is {type(words).__name__}"
                    )
                if not isinstance(tags, list) or len(tags) != len(words):
                    got = f"{len(tags)} tags" if isinstance(tags, list) else type(tags).__name__
                    raise HfxError(
                        f"dataset.columns.tags: row {i} of the {split_name} data has {got} for "
                        f"{len(words)} words; column '{c.tags}' needs one tag per word of "
                        f"'{c.tokens}'"
                    )

    def label_names(self, raw: Any, s: TaskSettings) -> list[str]:
        col = s.columns.tags
        feature = getattr(raw["train"].features[col], "feature", None)
        if getattr(feature, "names", None):  # ClassLabel tags (hub datasets): their own names and order
            return list(feature.names)
        train_tags = {t for tags in raw["train"][col] for t in tags}
        eval_tags = {t for tags in raw["eval"][col] for t in tags}
        if any(t is None for t in train_tags | eval_tags):
            raise HfxError(f"dataset.columns.tags: column '{col}' has empty tags")
        if train_tags and all(isinstance(t, int) for t in train_tags | eval_tags):
            names = s.label_names
            n = max(train_tags | eval_tags) + 1
            if names is None or len(names) < n:
                raise HfxError(
                    f"dataset.label_names: integer tags up to {n - 1} need {n} names (IOB2 such as "
                    f"O, B-PER, I-PER) for entity scoring; got {0 if names is None else len(names)}"
                )
            return list(names)
        names = order_labels(train_tags)
        require_seen_in_training("columns.tags", names, eval_tags, "tags")
        return names

    def training_texts(self, split: Any, s: TaskSettings) -> Iterator[str]:
        for words in split[s.columns.tokens]:
            yield " ".join(words)

    def _encode_words(self, tokenizer: Any, words: list[list[str]], s: TaskSettings) -> Any:
        if not getattr(tokenizer, "is_fast", False):
            raise HfxError(
                "tokenizer: token_classification needs a fast tokenizer (word_ids); "
                f"{type(tokenizer).__name__} is not one"
            )
        return tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=s.max_length
        )

    def preprocess(
        self, split: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None, train: bool
    ) -> Any:
        c = s.columns
        names = labels or []
        label_id = {name: i for i, name in enumerate(names)}
        continuation = continuation_ids(names)
        # Evaluation labels only the first sub-token, so scores are per word whatever label_all_tokens says.
        label_all = bool(s.task.label_all_tokens) and train

        def tag_ids(tags: list[Any]) -> list[int]:
            out = []
            for t in tags:
                if isinstance(t, int) and 0 <= t < len(names):
                    out.append(t)
                elif str(t) in label_id:
                    out.append(label_id[str(t)])
                else:
                    raise HfxError(
                        f"dataset.columns.tags: tag '{t}' is not one of the model's labels "
                        f"({', '.join(names[:20])})"
                    )
            return out

        def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
            enc = self._encode_words(tokenizer, batch[c.tokens], s)
            enc["labels"] = [
                align_labels(enc.word_ids(i), tag_ids(tags), label_all, continuation)
                for i, tags in enumerate(batch[c.tags])
            ]
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        return map_features(split, encode, train)

    def model_kwargs(self, labels: list[str] | None) -> dict[str, Any]:
        return label_maps(labels)

    def collator(self, tokenizer: Any, model: Any, s: TaskSettings) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    def trainer_kwargs(self, tokenizer: Any, s: TaskSettings, labels: list[str] | None) -> dict[str, Any]:
        names = list(labels or [])

        def compute_metrics(eval_pred: Any) -> dict[str, float]:
            return entity_scores(*word_level_from_tokens(eval_pred.predictions, eval_pred.label_ids, names))

        return {"compute_metrics": compute_metrics, "preprocess_logits_for_metrics": argmax_logits}

    def evaluate(
        self, trainer: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None
    ) -> Evaluation:
        c = s.columns
        names = list(labels or [])
        out = trainer.predict(features, metric_key_prefix="eval")
        words = list(raw[c.tokens])
        enc = self._encode_words(tokenizer, words, s)
        references = [_tag_names(names, tags) for tags in raw[c.tags]]
        predictions = [
            word_predictions(out.predictions[i], enc.word_ids(i), len(words[i]), names)
            for i in range(len(words))
        ]
        # Rescore against every word of the raw data: words cut off by truncation count as predicted "O".
        metrics = dict(out.metrics)
        metrics.update({f"eval_{k}": v for k, v in entity_scores(references, predictions).items()})
        limit = prediction_count(s.num_predictions, len(words))
        rows = [
            {
                "tokens": words[i],
                "reference": references[i],
                "prediction": predictions[i],
                "correct": references[i] == predictions[i],
            }
            for i in range(limit)
        ]
        return Evaluation(metrics=metrics, predictions=rows)

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {"aggregation_strategy": "simple"}


TASKS.add(TokenClassification.name, TokenClassification())
