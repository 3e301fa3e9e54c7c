"""seq2seq: label construction, decoding, bad input, and end-to-end runs of the real CLI (its metrics:
tests/metrics, its pipelines: tests/pipelines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import predict_ok, run_hfx, shared, train_ok
from tests.tasks.conftest import assert_loss_falls, settings_for

# A BART small enough for a few CPU seconds per run, and wide enough to learn in 100 steps.
TINY_BART = [
    "model=tiny_bart",
    "tokenizer=bpe",
    "tokenizer.vocab_size=600",
    "peft=none",
    "logger=none",
    "model.config.d_model=128",
    "model.config.encoder_layers=1",
    "model.config.decoder_layers=1",
    "model.config.encoder_attention_heads=2",
    "model.config.decoder_attention_heads=2",
    "model.config.encoder_ffn_dim=256",
    "model.config.decoder_ffn_dim=256",
    "trainer.learning_rate=2e-3",
    "trainer.warmup_steps=0.1",
    "trainer.logging_steps=10",
    "task.generation.max_new_tokens=12",
]
MULTI30K = ["task=translation", "dataset=multi30k"]
DIALOGSUM = ["task=summarization", "dataset=dialogsum", "tokenizer.max_length=128"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """A BPE tokenizer trained like hfx trains one (no post-processor: no <s> / </s> added)."""
    from omegaconf import OmegaConf

    from hfx.tokenizer import build_tokenizer

    texts = ["a man walks a dog .", "ein mann geht mit einem hund .", "two women talk ."] * 20
    tcfg = OmegaConf.create(
        {
            "kind": "bpe",
            "max_length": 32,
            "vocab_size": 300,
            "min_frequency": 1,
            "lowercase": False,
            "train_samples": 0,
        }
    )
    return build_tokenizer(
        tcfg,
        OmegaConf.create({"architecture": "bart"}),
        lambda: iter(texts),
        str(tmp_path_factory.mktemp("tok")),
        "seq2seq-unit",
    )


def _settings(target="translation.de", **task):
    task = {"metric": "bleu", "max_target_length": 8, **task}
    columns = {"source": "translation.en", "target": target}
    return settings_for("seq2seq", columns=columns, max_length=32, **task)


def _split(rows):
    import datasets

    return datasets.Dataset.from_list([{"translation": {"en": en, "de": de}} for en, de in rows])


# --- unit -------------------------------------------------------------------------------------------------------


def test_labels_end_in_eos_and_pad_with_minus_100(tokenizer):
    from transformers import DataCollatorForSeq2Seq

    from hfx.tasks.seq2seq import Seq2Seq

    split = _split(
        [("a man walks a dog .", "ein mann geht mit einem hund . " * 5), ("two women talk .", "ein hund")]
    )
    feats = Seq2Seq().preprocess(split, tokenizer, _settings(), None, train=True)
    eos = tokenizer.eos_token_id
    long, short = feats[0]["labels"], feats[1]["labels"]
    assert long[-1] == eos and len(long) == 8  # truncated to max_target_length, EOS kept
    assert short[-1] == eos and short.count(eos) == 1
    assert eos not in feats[0]["input_ids"]  # sources stay as the pipeline will see them
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)(
        [{k: feats[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(2)]
    )
    assert batch["labels"].shape[1] == 8
    assert (batch["labels"][1, len(short) :] == -100).all()
    assert batch["labels"][1, len(short) - 1] == eos


def test_with_eos_keeps_an_existing_eos():
    from hfx.tasks.seq2seq import with_eos

    assert with_eos([4, 5, 2], 2, 8) == [4, 5, 2]
    assert with_eos([4, 5], 2, 8) == [4, 5, 2]
    assert with_eos([4, 5, 6, 7], 2, 3) == [4, 5, 2]


def test_decode_replaces_minus_100(tokenizer):
    import numpy as np

    from hfx.tasks.seq2seq import decode, generated_length

    ids = tokenizer("a man walks a dog .")["input_ids"]
    row = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    padded = np.array([row + [-100, -100], row + [tokenizer.pad_token_id] * 2])
    assert decode(padded, tokenizer) == ["a man walks a dog ."] * 2
    assert generated_length(padded, tokenizer) == len(row)


def test_evaluation_scores_against_the_raw_references(tokenizer):
    """Labels are cut at max_target_length: scoring against them would credit a prediction of the cut text."""
    from types import SimpleNamespace

    import numpy as np

    from hfx.metrics.text import bleu
    from hfx.tasks.seq2seq import Seq2Seq

    rows = [
        ("a man walks a dog .", "ein mann geht mit einem hund ."),
        ("a dog walks .", "ein hund geht mit einem mann ."),
    ]
    split = _split(rows)
    settings = _settings(max_target_length=7)
    feats = Seq2Seq().preprocess(split, tokenizer, settings, None, train=False)
    # A model that predicts exactly the truncated labels (minus EOS).
    cut = [tokenizer.decode(f["labels"][:-1], skip_special_tokens=True).strip() for f in feats]
    assert cut[0] != rows[0][1]
    width = max(len(f["labels"]) for f in feats)
    ids = np.array([f["labels"][:-1] + [tokenizer.pad_token_id] * (width - len(f["labels"]) + 1) for f in feats])

    class Trainer:
        def predict(self, features, metric_key_prefix):
            return SimpleNamespace(predictions=ids, label_ids=ids, metrics={"eval_bleu": 100.0, "eval_loss": 1.0})

    evaluation = Seq2Seq().evaluate(Trainer(), feats, split, tokenizer, settings, None)
    assert [r["reference"] for r in evaluation.predictions] == [de for _, de in rows]
    assert [r["prediction"] for r in evaluation.predictions] == cut
    assert evaluation.metrics["eval_bleu"] == pytest.approx(bleu(cut, [de for _, de in rows])["bleu"])
    assert 0 < evaluation.metrics["eval_bleu"] < 100 and evaluation.metrics["eval_loss"] == 1.0


# --- bad input --------------------------------------------------------------------------------------------------


def test_missing_field_of_dict_column_names_the_fields():
    from hfx.errors import HfxError
    from hfx.tasks.seq2seq import Seq2Seq

    raw = {"train": _split([("a", "b")]), "eval": _split([("a", "b")])}
    with pytest.raises(
        HfxError, match=r"dataset.columns.target: column 'translation' .* no field 'fr'; fields: en, de"
    ):
        Seq2Seq().validate_data(raw, _settings(target="translation.fr"))


def test_empty_target_is_an_error():
    from hfx.errors import HfxError
    from hfx.tasks.seq2seq import Seq2Seq

    raw = {"train": _split([("a", "b"), ("c", "  ")]), "eval": _split([("a", "b")])}
    with pytest.raises(HfxError, match=r"dataset.columns.target: row 1 of the train data has an empty target"):
        Seq2Seq().validate_data(raw, _settings())


def test_unknown_metric_is_an_error():
    from hfx.errors import HfxError
    from hfx.tasks.seq2seq import Seq2Seq

    raw = {"train": _split([("a", "b")]), "eval": _split([("a", "b")])}
    with pytest.raises(HfxError, match=r"task.metric 'blue'.*did you mean 'bleu'"):
        Seq2Seq().validate_data(raw, _settings(metric="blue"))


def test_only_encoder_decoder_records_are_accepted():
    from hfx.architectures import ARCHITECTURES
    from hfx.errors import HfxError
    from hfx.tasks.seq2seq import Seq2Seq

    for model_type, shape in (("bert", "encoder-only"), ("gpt2", "decoder-only")):
        with pytest.raises(HfxError) as err:
            Seq2Seq().check_architecture(ARCHITECTURES.get(model_type))
        assert str(err.value) == (
            f"model: task seq2seq needs an encoder-decoder model (bart, t5); model type {model_type} is {shape}"
        )
    for model_type in ("bart", "t5"):
        Seq2Seq().check_architecture(ARCHITECTURES.get(model_type))


def test_missing_column_cli(tmp_path: Path, cache: Path):
    data = shared("dialogsum")
    r = run_hfx(
        "train",
        f"hydra.run.dir={tmp_path}",
        f"cache_dir={cache}",
        *TINY_BART,
        *DIALOGSUM,
        f"dataset.data_dir={data}",
        "dataset.columns.source=text",
        cache=cache,
    )
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: dataset.columns.source: column 'text' is not in the")
    assert "columns: dialogue, summary, topic" in err


def test_encoder_only_model_is_rejected(tmp_path: Path, cache: Path):
    data = shared("multi30k")
    r = run_hfx(
        "train",
        f"hydra.run.dir={tmp_path}",
        f"cache_dir={cache}",
        *MULTI30K,
        f"dataset.data_dir={data}",
        "model=tiny_bert",
        "tokenizer=wordpiece",
        "tokenizer.vocab_size=600",
        "peft=none",
        "dataset.max_train_samples=50",
        "dataset.max_eval_samples=5",
        cache=cache,
    )
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == (
        "error: model: task seq2seq needs an encoder-decoder model (bart, t5); model type bert is encoder-only"
    )


# --- end to end -------------------------------------------------------------------------------------------------


def _pipeline_text(model_dir: Path, name: str, key: str, text: str) -> str:
    from transformers import pipeline

    from hfx.pipelines import register

    register(name)
    info = json.loads((model_dir / "hfx_task.json").read_text())
    assert info["task"] == "seq2seq" and info["pipeline"] == name
    out = pipeline(info["pipeline"], model=str(model_dir))(text)
    assert isinstance(out, list) and isinstance(out[0][key], str)
    return out[0][key]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


def _bleu(predictions: list[str], references: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score


def _rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 x 100, straight from rouge-score (Porter stemming, as hfx scores)."""
    from rouge_score import rouge_scorer

    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {f"eval_{k}": 100 * sum(s[k].fmeasure for s in scores) / len(scores) for k in keys}


