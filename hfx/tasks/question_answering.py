"""Extractive question answering (SQuAD-style): a question and a context -> the answer span of the context.

Long contexts are split into overlapping windows (features); evaluation maps the best span over all windows of an
example back to the context text and scores it with SQuAD exact match and F1 (hfx.metrics.squad). The windowing
and span helpers here also serve `hfx predict` (hfx.pipelines.extractive_qa)."""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hfx.data import map_features, require_columns
from hfx.errors import HfxError
from hfx.metrics.squad import squad_metrics, squad_scores
from hfx.tasks.base import TASKS, Evaluation, Task, TaskConfig, TaskSettings, prediction_count

# transformers 5 has no pipeline of this name: hfx.pipelines.extractive_qa registers one.
PIPELINE_TASK = "question-answering"
# Characters of the context kept in predictions.jsonl (the full text is in the dataset).
CONTEXT_PREVIEW = 300


@dataclass
class QuestionAnsweringConfig(TaskConfig):
    name: str = "question_answering"
    # Tokens shared by consecutive windows of a context longer than tokenizer.max_length.
    doc_stride: int = 128
    # Longest predicted answer, in tokens.
    max_answer_length: int = 30
    # Start and end candidates per window considered when picking the best span.
    n_best: int = 20


@dataclass
class QuestionAnsweringColumns:
    id: str = "id"  # optional: names examples in errors and predictions (row numbers without it)
    question: str = "question"
    context: str = "context"
    answers: str = "answers"  # {text: [...], answer_start: [...]} per example, SQuAD style


def _columns(s: TaskSettings) -> dict[str, str]:
    c = s.columns
    return {"columns.question": c.question, "columns.context": c.context, "columns.answers": c.answers}


def _example_name(ids: list[Any] | None, i: int) -> str:
    return f"'{ids[i]}'" if ids is not None else f"at row {i}"


def check_answers(answers: Any, context: str, name: str, key: str) -> None:
    """One example's answers field: {text: [...], answer_start: [...]}, each text found at its offset."""
    shape = "{text: [...], answer_start: [...]} with one answer_start per text"
    if (
        not isinstance(answers, dict)
        or not isinstance(answers.get("text"), list)
        or not isinstance(answers.get("answer_start"), list)
        or len(answers["text"]) != len(answers["answer_start"])
    ):
        raise HfxError(f"{key}: expected {shape}; example {name} has {_preview(answers)}")
    if not answers["text"]:
        raise HfxError(
            f"{key}: example {name} has no answers (unanswerable questions, SQuAD v2 style, "
            "are not supported)"
        )
    for text, start in zip(answers["text"], answers["answer_start"], strict=True):
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise HfxError(
                f"{key}: expected {shape} (strings and integer offsets); example {name} has "
                f"{_preview(answers)}"
            )
        if context[start : start + len(text)] != text:
            raise HfxError(
                f"{key}: answer {_preview(text)} of example {name} is not at answer_start {start} "
                f"of its context (found {_preview(context[start : start + len(text)])} there)"
            )


def _preview(value: Any, width: int = 80) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[:width] + "..."


