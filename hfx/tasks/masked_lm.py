"""Masked language modelling (BERT-style): random masking for training, a fixed seeded masking for evaluation, and
perplexity weighted by masked tokens (hfx.metrics.perplexity)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from hfx.architectures import ENCODER, Architecture
from hfx.data import map_features, require_columns
from hfx.errors import HfxError
from hfx.labels import IGNORE_INDEX
from hfx.metrics.perplexity import masked_lm_metrics, masked_nll, masked_token_scores
from hfx.tasks.base import TASKS, Evaluation, Task, TaskConfig, TaskSettings, prediction_count


@dataclass
class MaskedLMConfig(TaskConfig):
    name: str = "masked_lm"
    # Share of (non-special) tokens selected for prediction; of those 80% become [MASK], 10% a random token.
    mlm_probability: float = 0.15
    # null: one example per text, truncated to tokenizer.max_length; N: texts concatenated and cut into N-token blocks.
    block_size: Optional[int] = None  # noqa: UP045 (OmegaConf 2.3 reads Optional, not int | None)
    # The evaluation set is masked once with this seed, so eval loss / perplexity repeat exactly between runs.
    eval_mask_seed: int = 0


@dataclass
class MaskedLMColumns:
    text: str = "text"


def mask_tokens(
    input_ids: Sequence[int],
    special: Sequence[int],
    rng: Any,
    mlm_probability: float,
    mask_id: int,
    vocab_size: int,
) -> tuple[list[int], list[int]]:
    """One example masked as DataCollatorForLanguageModeling does (80% [MASK], 10% random, 10% kept), with `rng`
    (a numpy Generator). Returns (masked input ids, labels: the original id where selected, -100 elsewhere)."""
    import numpy as np

    ids = np.asarray(input_ids, dtype=np.int64)
    selected = (rng.random(len(ids)) < mlm_probability) & (np.asarray(special, dtype=bool) == 0)
    labels = np.where(selected, ids, IGNORE_INDEX)
    choice = rng.random(len(ids))
    masked = ids.copy()
    masked[selected & (choice < 0.8)] = mask_id
    randomised = selected & (choice >= 0.8) & (choice < 0.9)
    masked[randomised] = rng.integers(0, vocab_size, size=int(randomised.sum()))
    return masked.tolist(), labels.tolist()


def group_blocks(input_ids: list[list[int]], special: list[list[int]], block_size: int) -> tuple[list, list]:
    """Concatenate tokenized texts and cut them into blocks of block_size (the last, shorter block is kept)."""
    flat_ids = [t for ids in input_ids for t in ids]
    flat_special = [s for mask in special for s in mask]
    starts = range(0, len(flat_ids), block_size)
    return (
        [flat_ids[i : i + block_size] for i in starts],
        [flat_special[i : i + block_size] for i in starts],
    )


_NO_MLM_HEAD = (
    "model: masked_lm needs an encoder with a masked-LM head (bert, roberta, distilbert, ...); "
    "'{model_type}' has none"
)


class MaskedLMCollator:
    """Training batches: random masking (DataCollatorForLanguageModeling). Evaluation batches arrive pre-masked
    (they carry `labels`) and are only padded, labels with -100."""

    def __init__(self, tokenizer: Any, mlm_probability: float) -> None:
        from transformers import DataCollatorForLanguageModeling, DataCollatorForTokenClassification

        self.mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
        self.premasked = DataCollatorForTokenClassification(tokenizer)

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        if "labels" in features[0]:
            return self.premasked(features)
        return self.mlm(features)


class MaskedLM(Task):
    name = "masked_lm"
    pipeline_task = "fill-mask"
    schema = MaskedLMConfig
    columns = MaskedLMColumns
    predict_fields = ("text",)
    # A new MLM head (the packaged MiniLM has none) must train in full under LoRA: bert `cls`, roberta
    # `lm_head`, distilbert `vocab_*`.
    head_modules = ("cls", "lm_head", "vocab_transform", "vocab_layer_norm", "vocab_projector")
    # A stream is tokenized (and cut into blocks, 1000 rows at a time as the materialised map does) as it is read.
    streaming = True
    peft_task_type = None

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM

    def check_architecture(self, record: Architecture) -> None:
        if record.shape != ENCODER:
            raise HfxError(_NO_MLM_HEAD.format(model_type=record.model_type))

    def check_model(self, model_config: Any, s: TaskSettings) -> None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

        if model_config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            raise HfxError(_NO_MLM_HEAD.format(model_type=model_config.model_type))

    def validate_data(self, raw: Any, s: TaskSettings) -> None:
        t = s.task
        if not 0 < t.mlm_probability < 1:
            raise HfxError(f"task.mlm_probability: expected a probability in (0, 1), got {t.mlm_probability}")
        if t.block_size is not None and not 0 < t.block_size <= s.max_length:
            raise HfxError(
                f"task.block_size: expected 1..tokenizer.max_length ({s.max_length}), got "
                f"{t.block_size} (raise tokenizer.max_length up to the model's positions for longer blocks)"
            )
        col = s.columns.text
        for split_name, split in raw.items():
            require_columns(split, {"columns.text": col}, split_name)
            for i, text in enumerate(split[col]):
                if not isinstance(text, str):
                    raise HfxError(
                        f"dataset.columns.text: column '{col}' must hold text; row {i} of the "
                        f"{split_name} data is {type(text).__name__}"
                    )

    def training_texts(self, split: Any, s: TaskSettings) -> Iterator[str]:
        yield from split[s.columns.text]

    def preprocess(
        self, split: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None, train: bool
    ) -> Any:
        import numpy as np

        if tokenizer.mask_token_id is None:
            raise HfxError("tokenizer: masked_lm needs a tokenizer with a mask token; this one has none")
        t = s.task
        col = s.columns.text
        max_length = s.max_length
        vocab_size = len(tokenizer)

        def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
            if t.block_size:
                enc = tokenizer(batch[col], return_special_tokens_mask=True, verbose=False)
                ids, special = group_blocks(enc["input_ids"], enc["special_tokens_mask"], t.block_size)
            else:
                enc = tokenizer(
                    batch[col], truncation=True, max_length=max_length, return_special_tokens_mask=True
                )
                ids, special = enc["input_ids"], enc["special_tokens_mask"]
            return {
                "input_ids": ids,
                "special_tokens_mask": special,
                "attention_mask": [[1] * len(x) for x in ids],
                "length": [len(x) for x in ids],
            }

        def premask(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
            # Seeded per row (not per batch or process), so the masking is the same however the map runs.
            rows = [
                mask_tokens(
                    ids,
                    special,
                    np.random.default_rng([t.eval_mask_seed, index]),
                    t.mlm_probability,
                    tokenizer.mask_token_id,
                    vocab_size,
                )
                for ids, special, index in zip(
                    batch["input_ids"], batch["special_tokens_mask"], indices, strict=True
                )
            ]
            return {"input_ids": [r[0] for r in rows], "labels": [r[1] for r in rows]}

        out = map_features(split, encode, train)
        if not train:
            out = out.map(
                premask, batched=True, with_indices=True, keep_in_memory=True, desc="mask eval (seeded)"
            )
        # Training batches are masked by the collator, which finds special tokens itself.
        return out.remove_columns("special_tokens_mask")

    def collator(self, tokenizer: Any, model: Any, s: TaskSettings) -> Any:
        return MaskedLMCollator(tokenizer, s.task.mlm_probability)

    def trainer_kwargs(self, tokenizer: Any, s: TaskSettings, labels: list[str] | None) -> dict[str, Any]:
        return {"compute_metrics": masked_lm_metrics, "preprocess_logits_for_metrics": masked_token_scores}

    def evaluate(
        self, trainer: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None
    ) -> Evaluation:
        out = trainer.predict(features, metric_key_prefix="eval")
        preds, nll = out.predictions
        total, count = masked_nll(nll, out.label_ids)
        if count == 0:
            raise HfxError(
                "task.mlm_probability: no evaluation token was masked (too few or too short texts)"
            )
        metrics = dict(out.metrics)
        # The Trainer's eval_loss averages batch means; this one averages over masked tokens.
        metrics["eval_loss"] = total / count
        metrics["eval_perplexity"] = math.exp(total / count)
        n = prediction_count(s.num_predictions, len(features))
        texts = raw[s.columns.text] if not s.task.block_size else None
        rows = []
        for i in range(n):
            ids, ref = features[i]["input_ids"], features[i]["labels"]
            positions = [j for j, lab in enumerate(ref) if lab != IGNORE_INDEX]
            row = {"input": texts[i]} if texts is not None else {"block": i}
            row.update(
                masked_input=tokenizer.decode(ids),
                positions=positions,
                original_tokens=tokenizer.convert_ids_to_tokens([ref[j] for j in positions]),
                predicted_tokens=tokenizer.convert_ids_to_tokens([int(preds[i][j]) for j in positions]),
            )
            rows.append(row)
        return Evaluation(metrics=metrics, predictions=rows)


TASKS.add(MaskedLM.name, MaskedLM())