@pytest.mark.slow
def test_translation_end_to_end(tmp_path: Path, cache: Path):
    data = shared("multi30k")
    run = tmp_path / "run"
    metrics = train_ok(
        run,
        *TINY_BART,
        *MULTI30K,
        f"dataset.data_dir={data}",
        "dataset.max_train_samples=2560",
        "dataset.max_eval_samples=32",
        "trainer.max_steps=80",
        "trainer.per_device_train_batch_size=32",
        "task.generation.no_repeat_ngram_size=3",
        cache=cache,
    )
    assert {"eval_bleu", "eval_gen_len", "eval_loss"} <= set(metrics)
    assert "eval_rouge1" not in metrics
    assert 1 <= metrics["eval_gen_len"] <= 13
    rows = _rows(run)
    sources = [
        json.loads(line)["translation"] for line in (data / "validation.jsonl").read_text().splitlines()[:32]
    ]
    assert [r["source"] for r in rows] == [s["en"] for s in sources]
    assert [r["reference"] for r in rows] == [s["de"] for s in sources]  # the raw text, as scored
    assert all(isinstance(r["prediction"], str) for r in rows)
    # The score is sacrebleu's on predictions.jsonl as written.
    predictions, references = [r["prediction"] for r in rows], [r["reference"] for r in rows]
    assert metrics["eval_bleu"] == pytest.approx(_bleu(predictions, references), abs=1e-9)
    # It learned: the loss falls, and BLEU beats copying the English source (scripts/seq2seq_baselines.py).
    assert_loss_falls(run, by=0.85)
    copy_source = _bleu([r["source"] for r in rows], references)
    assert metrics["eval_bleu"] > 2 * copy_source + 0.5, (metrics["eval_bleu"], copy_source)
    gen = json.loads((run / "model" / "generation_config.json").read_text())
    assert (
        gen["decoder_start_token_id"] == gen["bos_token_id"]
        and gen["forced_eos_token_id"] == gen["eos_token_id"]
    )
    assert isinstance(
        _pipeline_text(run / "model", "hfx-translation", "translation_text", "A man walks a dog."), str
    )
    (row,) = predict_ok(run, "A man walks a dog.", cache)
    assert isinstance(row["prediction"][0]["translation_text"], str)


