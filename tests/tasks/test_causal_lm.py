"""causal_lm (packed pre-training): preprocessing, the collator, token-weighted perplexity, generation, bad input,
and end-to-end runs through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfx.architectures import ARCHITECTURES
from hfx.errors import HfxError
from hfx.generation import generate, token_weighted_loss
from hfx.labels import IGNORE_INDEX
from hfx.tasks import TASKS
from hfx.tasks.causal_lm import PadToLongest, file_order, pack
from tests.conftest import predict_ok, run_hfx, shared, train_ok
from tests.tasks.conftest import (
    LINES,
    TINY_LM,
    assert_loss_falls,
    check_lm_run,
    settings_for,
    unigram_perplexity_for,
)


def tiny_gpt2(vocab: int, pad: int, eos: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=vocab,
            n_embd=32,
            n_layer=1,
            n_head=2,
            n_positions=128,
            pad_token_id=pad,
            eos_token_id=eos,
            bos_token_id=eos,
        )
    ).eval()


# ------------------------------------------------------------------------------------------------ packing


def test_pack_cuts_exact_blocks_and_drops_the_remainder():
    assert pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], 4) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert pack([[1, 2]], 4) == []


def test_lines_are_joined_with_newlines_in_file_order(tok):
    import datasets

    split = datasets.Dataset.from_dict({"text": LINES * 4}).train_test_split(test_size=0.25, seed=0)["train"]
    ordered = file_order(split)
    assert [i for i in ordered._indices.column(0).to_pylist()] == sorted(split._indices.column(0).to_pylist())
    feats = TASKS.get("causal_lm").preprocess(split, tok, settings_for("causal_lm", block_size=16), None, True)
    blocks = feats["input_ids"]
    assert blocks and all(len(b) == 16 for b in blocks) and feats["labels"] == blocks
    text = tok.decode([t for b in blocks for t in b])
    full = "".join(t + "\n" for t in ordered["text"])
    assert full.startswith(text) and len(full) - len(text) < 40  # the tail short of a block is dropped
    assert tok.eos_token_id not in {t for b in blocks for t in b}


def test_documents_end_with_eos(tok):
    import datasets

    split = datasets.Dataset.from_dict({"text": ["Speak, speak.", "All:", "Resolved. resolved."] * 4})
    feats = TASKS.get("causal_lm").preprocess(
        split, tok, settings_for("causal_lm", block_size=8, rows="documents"), None, True
    )
    ids = [t for b in feats["input_ids"] for t in b]
    doc = tok("All:", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert any(ids[i : i + len(doc)] == doc for i in range(len(ids)))
    assert "\n" not in tok.decode(ids)


def test_too_little_text_for_one_block_names_the_key(tok):
    import datasets

    split = datasets.Dataset.from_dict({"text": ["All:"]})
    with pytest.raises(HfxError, match=r"task.block_size: the eval split has \d+ tokens"):
        TASKS.get("causal_lm").preprocess(split, tok, settings_for("causal_lm", block_size=64), None, False)


# ------------------------------------------------------------------------------------------------ collator


def test_collator_pads_labels_with_ignore_when_pad_is_eos():
    batch = PadToLongest(pad_id=7)(
        [{"input_ids": [1, 2, 7], "labels": [IGNORE_INDEX, 2, 7]}, {"input_ids": [3], "labels": [3]}]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 7], [3, 7, 7]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX, 2, 7],
        [3, IGNORE_INDEX, IGNORE_INDEX],
    ]  # the real EOS keeps its label
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


# ------------------------------------------------------------------------------------- evaluation helpers


def test_token_weighted_perplexity_matches_a_hand_computation():
    import datasets
    import torch

    model = tiny_gpt2(vocab=50, pad=0, eos=0)
    rows = [
        {
            "input_ids": [5, 6, 7, 8, 9, 10, 11, 12],
            "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9, 10, 11, 12],
        },
        {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]},
        {"input_ids": [9, 8, 7, 6], "labels": [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 6]},
    ]
    feats = datasets.Dataset.from_list(rows)
    nll, n, batch_means = 0.0, 0, []
    with torch.no_grad():
        for r in rows:
            logp = torch.log_softmax(model(torch.tensor([r["input_ids"]])).logits[0].float(), -1)
            row_nll = [
                -float(logp[i - 1, t]) for i, t in enumerate(r["labels"]) if i > 0 and t != IGNORE_INDEX
            ]
            nll += sum(row_nll)
            n += len(row_nll)
            batch_means.append(sum(row_nll) / len(row_nll))
    loss, count = token_weighted_loss(model, feats, PadToLongest(0), batch_size=2, device="cpu")
    assert count == n == 9
    assert loss == pytest.approx(nll / n, rel=1e-5)
    # The Trainer's batch mean (here one row per batch) would differ when lengths vary.
    assert sum(batch_means) / 3 != pytest.approx(nll / n, rel=1e-3)


def test_generation_left_pads_and_stops_at_eos_when_pad_is_eos():
    model = tiny_gpt2(vocab=50, pad=0, eos=0)

    class Tok:
        eos_token_id = pad_token_id = 0

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    together = generate(model, prompts, Tok(), max_new_tokens=6, device="cpu")
    alone = [generate(model, [p], Tok(), max_new_tokens=6, device="cpu")[0] for p in prompts]
    assert together == alone and all(together)


# ----------------------------------------------------------------------------------------------- bad input


def test_missing_text_column_lists_columns():
    import datasets

    raw = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"line": ["a"], "id": [1]}),
        eval=datasets.Dataset.from_dict({"line": ["b"], "id": [2]}),
    )
    with pytest.raises(
        HfxError, match=r"dataset.columns.text: column 'text' is not in the train data; columns: line, id"
    ):
        TASKS.get("causal_lm").validate_data(raw, settings_for("causal_lm"))


def test_encoder_and_encoder_decoder_models_are_refused():
    from transformers import BartConfig, BertConfig, LlamaConfig

    s = settings_for("causal_lm")
    task = TASKS.get("causal_lm")
    with pytest.raises(
        HfxError,
        match=r"^task causal_lm needs a decoder model \(llama, gpt2, \.\.\.\); "
        r"model type bert is encoder-only$",
    ):
        task.check_model(BertConfig(), s)
    with pytest.raises(HfxError, match="model type bart is encoder-decoder"):
        task.check_model(BartConfig(), s)
    task.check_model(LlamaConfig(max_position_embeddings=64), s)
    with pytest.raises(HfxError, match="task.block_size: 128 tokens exceed the model's 64 positions"):
        task.check_model(LlamaConfig(max_position_embeddings=64), settings_for("causal_lm", block_size=128))


def test_architecture_records_other_than_decoders_are_refused():
    with pytest.raises(HfxError, match="task sft needs a decoder model"):
        TASKS.get("sft").check_architecture(ARCHITECTURES.get("bert"))
    task = TASKS.get("causal_lm")
    with pytest.raises(
        HfxError,
        match=r"^task causal_lm needs a decoder model \(llama, gpt2, \.\.\.\); "
        r"model type bert is encoder-only$",
    ):
        task.check_architecture(ARCHITECTURES.get("bert"))
    with pytest.raises(HfxError, match=r"model type t5 is encoder-decoder \(use a seq2seq task\)$"):
        task.check_architecture(ARCHITECTURES.get("t5"))
    for decoder in ("gpt2", "llama"):
        task.check_architecture(ARCHITECTURES.get(decoder))
        TASKS.get("sft").check_architecture(ARCHITECTURES.get(decoder))


def test_cli_refuses_an_encoder_model_in_one_line(tmp_path: Path, cache: Path):
    r = run_hfx(
        "train",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"cache_dir={cache}",
        "task=causal_lm",
        "dataset=tiny_shakespeare",
        f"dataset.data_dir={shared('tiny_shakespeare')}",
        "model=tiny_bert",
        "peft=none",
        "dataset.max_train_samples=50",
        cache=cache,
    )
    assert r.returncode == 2  # refused when the config is composed
    assert r.stderr.strip().splitlines()[-1] == (
        "error: task causal_lm needs a decoder model (llama, gpt2, ...); model type bert is encoder-only"
    )


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_pretrain_end_to_end(tmp_path: Path, cache: Path):
    from transformers import AutoTokenizer, pipeline

    run = tmp_path / "run"
    overrides = [
        "task=causal_lm",
        "dataset=tiny_shakespeare",
        f"dataset.data_dir={shared('tiny_shakespeare')}",
        "model=tiny_gpt2",
        "peft=none",
        *TINY_LM,
        "task.block_size=64",
        "dataset.max_train_samples=3000",
        "dataset.max_eval_samples=200",
        # Past the unigram stage: about 40 steps only reach the unigram baseline, 100 beat it by a quarter.
        "trainer.learning_rate=3e-3",
        "trainer.max_steps=100",
        "trainer.per_device_train_batch_size=16",
        "trainer.logging_steps=10",
    ]
    train_ok(run, *overrides, cache=cache)
    metrics = check_lm_run(run, ("prompt", "reference", "generated"))
    assert_loss_falls(run, by=0.85)
    unigram = unigram_perplexity_for(overrides, cache)
    assert metrics["eval_perplexity"] < 0.9 * unigram, (metrics["eval_perplexity"], unigram)
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert tok.eos_token == "</s>" and tok.pad_token == "[PAD]"
    out = pipeline("text-generation", model=str(run / "model"))(
        "ROMEO:", **TASKS.get("causal_lm").pipeline_kwargs()
    )
    assert isinstance(out[0]["generated_text"], str)
    (row,) = predict_ok(run, "ROMEO:", cache)
    assert isinstance(row["prediction"][0]["generated_text"], str)


@pytest.mark.slow
def test_lora_on_tiny_llama_saves_a_merged_model(tmp_path: Path, cache: Path):
    from transformers import AutoModelForCausalLM, pipeline

    run = tmp_path / "run"
    small = [
        "model.config.hidden_size=64",
        "model.config.num_hidden_layers=2",
        "model.config.num_attention_heads=2",
        "model.config.num_key_value_heads=2",
        "model.config.intermediate_size=128",
    ]
    train_ok(
        run,
        "task=causal_lm",
        "dataset=tiny_shakespeare",
        f"dataset.data_dir={shared('tiny_shakespeare')}",
        *TINY_LM,
        "model=tiny_llama",
        *small,
        "peft=lora",
        "task.block_size=64",
        "dataset.max_train_samples=1000",
        "dataset.max_eval_samples=200",
        cache=cache,
    )
    check_lm_run(run, ("prompt", "reference", "generated"))
    assert not (run / "model" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name, _ in model.named_parameters())
    out = pipeline("text-generation", model=str(run / "model"))("ROMEO:", max_new_tokens=5, do_sample=False)
    assert out[0]["generated_text"].startswith("ROMEO:")
