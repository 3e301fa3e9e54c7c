"""Causal language modelling: `causal_lm` (pre-training / continued pre-training on raw text, packed into blocks)
and `sft` (instruction tuning on instruction / input / output records, loss on the response tokens only).

Both report perplexity from a token-weighted evaluation loss (the Trainer's eval_loss is a mean over batches)
and save a few greedy generations as predictions.

Choices worth knowing:
- `causal_lm` packs rows in their file order (a seeded `dataset.validation_split` shuffles rows; for the text
  builder, one row per line, that would scramble the text). `task.rows: lines` joins rows with "\\n" (line
  breaks survive, no EOS inside a text file); `task.rows: documents` appends EOS after every row. The tail that
  does not fill a block is dropped.
- `sft` builds every prompt through a chat template: the tokenizer's own when it has one (`use_chat_template:
  auto`), otherwise the Alpaca-style templates of the task config, which are installed as the tokenizer's
  chat template and saved with the model. So `pipeline("text-generation", model=<run>/model)` given
  `[{"role": "user", "content": ..., "instruction": ..., "input": ...}]` (what `pipeline_inputs` builds) sees
  exactly the training prompt. Prompt and response are tokenized separately, so the prompt a generation sees
  is token for token the one trained on; EOS ends every response.
"""

from __future__ import annotations

import json
import math
import string
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig

from hfx.data import map_features, require_columns
from hfx.errors import HfxError
from hfx.tasks.base import TASKS, Evaluation, Task, TaskConfig

IGNORE = -100
# Model types that have no causal LM (or only a masked-LM head used as a decoder, e.g. BertLMHeadModel).
ENCODER_ONLY = {
    "bert",
    "roberta",
    "distilbert",
    "albert",
    "electra",
    "deberta",
    "deberta-v2",
    "xlm-roberta",
    "mpnet",
    "camembert",
    "modernbert",
    "ernie",
}

ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass
class CausalLMConfig(TaskConfig):
    name: str = "causal_lm"
    # Tokens per training block; null = tokenizer.max_length.
    block_size: Optional[int] = None  # noqa: UP045 (OmegaConf 2.3 reads Optional, not int | None)
    # lines: rows are lines of one text, joined with "\n"; documents: each row is a document, EOS after each.
    rows: str = "lines"
    # Sample generations written to predictions.jsonl (greedy, no_repeat_ngram_size 3).
    num_samples: int = 8
    max_new_tokens: int = 50
    # Tokens of an eval block given as the prompt of a sample (at most half a block).
    prompt_tokens: int = 32


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


# ----------------------------------------------------------------------------------------------- pre-training


def file_order(split: Any) -> Any:
    """The rows in their original file order (undoes the shuffle of a carved validation split)."""
    indices = getattr(split, "_indices", None)
    if indices is None:
        return split
    import numpy as np

    return split.select(np.argsort(indices.column(0).to_numpy(), kind="stable"))


def pack(sequences: Iterable[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate token sequences and cut them into blocks of exactly block_size; the remainder is dropped."""
    import numpy as np

    flat = np.fromiter((t for seq in sequences for t in seq), dtype=np.int64)
    n = len(flat) // block_size
    return flat[: n * block_size].reshape(n, block_size).tolist()


def row_token_ids(texts: list[str], tokenizer: Any, rows: str) -> list[list[int]]:
    """Token ids per row: a line keeps its newline; a document ends with EOS."""
    if rows == "lines":
        return tokenizer([t + "\n" for t in texts], add_special_tokens=False)["input_ids"]
    return [ids + [tokenizer.eos_token_id] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


# ---------------------------------------------------------------------------------------------------- SFT


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
    the bare response. The prompt ends where the response starts, so add_generation_prompt adds nothing."""
    a = _jinja(_template_pieces(with_input, "prompt_template", ("instruction", "input")))
    b = _jinja(_template_pieces(no_input, "prompt_template_no_input", ("instruction",)))
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- set instruction = message['instruction'] if message['instruction'] is defined else message['content'] -%}"
        "{%- set extra_input = message['input'] if message['input'] is defined and message['input'] else '' -%}"
        "{%- if extra_input -%}" + a + "{%- else -%}" + b + "{%- endif -%}"
        "{%- elif message['role'] == 'assistant' -%}{{ message['content'] }}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def prompt_chat_template(tokenizer: Any, tcfg: DictConfig) -> str:
    """The chat template SFT prompts go through (see the module docstring)."""
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
    return tokenizer.apply_chat_template(
        [user_message(instruction, extra_input)],
        chat_template=template,
        add_generation_prompt=True,
        tokenize=False,
    )


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
        "labels": [IGNORE] * len(p_ids) + r_ids,
        "length": len(p_ids) + len(r_ids),
    }


