"""sft (instruction tuning): the response-only loss mask, truncation, chat templates, the prediction prompt, bad
input, and an end-to-end run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfx.chat_template import ALPACA, ALPACA_NO_INPUT, chat_template_from, prompt_chat_template
from hfx.errors import HfxError
from hfx.labels import IGNORE_INDEX
from hfx.tasks import TASKS
from hfx.tasks.sft import sft_example
from tests.conftest import predict_ok, shared, train_ok
from tests.tasks.conftest import (
    TINY_LM,
    assert_loss_falls,
    check_lm_run,
    settings_for,
    unigram_perplexity_for,
)


def test_response_only_loss_mask_with_and_without_input(tok):
    template = chat_template_from(ALPACA, ALPACA_NO_INPUT)
    for inp, fmt in (("", ALPACA_NO_INPUT), ("1 2", ALPACA)):
        ex = sft_example(tok, template, "Sum", inp, "Eat well.", max_length=512)
        prompt = fmt.format(instruction="Sum", input=inp)
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert tok.decode(ex["input_ids"][:n_prompt]) == prompt
        assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        response = ex["labels"][n_prompt:]
        assert response == ex["input_ids"][n_prompt:] and response[-1] == tok.eos_token_id
        assert tok.decode(response[:-1]) == "Eat well."
        assert ex["length"] == len(ex["input_ids"])


def test_truncation_keeps_the_end_of_the_prompt_and_some_response(tok):
    template = chat_template_from(ALPACA, ALPACA_NO_INPUT)
    ex = sft_example(tok, template, "Sum " * 50, "", "Eat well. " * 50, max_length=64)
    assert len(ex["input_ids"]) == 64
    n_response = sum(1 for t in ex["labels"] if t != IGNORE_INDEX)
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
    assert prompt_chat_template(tok, settings_for("sft").task) == alpaca
    assert prompt_chat_template(own, settings_for("sft").task) == own.chat_template
    assert prompt_chat_template(own, settings_for("sft", use_chat_template="false").task) == alpaca
    with pytest.raises(
        HfxError, match="task.use_chat_template: true, but the tokenizer has no chat template"
    ):
        prompt_chat_template(tok, settings_for("sft", use_chat_template="true").task)
    ex = sft_example(own, own.chat_template, "Sum", "1 2", "Eat well.", 512)
    n_prompt = ex["labels"].count(IGNORE_INDEX)
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
    assert served == ex["input_ids"][: ex["labels"].count(IGNORE_INDEX)]


# ----------------------------------------------------------------------------------------------- bad input


def test_empty_instruction_names_the_row():
    import datasets

    rows = {"instruction": ["Do it", "  ", "x"], "input": ["", "", ""], "output": ["a", "b", "c"]}
    raw = datasets.DatasetDict(train=datasets.Dataset.from_dict(rows), eval=datasets.Dataset.from_dict(rows))
    with pytest.raises(
        HfxError, match=r"dataset.columns.instruction: row 1 of the train data has an empty 'instruction'"
    ):
        TASKS.get("sft").validate_data(raw, settings_for("sft"))
    no_output = datasets.Dataset.from_dict({"instruction": ["x"], "response": ["y"]})
    with pytest.raises(HfxError, match=r"dataset.columns.output: column 'output' is not in the train data"):
        TASKS.get("sft").validate_data(datasets.DatasetDict(train=no_output, eval=no_output), settings_for("sft"))


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.extended  # outside CI's 20 minutes (make test-extended)
def test_sft_end_to_end(tmp_path: Path, cache: Path):
    from transformers import pipeline

    run = tmp_path / "run"
    overrides = [
        "task=sft",
        "dataset=alpaca",
        f"dataset.data_dir={shared('alpaca')}",
        "model=tiny_gpt2",
        "peft=none",
        *TINY_LM,
        "dataset.max_train_samples=640",
        "dataset.max_eval_samples=32",
        # Past the unigram stage (40 steps only reach it).
        "trainer.learning_rate=3e-3",
        "trainer.max_steps=100",
        "trainer.per_device_train_batch_size=16",
        "trainer.logging_steps=10",
    ]
    train_ok(run, *overrides, cache=cache)
    metrics = check_lm_run(run, ("instruction", "input", "reference", "generated"))
    assert_loss_falls(run, by=0.9)
    unigram = unigram_perplexity_for(overrides, cache)
    assert metrics["eval_perplexity"] < 0.95 * unigram, (metrics["eval_perplexity"], unigram)
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