def answer_token_span(
    offsets: Sequence[Any],
    sequence_ids: Sequence[int | None],
    context_id: int,
    start_char: int,
    end_char: int,
    cls_index: int,
) -> tuple[int, int]:
    """(start, end) token positions of the characters [start_char, end_char) in one window, or (cls, cls) when
    the answer is not entirely inside the window's part of the context."""
    ctx = [k for k, s in enumerate(sequence_ids) if s == context_id]
    if not ctx:
        return cls_index, cls_index
    first, last = ctx[0], ctx[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls_index, cls_index
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def encode_windows(
    tokenizer: Any, questions: list[str], contexts: list[str], max_length: int, stride: int, **kwargs: Any
) -> Any:
    """Question + context, with a long context split into windows that overlap by `stride` tokens."""
    pad_on_right = tokenizer.padding_side == "right"
    # Leading spaces in some SQuAD questions waste window room.
    questions = [q.lstrip() for q in questions]
    first, second = (questions, contexts) if pad_on_right else (contexts, questions)
    try:
        return tokenizer(
            first,
            second,
            truncation="only_second" if pad_on_right else "only_first",
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            **kwargs,
        )
    except Exception as e:  # the tokenizers library raises a plain Exception when the question leaves no room
        if "truncate" in str(e) or "stride" in str(e):
            raise HfxError(
                f"task.doc_stride: {stride} with tokenizer.max_length {max_length} leaves no room for "
                f"the context of some question ({str(e).splitlines()[0]}); lower task.doc_stride or "
                "raise tokenizer.max_length"
            ) from e
        raise


def window_features(
    enc: Any,
    answers: list[dict[str, Any]] | None,
    pad_on_right: bool,
    cls_token_id: int | None,
    first_index: int = 0,
) -> dict[str, list[Any]]:
    """Per window: start/end positions of the first answer (CLS outside the window), the example it came from,
    and offsets with None outside the context (so spans can only come from the context)."""
    context_id = 1 if pad_on_right else 0
    out: dict[str, list[Any]] = {
        "start_positions": [],
        "end_positions": [],
        "example_index": [],
        "offset_mapping": [],
    }
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq_ids = enc.sequence_ids(i)
        example = enc["overflow_to_sample_mapping"][i]
        ids = enc["input_ids"][i]
        cls_index = ids.index(cls_token_id) if cls_token_id in ids else 0
        if answers is not None:
            first = answers[example]
            start_char = first["answer_start"][0]
            end_char = start_char + len(first["text"][0])
            start, end = answer_token_span(offsets, seq_ids, context_id, start_char, end_char, cls_index)
        else:
            start = end = cls_index
        out["start_positions"].append(start)
        out["end_positions"].append(end)
        out["example_index"].append(first_index + example)
        out["offset_mapping"].append(
            [list(o) if s == context_id else None for o, s in zip(offsets, seq_ids, strict=True)]
        )
    return out


def best_span(
    start_logits: Sequence[Any],
    end_logits: Sequence[Any],
    offsets: Sequence[Sequence[Any] | None],
    n_best: int,
    max_answer_length: int,
) -> tuple[float, int, int] | None:
    """The highest-scoring valid span of one window: (start_logit + end_logit, start_char, end_char) or None.
    Valid: both ends inside the context, start <= end, at most max_answer_length tokens."""
    import numpy as np

    n = len(offsets)
    s = np.asarray(start_logits[:n], dtype=np.float32)
    e = np.asarray(end_logits[:n], dtype=np.float32)
    best = None
    for i in np.argsort(s)[::-1][:n_best]:
        if offsets[i] is None:
            continue
        for j in np.argsort(e)[::-1][:n_best]:
            if offsets[j] is None or j < i or j - i + 1 > max_answer_length:
                continue
            score = float(s[i] + e[j])
            if best is None or score > best[0]:
                best = (score, int(offsets[i][0]), int(offsets[j][1]))
    return best


def predict_answers(
    start_logits: Any,
    end_logits: Any,
    offset_mapping: list[Any],
    example_index: list[int],
    contexts: list[str],
    n_best: int,
    max_answer_length: int,
) -> list[str]:
    """The best span of each example over all its windows, as text of its context ('' when none is valid)."""
    windows: dict[int, list[int]] = collections.defaultdict(list)
    for f, ex in enumerate(example_index):
        windows[ex].append(f)
    answers = []
    for ex, context in enumerate(contexts):
        best = None
        for f in windows.get(ex, []):
            span = best_span(start_logits[f], end_logits[f], offset_mapping[f], n_best, max_answer_length)
            if span is not None and (best is None or span[0] > best[0]):
                best = span
        answers.append(context[best[1] : best[2]] if best else "")
    return answers


class QuestionAnswering(Task):
    name = "question_answering"
    pipeline_task = PIPELINE_TASK
    schema = QuestionAnsweringConfig
    columns = QuestionAnsweringColumns
    predict_fields = ("question", "context")
    peft_task_type = "QUESTION_ANS"
    head_modules = ("qa_outputs",)
    streaming = True  # a batch of rows maps to its windows (map_features); evaluation stays materialised

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering

    def validate_data(self, raw: Any, s: TaskSettings) -> None:
        c = s.columns
        for split_name, split in raw.items():
            require_columns(split, _columns(s), split_name)
            ids = split[c.id] if c.id in split.column_names else None
            for i, (context, answers) in enumerate(zip(split[c.context], split[c.answers], strict=True)):
                if not isinstance(context, str):
                    raise HfxError(
                        f"dataset.columns.context: example {_example_name(ids, i)} has a context of type "
                        f"{type(context).__name__}, expected text"
                    )
                check_answers(answers, context, _example_name(ids, i), "dataset.columns.answers")

    def training_texts(self, split: Any, s: TaskSettings) -> Iterator[str]:
        yield from split[s.columns.question]
        # Many questions share a context: count each context once.
        yield from dict.fromkeys(split[s.columns.context])

    def preprocess(
        self, split: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None, train: bool
    ) -> Any:
        c, t = s.columns, s.task
        max_length = s.max_length
        if not 0 <= t.doc_stride < max_length // 2:
            raise HfxError(
                f"task.doc_stride: expected 0 <= doc_stride < tokenizer.max_length / 2 "
                f"({max_length // 2}), got {t.doc_stride}"
            )
        pad_on_right = tokenizer.padding_side == "right"

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
            enc = encode_windows(
                tokenizer, batch[c.question], batch[c.context], max_length, t.doc_stride
            )
            windows = window_features(
                enc, batch[c.answers], pad_on_right, tokenizer.cls_token_id, first_index=indices[0]
            )
            out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
            out.update(start_positions=windows["start_positions"], end_positions=windows["end_positions"])
            if train:
                # Precomputed lengths let length-grouped sampling skip a pass over the data.
                out["length"] = [len(ids) for ids in enc["input_ids"]]
            else:
                # Evaluation keeps what maps a window's logits back to its example's text. Positions stay too,
                # so the Trainer reports eval_loss.
                out.update(example_index=windows["example_index"], offset_mapping=windows["offset_mapping"])
            return out

        return map_features(split, encode, train, with_indices=True)

    def evaluate(
        self, trainer: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None
    ) -> Evaluation:
        c, t = s.columns, s.task
        # Only the per-window start/end logits are kept (windows x max_length each), never hidden states.
        out = trainer.predict(features, metric_key_prefix="eval")
        start_logits, end_logits = out.predictions[0], out.predictions[1]
        contexts = raw[c.context]
        predicted = predict_answers(
            start_logits,
            end_logits,
            features["offset_mapping"],
            features["example_index"],
            contexts,
            t.n_best,
            t.max_answer_length,
        )
        golds = [a["text"] for a in raw[c.answers]]
        metrics = {
            **dict(out.metrics),
            **{f"eval_{k}": v for k, v in squad_metrics(predicted, golds).items()},
        }
        ids = raw[c.id] if c.id in raw.column_names else list(range(len(raw)))
        questions = raw[c.question]
        limit = prediction_count(s.num_predictions, len(predicted))
        rows = []
        for i in range(limit):
            em, f1 = squad_scores(predicted[i], golds[i])
            context = contexts[i]
            rows.append(
                {
                    "id": ids[i],
                    "question": questions[i],
                    "context": context
                    if len(context) <= CONTEXT_PREVIEW
                    else context[:CONTEXT_PREVIEW] + "...",
                    "answers": golds[i],
                    "prediction": predicted[i],
                    "exact_match": bool(em),
                    "f1": round(100 * f1, 2),
                }
            )
        return Evaluation(metrics=metrics, predictions=rows)

    def pipeline_inputs(self, record: dict[str, Any]) -> Any:
        return {"question": record["question"], "context": record["context"]}


TASKS.add(QuestionAnswering.name, QuestionAnswering())
