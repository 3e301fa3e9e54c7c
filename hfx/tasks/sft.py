"""Instruction tuning (`sft`): instruction / input / output records, loss on the response tokens only.

Every prompt goes through a chat template (hfx.chat_template): the tokenizer's own when it has one
(`use_chat_template: auto`), otherwise the Alpaca-style templates of the task config, installed as the tokenizer's
chat template and saved with the model. So `pipeline("text-generation", model=<run>/model)` given
`[{"role": "user", "content": ..., "instruction": ..., "input": ...}]` (what `pipeline_inputs` builds) sees
exactly the training prompt. Prompt and response are tokenized separately, so the prompt a generation sees is
token for token the one trained on; EOS ends every response. Evaluation is the causal_lm one (response-token
perplexity, greedy samples).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hfx.chat_template import (
    ALPACA,
    ALPACA_NO_INPUT,
    check_messages,
    prompt_chat_template,
    prompt_text,
    user_message,
)
from hfx.data import map_features, require_columns
from hfx.errors import HfxError
from hfx.generation import generate, trainer_device
from hfx.labels import IGNORE_INDEX
from hfx.tasks.base import TASKS, Evaluation, TaskConfig, TaskSettings, prediction_count
from hfx.tasks.causal_lm import CausalLM


@dataclass
class SFTConfig(TaskConfig):
    name: str = "sft"
    # auto: the tokenizer's chat template if it has one, else the templates below; true: the tokenizer's
    # (fail without one); false: the templates below.
    use_chat_template: str = "auto"
    prompt_template: str = ALPACA
    prompt_template_no_input: str = ALPACA_NO_INPUT
    num_samples: int = 8
    max_new_tokens: int = 64


@dataclass
class SFTColumns:
    instruction: str = "instruction"
    # Optional: a dataset without this column has no extra input (the no-input template).
    input: str = "input"
    output: str = "output"


def sft_example(
    tokenizer: Any, template: str, instruction: str, extra_input: str | None, output: str, max_length: int
) -> dict[str, list[int]]:
    """input_ids = prompt + response + EOS; labels = -100 on the prompt, the ids on response and EOS."""
    prompt = prompt_text(tokenizer, template, instruction, extra_input)
    full = tokenizer.apply_chat_template(
        [user_message(instruction, extra_input), {"role": "assistant", "content": output}],
        chat_template=template,
        tokenize=False,
    )
    # A chat template may close the assistant turn with its own markers: train on them too.
    response = full[len(prompt) :] if full.startswith(prompt) else output
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if not r_ids or r_ids[-1] != tokenizer.eos_token_id:
        r_ids.append(tokenizer.eos_token_id)
    if len(p_ids) + len(r_ids) > max_length:
        # Keep the response start (at least a quarter of the budget) and the prompt's end ("### Response:").
        keep_r = max(max_length - len(p_ids), min(len(r_ids), max_length // 4))
        r_ids = r_ids[:keep_r]
        p_ids = p_ids[len(p_ids) - (max_length - keep_r) :] if max_length > keep_r else []
    return {
        "input_ids": p_ids + r_ids,
        "labels": [IGNORE_INDEX] * len(p_ids) + r_ids,
        "length": len(p_ids) + len(r_ids),
    }


class InstructionSFT(CausalLM):
    """Instruction tuning: prompt (template or chat template) + response + EOS, loss on the response only."""

    name = "sft"
    schema = SFTConfig
    columns = SFTColumns
    predict_fields = ("instruction", "input")
    # `hfx predict messages=[...]` (or {"messages": [...]} records): a conversation through the saved chat template.
    takes_messages = True

    def _sequence_length(self, s: TaskSettings) -> tuple[int, str]:
        return s.max_length, "tokenizer.max_length"

    def validate_data(self, raw: Any, s: TaskSettings) -> None:
        c = s.columns
        required = {"columns.instruction": c.instruction, "columns.output": c.output}
        for split_name, split in raw.items():
            require_columns(split, required, split_name)
            for key, col in required.items():
                for i, value in enumerate(split[col]):
                    if value is None or (key == "columns.instruction" and not str(value).strip()):
                        raise HfxError(
                            f"dataset.{key}: row {i} of the {split_name} data has an empty '{col}' field"
                        )

    def training_texts(self, split: Any, s: TaskSettings) -> Iterator[str]:
        c = s.columns
        cols = [col for col in (c.instruction, c.input, c.output) if col in split.column_names]
        for col in cols:
            yield from (t for t in split[col] if t)

    def _inputs(self, split: Any, s: TaskSettings) -> list[str]:
        col = s.columns.input
        return [v or "" for v in split[col]] if col in split.column_names else [""] * len(split)

    def preprocess(
        self, split: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None, train: bool
    ) -> Any:
        c = s.columns
        template = prompt_chat_template(tokenizer, s.task)
        max_length = s.max_length
        has_input = c.input in split.column_names

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            inputs = batch[c.input] if has_input else [""] * len(batch[c.instruction])
            rows = [
                sft_example(tokenizer, template, ins, inp, out, max_length)
                for ins, inp, out in zip(batch[c.instruction], inputs, batch[c.output], strict=True)
            ]
            return {k: [r[k] for r in rows] for k in ("input_ids", "labels", "length")}

        return map_features(split, encode, train)

    def evaluate(
        self, trainer: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None
    ) -> Evaluation:
        # Saved with the model, so that `hfx predict` and pipeline() wrap inputs in the training prompt.
        tokenizer.chat_template = prompt_chat_template(tokenizer, s.task)
        return super().evaluate(trainer, features, raw, tokenizer, s, labels)

    def samples(
        self, model: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings
    ) -> list[dict[str, Any]]:
        """Instruction, input, reference output and the greedy response for the first eval records."""
        c = s.columns
        n = prediction_count(s.num_predictions, min(s.task.num_samples, len(raw)))
        if n <= 0:
            return []
        rows = raw.select(range(n))
        inputs = self._inputs(rows, s)
        template = tokenizer.chat_template
        max_prompt = max(1, s.max_length - 1)
        prompts = [
            tokenizer(prompt_text(tokenizer, template, ins, inp), add_special_tokens=False)["input_ids"][
                -max_prompt:
            ]
            for ins, inp in zip(rows[c.instruction], inputs, strict=True)
        ]
        generated = generate(model, prompts, tokenizer, s.task.max_new_tokens, trainer_device(model))
        return [
            {"instruction": ins, "input": inp, "reference": ref, "generated": g}
            for ins, inp, ref, g in zip(rows[c.instruction], inputs, rows[c.output], generated, strict=True)
        ]

    def pipeline_inputs(self, record: dict[str, Any]) -> Any:
        """A one-turn chat: the saved chat template turns it into the training prompt. A conversation
        ({"messages": [...]}) goes as it is: every turn through the template, the assistant's reply generated."""
        if "messages" in record:
            return check_messages(record["messages"])
        instruction = record.get("instruction") or record.get("text") or next(iter(record.values()))
        return [user_message(str(instruction), record.get("input"))]


TASKS.add(InstructionSFT.name, InstructionSFT())