@dataclass
class PadToLongest:
    """Right-pads input_ids with pad_id and labels with -100; the attention mask hides the padding (pad may be EOS)."""

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * (width - n))
            labels.append(list(f["labels"]) + [IGNORE] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(labels),
        }


# -------------------------------------------------------------------------------------------- evaluation


def token_weighted_loss(
    model: Any, features: Any, collate: Any, batch_size: int, device: Any
) -> tuple[float, int]:
    """(mean loss per target token, number of target tokens) over all batches; no logits are kept.

    The model's loss is a mean over the (shifted) targets of one batch: multiplied back by their count."""
    import torch
    from torch.utils.data import DataLoader

    keep = [c for c in features.column_names if c in ("input_ids", "labels")]
    loader = DataLoader(features.select_columns(keep), batch_size=batch_size, collate_fn=collate)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            if n == 0:
                continue
            total += float(model(**batch).loss) * n
            count += n
    model.train(was_training)
    if count == 0:
        raise HfxError("dataset: the evaluation split has no target tokens")
    return total / count, count


def generate(
    model: Any,
    prompts: list[list[int]],
    tokenizer: Any,
    max_new_tokens: int,
    device: Any,
    batch_size: int = 8,
) -> list[str]:
    """Greedy continuations of token-id prompts: left-padded batches, cut at the first EOS (pad may equal EOS)."""
    import torch

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    texts = []
    was_training = model.training
    model.eval()
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                no_repeat_ngram_size=3,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        for row in out[:, width:].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
    model.train(was_training)
    return texts


def target_tokens(features: Any) -> Iterator[int]:
    """The tokens a causal LM is scored on: labels shifted by one, without -100."""
    for labels in features["labels"]:
        yield from (t for t in labels[1:] if t != IGNORE)


def unigram_perplexity(train_targets: Iterable[int], eval_targets: Iterable[int], vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on train tokens, on the eval targets: the baseline."""
    counts = Counter(train_targets)
    total = sum(counts.values())
    nll, n = 0.0, 0
    for t in eval_targets:
        nll -= math.log((counts[t] + 1) / (total + vocab_size))
        n += 1
    return math.exp(nll / n)


def _num_samples(tcfg: DictConfig, cfg: DictConfig, available: int) -> int:
    n = min(tcfg.num_samples, available)
    return n if cfg.num_predictions < 0 else min(n, cfg.num_predictions)


def _set_generation_defaults(model: Any, tokenizer: Any, max_new_tokens: int) -> None:
    """Saved with the model: a plain pipeline() on the run's model generates max_new_tokens, padding with pad."""
    gen = getattr(model, "generation_config", None)
    if gen is None:
        return
    gen.max_new_tokens = max_new_tokens
    if gen.pad_token_id is None:
        gen.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )


# -------------------------------------------------------------------------------------------------- tasks


