"""causal_lm (packed pre-training) and sft (instruction tuning): preprocessing, loss masks, token-weighted
perplexity, generation, bad input, and end-to-end runs through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hfx.errors import HfxError
from hfx.tasks import TASKS
from hfx.tasks.causal_lm import (
    ALPACA,
    ALPACA_NO_INPUT,
    IGNORE,
    PadToLongest,
    chat_template_from,
    file_order,
    generate,
    pack,
    prompt_chat_template,
    sft_example,
    target_tokens,
    token_weighted_loss,
    unigram_perplexity,
)
from tests.conftest import predict_ok, run_hfx, shared, train_ok

LINES = [
    "First Citizen:",
    "Before we proceed any further, hear me speak.",
    "",
    "All:",
    "Speak, speak.",
    "You are all resolved rather to die than to famish?",
    "Resolved. resolved.",
    "We know't, we know't.",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    from hfx.tokenizer import build_tokenizer

    tcfg = OmegaConf.create(
        dict(kind="bpe", max_length=64, vocab_size=300, min_frequency=1, lowercase=False, train_samples=0)
    )
    mcfg = OmegaConf.create(dict(name_or_path=None, architecture="gpt2"))
    texts = LINES * 3 + ["Give three tips for staying healthy.", "Eat well, sleep, exercise.", "Sum: 1 2"]
    return build_tokenizer(
        tcfg, mcfg, lambda: iter(texts), str(tmp_path_factory.mktemp("tok")), "causal-lm-test"
    )


def cfg_for(task: str, **task_over) -> OmegaConf:
    schema = TASKS.get(task).schema
    return OmegaConf.create(
        {
            "task": OmegaConf.merge(OmegaConf.structured(schema), task_over),
            "tokenizer": {"max_length": 64},
            "dataset": {
                "text_column": "text",
                "instruction_column": "instruction",
                "input_column": "input",
                "output_column": "output",
            },
            "model": {"architecture": "gpt2"},
            "num_predictions": -1,
        }
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
    feats = TASKS.get("causal_lm").preprocess(split, tok, cfg_for("causal_lm", block_size=16), None, True)
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
        split, tok, cfg_for("causal_lm", block_size=8, rows="documents"), None, True
    )
    ids = [t for b in feats["input_ids"] for t in b]
    doc = tok("All:", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert any(ids[i : i + len(doc)] == doc for i in range(len(ids)))
    assert "\n" not in tok.decode(ids)


def test_too_little_text_for_one_block_names_the_key(tok):
    import datasets

    split = datasets.Dataset.from_dict({"text": ["All:"]})
    with pytest.raises(HfxError, match=r"task.block_size: the eval split has \d+ tokens"):
        TASKS.get("causal_lm").preprocess(split, tok, cfg_for("causal_lm", block_size=64), None, False)


# ---------------------------------------------------------------------------------------------------- SFT


def test_response_only_loss_mask_with_and_without_input(tok):
    template = chat_template_from(ALPACA, ALPACA_NO_INPUT)
    for inp, fmt in (("", ALPACA_NO_INPUT), ("1 2", ALPACA)):
        ex = sft_example(tok, template, "Sum", inp, "Eat well.", max_length=512)
        prompt = fmt.format(instruction="Sum", input=inp)
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert tok.decode(ex["input_ids"][:n_prompt]) == prompt
        assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
        response = ex["labels"][n_prompt:]
        assert response == ex["input_ids"][n_prompt:] and response[-1] == tok.eos_token_id
        assert tok.decode(response[:-1]) == "Eat well."
        assert ex["length"] == len(ex["input_ids"])


def test_truncation_keeps_the_end_of_the_prompt_and_some_response(tok):
    template = chat_template_from(ALPACA, ALPACA_NO_INPUT)
    ex = sft_example(tok, template, "Sum " * 50, "", "Eat well. " * 50, max_length=64)
    assert len(ex["input_ids"]) == 64
    n_response = sum(1 for t in ex["labels"] if t != IGNORE)
    assert n_response >= 16
    assert tok.decode(ex["input_ids"][: 64 - n_response]).endswith("### Response:\n")


def test_chat_template_renders_like_the_format_strings(tok):
    # Jinja syntax, quotes, a backslash and non-ASCII in the literal text ({{ }} are literal braces in str.format).
    odd = 'Say {{{{ "hi" }}}} {{% if x %}} \\n "quoted" ünï\n{instruction}|{input}.'
    template = chat_template_from(odd, "NO {instruction}")
    msg = TASKS.get("sft").pipeline_inputs({"instruction": "a {b} %}", "input": "c\\d"})
    assert tok.apply_chat_template(msg, chat_template=template, tokenize=False) == odd.format(
        instruction="a {b} %}", input="c\\d"
    )
    assert (
        tok.apply_chat_template(
            [{"role": "user", "content": "plain"}], chat_template=template, tokenize=False
        )
        == "NO plain"
    )
    with pytest.raises(HfxError, match=r"task.prompt_template: unknown field \{question\}"):
        chat_template_from("{question}", "{instruction}")
    with pytest.raises(HfxError, match=r"task.prompt_template: the template needs \{input\}"):
        chat_template_from("{instruction}", "{instruction}")


def test_use_chat_template_choices(tok):
    import copy

    own = copy.deepcopy(tok)
    own.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    alpaca = chat_template_from(ALPACA, ALPACA_NO_INPUT)
    assert prompt_chat_template(tok, cfg_for("sft").task) == alpaca
    assert prompt_chat_template(own, cfg_for("sft").task) == own.chat_template
    assert prompt_chat_template(own, cfg_for("sft", use_chat_template="false").task) == alpaca
    with pytest.raises(
        HfxError, match="task.use_chat_template: true, but the tokenizer has no chat template"
    ):
        prompt_chat_template(tok, cfg_for("sft", use_chat_template="true").task)
    ex = sft_example(own, own.chat_template, "Sum", "1 2", "Eat well.", 512)
    n_prompt = ex["labels"].count(IGNORE)
    assert own.decode(ex["input_ids"][:n_prompt]) == "<user>Sum\n\n1 2"
    assert own.decode(ex["input_ids"][n_prompt:], skip_special_tokens=True) == "<assistant>Eat well."


def test_prediction_prompt_is_the_training_prompt(tok):
    """What pipeline() tokenizes for a chat equals the prompt tokens trained on."""
    import copy

    saved = copy.deepcopy(tok)
    saved.chat_template = chat_template_from(ALPACA, ALPACA_NO_INPUT)
    msg = TASKS.get("sft").pipeline_inputs({"instruction": "Sum", "input": "1 2"})
    served = saved.apply_chat_template(msg, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    ex = sft_example(saved, saved.chat_template, "Sum", "1 2", "3", 512)
    assert served == ex["input_ids"][: ex["labels"].count(IGNORE)]


def test_collator_pads_labels_with_ignore_when_pad_is_eos():
    batch = PadToLongest(pad_id=7)(
        [{"input_ids": [1, 2, 7], "labels": [IGNORE, 2, 7]}, {"input_ids": [3], "labels": [3]}]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 7], [3, 7, 7]]
    assert batch["labels"].tolist() == [[IGNORE, 2, 7], [3, IGNORE, IGNORE]]  # the real EOS keeps its label
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


# ------------------------------------------------------------------------------------- evaluation helpers


def test_token_weighted_perplexity_matches_a_hand_computation():
    import datasets
    import torch

    model = tiny_gpt2(vocab=50, pad=0, eos=0)
    rows = [
        {"input_ids": [5, 6, 7, 8, 9, 10, 11, 12], "labels": [IGNORE, IGNORE, 7, 8, 9, 10, 11, 12]},
        {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]},
        {"input_ids": [9, 8, 7, 6], "labels": [IGNORE, IGNORE, IGNORE, 6]},
    ]
    feats = datasets.Dataset.from_list(rows)
    nll, n, batch_means = 0.0, 0, []
    with torch.no_grad():
        for r in rows:
            logp = torch.log_softmax(model(torch.tensor([r["input_ids"]])).logits[0].float(), -1)
            row_nll = [-float(logp[i - 1, t]) for i, t in enumerate(r["labels"]) if i > 0 and t != IGNORE]
            nll += sum(row_nll)
            n += len(row_nll)
            batch_means.append(sum(row_nll) / len(row_nll))
    loss, count = token_weighted_loss(model, feats, PadToLongest(0), batch_size=2, device="cpu")
    assert count == n == 9
    assert loss == pytest.approx(nll / n, rel=1e-5)
    # The Trainer's batch mean (here one row per batch) would differ when lengths vary.
    assert sum(batch_means) / 3 != pytest.approx(nll / n, rel=1e-3)
    assert list(target_tokens(feats)) == [7, 8, 9, 10, 11, 12, 6, 7, 6]


def test_unigram_perplexity_by_hand():
    # counts: a=2, b=1; N=3, V=4 -> p(a)=3/7, p(c)=1/7
    ppl = unigram_perplexity([1, 1, 2], [1, 3], vocab_size=4)
    assert ppl == pytest.approx(math.exp(-(math.log(3 / 7) + math.log(1 / 7)) / 2))


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
        HfxError, match=r"dataset.text_column: column 'text' is not in the train data; columns: line, id"
    ):
        TASKS.get("causal_lm").validate_data(raw, cfg_for("causal_lm"))


def test_empty_instruction_names_the_row():
    import datasets

    rows = {"instruction": ["Do it", "  ", "x"], "input": ["", "", ""], "output": ["a", "b", "c"]}
    raw = datasets.DatasetDict(train=datasets.Dataset.from_dict(rows), eval=datasets.Dataset.from_dict(rows))
    with pytest.raises(
        HfxError, match=r"dataset.instruction_column: row 1 of the train data has an empty 'instruction'"
    ):
        TASKS.get("sft").validate_data(raw, cfg_for("sft"))
    no_output = datasets.Dataset.from_dict({"instruction": ["x"], "response": ["y"]})
    with pytest.raises(HfxError, match=r"dataset.output_column: column 'output' is not in the train data"):
        TASKS.get("sft").validate_data(datasets.DatasetDict(train=no_output, eval=no_output), cfg_for("sft"))


def test_encoder_and_encoder_decoder_models_are_refused():
    from transformers import BartConfig, BertConfig, LlamaConfig

    cfg = cfg_for("causal_lm")
    task = TASKS.get("causal_lm")
    with pytest.raises(
        HfxError,
        match=r"^task causal_lm needs a decoder model \(llama, gpt2, \.\.\.\); "
        r"model type bert is encoder-only$",
    ):
        task.check_model(BertConfig(), cfg)
    with pytest.raises(HfxError, match="model type bart is encoder-decoder"):
        task.check_model(BartConfig(), cfg)
    task.check_model(LlamaConfig(max_position_embeddings=64), cfg)
    with pytest.raises(HfxError, match="task.block_size: 128 tokens exceed the model's 64 positions"):
        task.check_model(LlamaConfig(max_position_embeddings=64), cfg_for("causal_lm", block_size=128))
    bert_cfg = cfg_for("sft")
    bert_cfg.model.architecture = "bert"
    with pytest.raises(HfxError, match="task sft needs a decoder model"):
        TASKS.get("sft").validate_data({}, bert_cfg)


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
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "error: task causal_lm needs a decoder model (llama, gpt2, ...); model type bert is encoder-only"
    )


# ------------------------------------------------------------------------------------------------ end to end

TINY_LM = [
    "tokenizer=bpe",
    "tokenizer.vocab_size=500",
    "logger=none",
    "trainer.learning_rate=1e-3",
    "trainer.logging_steps=5",
    "trainer.max_steps=8",
    "trainer.per_device_train_batch_size=8",
    "task.num_samples=3",
    "task.max_new_tokens=12",
]


def _check_run(run: Path, fields: tuple[str, ...]) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["eval_loss"]) and math.isfinite(metrics["eval_perplexity"])
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(set(fields) <= set(r) for r in rows)
    assert any(r["generated"] for r in rows)
    return metrics


@pytest.mark.slow
def test_pretrain_end_to_end(tmp_path: Path, cache: Path):
    from transformers import AutoTokenizer, pipeline

    run = tmp_path / "run"
    train_ok(
        run,
        "task=causal_lm",
        "dataset=tiny_shakespeare",
        f"dataset.data_dir={shared('tiny_shakespeare')}",
        "model=tiny_gpt2",
        "peft=none",
        *TINY_LM,
        "task.block_size=64",
        "dataset.max_train_samples=1500",
        "dataset.max_eval_samples=200",
        cache=cache,
    )
    _check_run(run, ("prompt", "reference", "generated"))
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert tok.eos_token == "</s>" and tok.pad_token == "[PAD]"
    out = pipeline("text-generation", model=str(run / "model"))(
        "ROMEO:", **TASKS.get("causal_lm").pipeline_kwargs()
    )
    assert isinstance(out[0]["generated_text"], str)
    (row,) = predict_ok(run, "ROMEO:", cache)
    assert isinstance(row["prediction"][0]["generated_text"], str)


@pytest.mark.slow
def test_sft_end_to_end(tmp_path: Path, cache: Path):
    from transformers import pipeline

    run = tmp_path / "run"
    train_ok(
        run,
        "task=sft",
        "dataset=alpaca",
        f"dataset.data_dir={shared('alpaca')}",
        "model=tiny_gpt2",
        "peft=none",
        *TINY_LM,
        "dataset.max_train_samples=64",
        "dataset.max_eval_samples=16",
        cache=cache,
    )
    _check_run(run, ("instruction", "input", "reference", "generated"))
    assert (run / "model" / "chat_template.jinja").is_file()
    task = TASKS.get("sft")
    pipe = pipeline("text-generation", model=str(run / "model"))
    out = pipe(
        task.pipeline_inputs({"instruction": "Name three colors.", "input": ""}), **task.pipeline_kwargs()
    )
    assert isinstance(out[0]["generated_text"], str)
    assert json.loads((run / "model" / "hfx_task.json").read_text())["task"] == "sft"
    (row,) = predict_ok(run, {"instruction": "Name three colors.", "input": ""}, cache)
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
    _check_run(run, ("prompt", "reference", "generated"))
    assert not (run / "model" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name, _ in model.named_parameters())
    out = pipeline("text-generation", model=str(run / "model"))("ROMEO:", max_new_tokens=5, do_sample=False)
    assert out[0]["generated_text"].startswith("ROMEO:")
