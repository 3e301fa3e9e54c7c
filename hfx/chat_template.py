"""Chat templates for instruction prompts: Alpaca-style str.format templates compiled into a Jinja chat template,
so that a saved tokenizer (and so `pipeline("text-generation")`) renders exactly the prompt a model trained on."""

from __future__ import annotations

import json
import string
from typing import Any

from omegaconf import DictConfig

from hfx.errors import HfxError

# The sft task's default templates (task.prompt_template, task.prompt_template_no_input).
ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def _template_pieces(template: str, key: str, required: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(literal, field) pieces of a str.format template; fields must be {instruction} or {input}."""
    pieces = []
    for literal, field_name, spec, conv in string.Formatter().parse(template):
        if field_name is not None and (field_name not in ("instruction", "input") or spec or conv):
            raise HfxError(f"task.{key}: unknown field {{{field_name}}}; use {{instruction}} and {{input}}")
        pieces.append((literal, field_name))
    missing = [f for f in required if f not in {p[1] for p in pieces}]
    if missing:
        raise HfxError(f"task.{key}: the template needs {' and '.join('{' + f + '}' for f in missing)}")
    return pieces


def _jinja(pieces: list[tuple[str, str | None]]) -> str:
    # Literals as Jinja string expressions: immune to Jinja syntax in the text and to trim_blocks.
    out = []
    for literal, field_name in pieces:
        if literal:
            out.append("{{ " + json.dumps(literal, ensure_ascii=False) + " }}")
        if field_name:
            out.append("{{ instruction }}" if field_name == "instruction" else "{{ extra_input }}")
    return "".join(out)


def chat_template_from(with_input: str, no_input: str) -> str:
    """A Jinja chat template that renders a user message with the Alpaca-style format strings.

    The user message carries `instruction` and `input` (falling back to `content`); the assistant message is
    the bare response, closed by EOS when more turns follow (as every trained response ends), so a conversation
    renders as its turns' training examples one after another. The prompt ends where the response starts, so
    add_generation_prompt adds nothing."""
    a = _jinja(_template_pieces(with_input, "prompt_template", ("instruction", "input")))
    b = _jinja(_template_pieces(no_input, "prompt_template_no_input", ("instruction",)))
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- set instruction = message['instruction'] if message['instruction'] is defined else message['content'] -%}"
        "{%- set extra_input = message['input'] if message['input'] is defined and message['input'] else '' -%}"
        "{%- if extra_input -%}" + a + "{%- else -%}" + b + "{%- endif -%}"
        "{%- elif message['role'] == 'assistant' -%}{{ message['content'] }}"
        "{%- if not loop.last and eos_token is defined -%}{{ eos_token }}{%- endif -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def prompt_chat_template(tokenizer: Any, tcfg: DictConfig) -> str:
    """The chat template SFT prompts go through: with task.use_chat_template auto, the tokenizer's own when it has
    one, otherwise the one compiled from task.prompt_template / prompt_template_no_input."""
    choice = str(tcfg.use_chat_template).lower()
    if choice not in ("auto", "true", "false"):
        raise HfxError(
            f"task.use_chat_template: expected auto, true or false, got '{tcfg.use_chat_template}'"
        )
    own = getattr(tokenizer, "chat_template", None)
    if choice == "true" and not own:
        raise HfxError("task.use_chat_template: true, but the tokenizer has no chat template")
    if own and choice != "false":
        return own
    return chat_template_from(tcfg.prompt_template, tcfg.prompt_template_no_input)


def user_message(instruction: str, extra_input: str | None) -> dict[str, str]:
    """The user turn: `content` for any chat template; `instruction` / `input` for the Alpaca-style one."""
    extra_input = extra_input or ""
    content = f"{instruction}\n\n{extra_input}" if extra_input else instruction
    return {"role": "user", "content": content, "instruction": instruction, "input": extra_input}


def prompt_text(tokenizer: Any, template: str, instruction: str, extra_input: str | None) -> str:
    """The prompt text for one instruction, up to where the response starts."""
    return tokenizer.apply_chat_template(
        [user_message(instruction, extra_input)],
        chat_template=template,
        add_generation_prompt=True,
        tokenize=False,
    )


# The roles of a conversation (`hfx predict messages=...`); the reply generated is the assistant's.
ROLES = ("system", "user", "assistant")
EXAMPLE = '[{"role": "user", "content": "hi"}]'


def check_messages(messages: Any) -> list[dict[str, str]]:
    """A conversation as `hfx predict` takes it: a list of {role, content}, roles system / user / assistant, the
    last turn the user's (the assistant's reply to it is generated)."""
    if not isinstance(messages, list) or not messages:
        raise HfxError(
            f"messages: expected a list of {{role, content}} objects, e.g. {EXAMPLE}; got "
            f"{json.dumps(messages, ensure_ascii=False)[:80]}"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise HfxError(
                f"messages[{i}]: expected an object with role and content, e.g. "
                f'{{"role": "user", "content": "hi"}}; got {json.dumps(message, ensure_ascii=False)[:80]}'
            )
        if message["role"] not in ROLES:
            raise HfxError(
                f"messages[{i}].role: expected system, user or assistant, got "
                f"{json.dumps(message['role'], ensure_ascii=False)}"
            )
        if not isinstance(message["content"], str):
            raise HfxError(f"messages[{i}].content: expected text, got {json.dumps(message['content'])[:80]}")
    if messages[-1]["role"] != "user":
        raise HfxError(
            f"messages: the last message must be the user's (the assistant's reply to it is generated); "
            f"got {messages[-1]['role']}"
        )
    return messages


def check_rendered(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt the tokenizer's chat template renders for a conversation; every message must be in it, in order
    (a template that drops a role, as the instruction template drops `system`, is refused rather than ignored)."""
    try:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as e:  # jinja2's TemplateError, or a tokenizer without a chat template (ValueError)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise HfxError(
            f"messages: the run's chat template cannot render them ({type(e).__name__}: {reason})"
        ) from e
    at = 0
    for i, message in enumerate(messages):
        found = prompt.find(message["content"].strip(), at)
        if found < 0:
            raise HfxError(
                f"messages[{i}]: the run's chat template leaves this {message['role']} message out of "
                f"the prompt; drop it, or train with a chat template that renders {message['role']} turns"
            )
        at = found + len(message["content"].strip())
    return prompt