class CausalLM(Task):
    """Pre-training / continued pre-training: raw text packed into fixed blocks, labels = input_ids."""

    name = "causal_lm"
    pipeline_task = "text-generation"
    schema = CausalLMConfig
    predict_fields = ("text",)
    peft_task_type = "CAUSAL_LM"
    head_modules = ()  # lm_head is pretrained or tied to the embeddings

    def auto_model_class(self, cfg: DictConfig) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def _check_architecture(self, model_type: str | None) -> None:
        if model_type in ENCODER_ONLY:
            raise HfxError(
                f"task {self.name} needs a decoder model (llama, gpt2, ...); "
                f"model type {model_type} is encoder-only"
            )

    def check_model(self, model_config: Any, cfg: DictConfig) -> None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        model_type = model_config.model_type
        self._check_architecture(model_type)
        if getattr(model_config, "is_encoder_decoder", False):
            raise HfxError(
                f"task {self.name} needs a decoder model (llama, gpt2, ...); model type {model_type} "
                "is encoder-decoder (use a seq2seq task)"
            )
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise HfxError(
                f"task {self.name} needs a decoder model (llama, gpt2, ...); "
                f"model type {model_type} has no causal LM"
            )
        positions = getattr(model_config, "max_position_embeddings", None) or getattr(
            model_config, "n_positions", None
        )
        length, key = self._sequence_length(cfg)
        if positions and length > positions:
            raise HfxError(f"{key}: {length} tokens exceed the model's {positions} positions")

    def _sequence_length(self, cfg: DictConfig) -> tuple[int, str]:
        if cfg.task.block_size is None:
            return cfg.tokenizer.max_length, "tokenizer.max_length"
        return cfg.task.block_size, "task.block_size"

    def validate_data(self, raw: Any, cfg: DictConfig) -> None:
        # Fail before tokenizing where the config already says enough.
        self._check_architecture(cfg.model.architecture)
        if cfg.task.rows not in ("lines", "documents"):
            raise HfxError(f"task.rows: expected lines or documents, got '{cfg.task.rows}'")
        for split_name, split in raw.items():
            require_columns(split, {"text_column": cfg.dataset.text_column}, split_name)

    def training_texts(self, split: Any, cfg: DictConfig) -> Iterator[str]:
        yield from (t for t in split[cfg.dataset.text_column] if t)

    def preprocess(
        self, split: Any, tokenizer: Any, cfg: DictConfig, labels: list[str] | None, train: bool
    ) -> Any:
        import datasets

        block_size, key = self._sequence_length(cfg)
        col, rows = cfg.dataset.text_column, cfg.task.rows
        split = file_order(split)
        ids = split.map(
            lambda b: {"ids": row_token_ids([t or "" for t in b[col]], tokenizer, rows)},
            batched=True,
            remove_columns=split.column_names,
            keep_in_memory=True,
            desc=f"tokenize {'train' if train else 'eval'}",
        )
        blocks = pack(ids["ids"], block_size)
        if not blocks:
            n = sum(len(x) for x in ids["ids"])
            raise HfxError(
                f"{key}: the {'train' if train else 'eval'} split has {n} tokens, "
                f"less than one block of {block_size}"
            )
        return datasets.Dataset.from_dict(
            {"input_ids": blocks, "labels": blocks, "length": [block_size] * len(blocks)}
        )

    def collator(self, tokenizer: Any, model: Any, cfg: DictConfig) -> Any:
        return PadToLongest(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )

    def evaluate(
        self, trainer: Any, features: Any, raw: Any, tokenizer: Any, cfg: DictConfig, labels: list[str] | None
    ) -> Evaluation:
        model = trainer.model
        # Under mixed precision, accelerate has already wrapped model.forward in autocast.
        loss, n = token_weighted_loss(
            model,
            features,
            self.collator(tokenizer, model, cfg),
            trainer.args.per_device_eval_batch_size,
            trainer_device(model),
        )
        metrics = {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 700.0)), "eval_target_tokens": n}
        _set_generation_defaults(model, tokenizer, cfg.task.max_new_tokens)
        return Evaluation(metrics=metrics, predictions=self.samples(model, features, raw, tokenizer, cfg))

    def samples(
        self, model: Any, features: Any, raw: Any, tokenizer: Any, cfg: DictConfig
    ) -> list[dict[str, Any]]:
        """Prompt = the first tokens of an eval block; reference = the block's next tokens; generated = greedy."""
        n = _num_samples(cfg.task, cfg, len(features))
        if n <= 0:
            return []
        blocks = features.select(range(n))["input_ids"]
        p = max(1, min(cfg.task.prompt_tokens, len(blocks[0]) // 2))
        generated = generate(
            model, [b[:p] for b in blocks], tokenizer, cfg.task.max_new_tokens, trainer_device(model)
        )
        return [
            {
                "prompt": tokenizer.decode(b[:p]),
                "reference": tokenizer.decode(b[p : p + cfg.task.max_new_tokens]),
                "generated": g,
            }
            for b, g in zip(blocks, generated, strict=True)
        ]

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {
            "max_new_tokens": 50,
            "do_sample": False,
            "no_repeat_ngram_size": 3,
            "return_full_text": False,
        }

    def pipeline_inputs(self, record: dict[str, Any]) -> Any:
        return record["text"] if "text" in record else next(iter(record.values()))


def trainer_device(model: Any) -> Any:
    return next(model.parameters()).device


class InstructionSFT(CausalLM):
    """Instruction tuning: prompt (template or chat template) + response + EOS, loss on the response only."""

    name = "sft"
    schema = SFTConfig
    predict_fields = ("instruction", "input")

    def _sequence_length(self, cfg: DictConfig) -> tuple[int, str]:
        return cfg.tokenizer.max_length, "tokenizer.max_length"

    def validate_data(self, raw: Any, cfg: DictConfig) -> None:
        self._check_architecture(cfg.model.architecture)
        d = cfg.dataset
        for split_name, split in raw.items():
            require_columns(
                split,
                {"instruction_column": d.instruction_column, "output_column": d.output_column},
                split_name,
            )
            for key, col in (
                ("instruction_column", d.instruction_column),
                ("output_column", d.output_column),
            ):
                for i, value in enumerate(split[col]):
                    if value is None or (key == "instruction_column" and not str(value).strip()):
                        raise HfxError(
                            f"dataset.{key}: row {i} of the {split_name} data has an empty '{col}' field"
                        )

    def training_texts(self, split: Any, cfg: DictConfig) -> Iterator[str]:
        d = cfg.dataset
        cols = [c for c in (d.instruction_column, d.input_column, d.output_column) if c in split.column_names]
        for col in cols:
            yield from (t for t in split[col] if t)

    def _inputs(self, split: Any, cfg: DictConfig) -> list[str]:
        col = cfg.dataset.input_column
        return [v or "" for v in split[col]] if col in split.column_names else [""] * len(split)

    def preprocess(
        self, split: Any, tokenizer: Any, cfg: DictConfig, labels: list[str] | None, train: bool
    ) -> Any:
        d = cfg.dataset
        template = prompt_chat_template(tokenizer, cfg.task)
        max_length = cfg.tokenizer.max_length
        has_input = d.input_column in split.column_names

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            inputs = batch[d.input_column] if has_input else [""] * len(batch[d.instruction_column])
            rows = [
                sft_example(tokenizer, template, ins, inp, out, max_length)
                for ins, inp, out in zip(
                    batch[d.instruction_column], inputs, batch[d.output_column], strict=True
                )
            ]
            return {k: [r[k] for r in rows] for k in ("input_ids", "labels", "length")}

        return map_features(split, encode, train)

    def evaluate(
        self, trainer: Any, features: Any, raw: Any, tokenizer: Any, cfg: DictConfig, labels: list[str] | None
    ) -> Evaluation:
        # Saved with the model, so that `hfx predict` and pipeline() wrap inputs in the training prompt.
        tokenizer.chat_template = prompt_chat_template(tokenizer, cfg.task)
        return super().evaluate(trainer, features, raw, tokenizer, cfg, labels)

    def samples(
        self, model: Any, features: Any, raw: Any, tokenizer: Any, cfg: DictConfig
    ) -> list[dict[str, Any]]:
        """Instruction, input, reference output and the greedy response for the first eval records."""
        d = cfg.dataset
        n = _num_samples(cfg.task, cfg, len(raw))
        if n <= 0:
            return []
        rows = raw.select(range(n))
        inputs = self._inputs(rows, cfg)
        template = tokenizer.chat_template
        max_prompt = max(1, cfg.tokenizer.max_length - 1)
        prompts = [
            tokenizer(prompt_text(tokenizer, template, ins, inp), add_special_tokens=False)["input_ids"][
                -max_prompt:
            ]
            for ins, inp in zip(rows[d.instruction_column], inputs, strict=True)
        ]
        generated = generate(model, prompts, tokenizer, cfg.task.max_new_tokens, trainer_device(model))
        return [
            {"instruction": ins, "input": inp, "reference": ref, "generated": g}
            for ins, inp, ref, g in zip(
                rows[d.instruction_column], inputs, rows[d.output_column], generated, strict=True
            )
        ]

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {
            "max_new_tokens": 64,
            "do_sample": False,
            "no_repeat_ngram_size": 3,
            "return_full_text": False,
        }

    def pipeline_inputs(self, record: dict[str, Any]) -> Any:
        """A one-turn chat: the saved chat template turns it into the training prompt."""
        instruction = record.get("instruction") or record.get("text") or next(iter(record.values()))
        return [user_message(str(instruction), record.get("input"))]


TASKS.add(CausalLM.name, CausalLM())
TASKS.add(InstructionSFT.name, InstructionSFT())
