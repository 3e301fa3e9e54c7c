"""Causal language modelling (`causal_lm`): pre-training / continued pre-training on raw text packed into blocks.

It reports perplexity from a token-weighted evaluation loss (the Trainer's eval_loss is a mean over batches) and
saves a few greedy generations as predictions; `sft` (hfx/tasks/sft.py) builds on it.

Rows are packed in their file order (a seeded `dataset.validation_split` shuffles rows; for the text builder, one
row per line, that would scramble the text). `task.rows: lines` joins rows with "\\n" (line breaks survive, no EOS
inside a text file); `task.rows: documents` appends EOS after every row. The tail that does not fill a block is
dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from hfx.architectures import DECODER, ENCODER_DECODER, Architecture, architecture
from hfx.data import require_columns
from hfx.distributed import process_group
from hfx.errors import HfxError
from hfx.generation import generate, pad_or_eos, set_generation_defaults, token_weighted_loss, trainer_device
from hfx.labels import IGNORE_INDEX
from hfx.streaming import is_stream
from hfx.tasks.base import TASKS, Evaluation, Task, TaskConfig, TaskSettings, prediction_count


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
class CausalLMColumns:
    text: str = "text"


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


class StreamPacker:
    """`pack` over a stream, one batch of rows at a time: each batch's tokens that do not fill a block wait for the
    next batch, so the blocks are those `pack` cuts from the same rows. Index 0 (the stream read again: a new epoch,
    a resumed run) starts empty."""

    def __init__(self, block_size: int) -> None:
        self.block_size, self.carry = block_size, []

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        if indices and indices[0] == 0:
            self.carry = []
        flat = self.carry + [t for seq in batch["ids"] for t in seq]
        n = len(flat) // self.block_size
        self.carry = flat[n * self.block_size:]
        blocks = [flat[i * self.block_size: (i + 1) * self.block_size] for i in range(n)]
        return {"input_ids": blocks, "labels": blocks, "length": [self.block_size] * n}


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
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(labels),
        }


class CausalLM(Task):
    """Pre-training / continued pre-training: raw text packed into fixed blocks, labels = input_ids."""

    name = "causal_lm"
    pipeline_task = "text-generation"
    schema = CausalLMConfig
    columns = CausalLMColumns
    predict_fields = ("text",)
    peft_task_type = "CAUSAL_LM"
    head_modules = ()  # lm_head is pretrained or tied to the embeddings
    streaming = True  # a stream is packed as it is read (StreamPacker)

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def check_architecture(self, record: Architecture) -> None:
        if record.shape == DECODER:
            return
        shape = "encoder-decoder (use a seq2seq task)" if record.shape == ENCODER_DECODER else "encoder-only"
        raise HfxError(
            f"task {self.name} needs a decoder model (llama, gpt2, ...); "
            f"model type {record.model_type} is {shape}"
        )

    def check_model(self, model_config: Any, s: TaskSettings) -> None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        model_type = model_config.model_type
        record = architecture(model_type)
        if record is not None:
            self.check_architecture(record)
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
        length, key = self._sequence_length(s)
        if positions and length > positions:
            raise HfxError(f"{key}: {length} tokens exceed the model's {positions} positions")

    def _sequence_length(self, s: TaskSettings) -> tuple[int, str]:
        if s.task.block_size is None:
            return s.max_length, "tokenizer.max_length"
        return s.task.block_size, "task.block_size"

    def validate_data(self, raw: Any, s: TaskSettings) -> None:
        if s.task.rows not in ("lines", "documents"):
            raise HfxError(f"task.rows: expected lines or documents, got '{s.task.rows}'")
        for split_name, split in raw.items():
            require_columns(split, {"columns.text": s.columns.text}, split_name)

    def training_texts(self, split: Any, s: TaskSettings) -> Iterator[str]:
        yield from (t for t in split[s.columns.text] if t)

    def preprocess(
        self, split: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None, train: bool
    ) -> Any:
        import datasets

        block_size, key = self._sequence_length(s)
        col, rows = s.columns.text, s.task.rows

        def encode(b: dict[str, list[Any]]) -> dict[str, Any]:
            return {"ids": row_token_ids([t or "" for t in b[col]], tokenizer, rows)}

        if is_stream(split):  # dataset.streaming: packed lazily, in file order
            ids = split.map(encode, batched=True, remove_columns=split.column_names)
            return ids.map(StreamPacker(block_size), batched=True, with_indices=True, remove_columns=["ids"])
        split = file_order(split)
        ids = split.map(
            encode,
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

    def collator(self, tokenizer: Any, model: Any, s: TaskSettings) -> Any:
        return PadToLongest(pad_or_eos(tokenizer))

    def evaluate(
        self, trainer: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None
    ) -> Evaluation:
        model = trainer.model
        # Under DDP each rank scores a share of the rows; FSDP / DeepSpeed gather weights inside every forward pass,
        # so there every rank must run the same passes.
        split = not (getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))
        # Under mixed precision, accelerate has already wrapped model.forward in autocast.
        loss, n = token_weighted_loss(
            model,
            features,
            self.collator(tokenizer, model, s),
            trainer.args.per_device_eval_batch_size,
            trainer_device(model),
            split=split,
        )
        metrics = {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 700.0)), "eval_target_tokens": n}
        set_generation_defaults(model, tokenizer, s.task.max_new_tokens)
        # Only rank 0 writes predictions.jsonl: under DDP the other ranks skip generating the same samples.
        samples = self.samples(model, features, raw, tokenizer, s) if not split or process_group()[1] == 0 else []
        return Evaluation(metrics=metrics, predictions=samples)

    def samples(
        self, model: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings
    ) -> list[dict[str, Any]]:
        """Prompt = the first tokens of an eval block; reference = the block's next tokens; generated = greedy."""
        n = prediction_count(s.num_predictions, min(s.task.num_samples, len(features)))
        if n <= 0:
            return []
        blocks = features.select(range(n))["input_ids"]
        p = max(1, min(s.task.prompt_tokens, len(blocks[0]) // 2))
        generated = generate(
            model, [b[:p] for b in blocks], tokenizer, s.task.max_new_tokens, trainer_device(model)
        )
        return [
            {
                "prompt": tokenizer.decode(b[:p]),
                "reference": tokenizer.decode(b[p : p + s.task.max_new_tokens]),
                "generated": g,
            }
            for b, g in zip(blocks, generated, strict=True)
        ]

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {
            # The schema's default task.max_new_tokens (a run's own value is in its generation_config).
            "max_new_tokens": self.schema.max_new_tokens,
            "do_sample": False,
            "no_repeat_ngram_size": 3,
            "return_full_text": False,
        }


TASKS.add(CausalLM.name, CausalLM())
