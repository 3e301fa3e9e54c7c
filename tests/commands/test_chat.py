"""Conversations with an sft run (`hfx predict run=<sft run> messages=[...]`, or {"messages": [...]} lines): every
turn goes through the run's saved chat template (the instruction template closes each earlier reply with EOS, as
every trained response ends), the assistant's reply comes back without the prompt, and a conversation the
template cannot render in full, or that is not a list of {role, content}, is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfx.chat_template import ALPACA_NO_INPUT, check_messages
from hfx.errors import HfxError
from tests.conftest import run_hfx, train_ok

CONVERSATION = [
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Add the numbers."},
]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory, hfx_cache: Path) -> Path:
    """A tiny GPT-2 trained for two steps on a few instruction records: the instruction template saved with it."""
    folder = tmp_path_factory.mktemp("chat")
    records = [
        {"instruction": f"Name colour {i}.", "input": "", "output": ["Red.", "Blue.", "Green."][i % 3]}
        for i in range(12)
    ] + [
        {"instruction": "Add the numbers.", "input": f"{i} {i + 1}", "output": str(2 * i + 1)}
        for i in range(4)
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = folder / "run"
    train_ok(
        run,
        "task=sft",
        "model=tiny_gpt2",
        "peft=none",
        "tokenizer=bpe",
        "tokenizer.vocab_size=300",
        "logger=none",
        "dataset.path=json",
        f"dataset.data_files.train={folder / 'train.jsonl'}",
        f"dataset.data_files.validation={folder / 'train.jsonl'}",
        "dataset.max_eval_samples=2",
        "trainer.max_steps=2",
        "trainer.per_device_train_batch_size=8",
        "trainer.save_strategy=no",
        "task.num_samples=1",
        "task.max_new_tokens=4",
        cache=hfx_cache,
    )
    return run


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ("hi", r"messages: expected a list of \{role, content\} objects"),
        ([], r"messages: expected a list of \{role, content\} objects"),
        (["hi"], r"messages\[0\]: expected an object with role and content"),
        ([{"role": "user"}], r"messages\[0\]: expected an object with role and content"),
        (
            [{"role": "bot", "content": "hi"}],
            r"messages\[0\].role: expected system, user or assistant, got \"bot\"",
        ),
        ([{"role": "user", "content": ["hi"]}], r"messages\[0\].content: expected text"),
        (CONVERSATION[:2], "messages: the last message must be the user's .* got assistant"),
    ],
)
def test_malformed_conversations_are_refused(messages, error) -> None:
    with pytest.raises(HfxError, match=error):
        check_messages(messages)
    assert check_messages(CONVERSATION) == CONVERSATION


@pytest.mark.slow
def test_every_turn_is_rendered_and_only_the_reply_comes_back(
    sft_run: Path, cache: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfx.commands.predict import predict
    from hfx.config.compose import compose
    from hfx.tasks import TASKS

    # The prompt: each turn's training example after the other, the earlier reply closed by EOS, then the prompt
    # of the last instruction (where the reply starts).
    tokenizer = AutoTokenizer.from_pretrained(sft_run / "model")
    prompt = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=False)
    assert prompt == (
        ALPACA_NO_INPUT.format(instruction="Name a colour.")
        + "Red."
        + tokenizer.eos_token
        + ALPACA_NO_INPUT.format(instruction="Add the numbers.")
    )
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.eos_token_id) == 1

    r = run_hfx("predict", f"run={sft_run}", f"messages={json.dumps(CONVERSATION)}", cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert row["input"] == {"messages": CONVERSATION}
    (reply,) = row["prediction"]

    # The reply is the greedy continuation of that whole prompt, new tokens only; the last turn alone continues
    # differently, so the equality shows the earlier turns were in the prompt.
    model = AutoModelForCausalLM.from_pretrained(sft_run / "model").eval()

    def continuation(messages: list[dict]) -> str:
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            out = model.generate(
                **ids,
                **{k: v for k, v in TASKS.get("sft").pipeline_kwargs().items() if k != "return_full_text"},
            )
        return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    assert reply["generated_text"] == continuation(CONVERSATION)
    assert continuation(CONVERSATION[-1:]) != reply["generated_text"]
    assert "### Instruction" not in reply["generated_text"]

    # The same conversation as a line of an input file gives the same reply.
    lines = tmp_path / "conversations.jsonl"
    lines.write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    (served,) = predict(compose("predict", [f"run={sft_run}", f"input_file={lines}"]), tmp_path / "out")
    assert served == row


@pytest.mark.slow
def test_a_turn_the_template_leaves_out_is_refused(sft_run: Path, tmp_path: Path) -> None:
    """The instruction template has no place for a system message: refused, not silently dropped."""
    from hfx.commands.predict import check_inputs
    from hfx.config.compose import compose

    system = [{"role": "system", "content": "Answer briefly."}, *CONVERSATION]
    cfg = compose("predict", [f"run={sft_run}", f"messages='{json.dumps(system)}'"])
    with pytest.raises(
        HfxError, match=r"messages\[0\]: the run's chat template leaves this system message out"
    ):
        check_inputs(cfg)
    lines = tmp_path / "conversations.jsonl"
    lines.write_text(
        json.dumps({"messages": CONVERSATION}) + "\n" + json.dumps({"messages": [{"role": "user"}]})
    )
    with pytest.raises(HfxError, match=r"input_file: record 2 of .*: messages\[0\]: expected an object"):
        check_inputs(compose("predict", [f"run={sft_run}", f"input_file={lines}"]))
