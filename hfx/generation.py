"""Decoder-model evaluation: a token-weighted loss over a whole split (the Trainer's eval_loss is a mean over
batches) and greedy sample generations, plus the generation defaults saved with the model."""

from __future__ import annotations

from typing import Any

from hfx.errors import HfxError
from hfx.labels import IGNORE_INDEX


def pad_or_eos(tokenizer: Any) -> int:
    """The id to pad with: the pad token's, else EOS (decoder tokenizers often have no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def trainer_device(model: Any) -> Any:
    return next(model.parameters()).device


def token_weighted_loss(
    model: Any, features: Any, collate: Any, batch_size: int, device: Any, split: bool = True
) -> tuple[float, int]:
    """(mean loss per target token, number of target tokens) over all batches; no logits are kept.

    The model's loss is a mean over the (shifted) targets of one batch: multiplied back by their count. Under
    several processes each scores a contiguous share of the rows and the sums are added up across them: every rank
    gets the 1-process result (up to float rounding) for a share of the work. split=False where every forward pass
    needs all ranks (FSDP, DeepSpeed: sharded weights are gathered in it): each rank then scores every row."""
    import torch
    from torch.utils.data import DataLoader

    keep = [c for c in features.column_names if c in ("input_ids", "labels")]
    from hfx.distributed import process_group

    ranks, rank = process_group() if split else (1, 0)
    rows = features.select_columns(keep)
    if ranks > 1:
        rows = rows.shard(num_shards=ranks, index=rank, contiguous=True)
    loader = DataLoader(rows, batch_size=batch_size, collate_fn=collate)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            if n == 0:
                continue
            total += float(model(**batch).loss) * n
            count += n
    model.train(was_training)
    if ranks > 1:
        sums = torch.tensor([total, count], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(sums)
        total, count = float(sums[0]), int(sums[1])
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
    pad = pad_or_eos(tokenizer)
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


def set_generation_defaults(model: Any, tokenizer: Any, max_new_tokens: int) -> None:
    """Saved with the model: a plain pipeline() on the run's model generates max_new_tokens, padding with pad."""
    gen = getattr(model, "generation_config", None)
    if gen is None:
        return
    gen.max_new_tokens = max_new_tokens
    if gen.pad_token_id is None:
        gen.pad_token_id = pad_or_eos(tokenizer)