@pytest.mark.extended  # outside CI's 20 minutes (make test-extended)
def test_summarization_end_to_end(tmp_path: Path, cache: Path):
    data = shared("dialogsum")
    run = tmp_path / "run"
    metrics = train_ok(
        run,
        *TINY_BART,
        *DIALOGSUM,
        f"dataset.data_dir={data}",
        "dataset.max_train_samples=500",
        "dataset.max_eval_samples=16",
        "trainer.max_steps=100",
        "trainer.per_device_train_batch_size=16",
        "task.generation.max_new_tokens=24",
        # Labels are cut at 32 tokens, shorter than most summaries: the score must still use the whole text.
        "task.max_target_length=32",
        cache=cache,
    )
    assert {"eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_gen_len"} <= set(metrics)
    rows = _rows(run)
    test_rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()[:16]]
    assert [r["source"] for r in rows] == [t["dialogue"] for t in test_rows]  # eval_split: test, in order
    assert [r["reference"] for r in rows] == [t["summary"] for t in test_rows]  # the raw text, as scored
    predictions, references = [r["prediction"] for r in rows], [r["reference"] for r in rows]
    recomputed = _rouge(predictions, references)
    assert {k: metrics[k] for k in recomputed} == pytest.approx(recomputed, abs=1e-9)
    # It learned: the loss falls, and ROUGE-L beats copying the dialogue as its own summary.
    assert_loss_falls(run, by=0.75)
    copy_source = _rouge([r["source"] for r in rows], references)["eval_rougeL"]
    assert metrics["eval_rougeL"] > copy_source + 2, (metrics["eval_rougeL"], copy_source)
    text = _pipeline_text(run / "model", "hfx-summarization", "summary_text", test_rows[0]["dialogue"])
    assert isinstance(text, str)
    (row,) = predict_ok(run, "#Person1#: Hello, how are you? #Person2#: Fine, thanks.", cache)
    assert isinstance(row["prediction"][0]["summary_text"], str)
