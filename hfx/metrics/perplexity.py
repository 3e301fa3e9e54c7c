"""Perplexity pieces: the causal-LM target tokens and their unigram baseline, and the masked-LM scores
(token-weighted negative log-likelihood and accuracy at the masked positions)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from hfx.labels import IGNORE_INDEX

# ------------------------------------------------------------------------------------------------ causal LM


def target_tokens(features: Any) -> Iterator[int]:
    """The tokens a causal LM is scored on: labels shifted by one, without -100."""
    for labels in features["labels"]:
        yield from (t for t in labels[1:] if t != IGNORE_INDEX)


def unigram_perplexity(train_targets: Iterable[int], eval_targets: Iterable[int], vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on train tokens, on the eval targets: the baseline."""
    counts = Counter(train_targets)
    total = sum(counts.values())
    nll, n = 0.0, 0
    for t in eval_targets:
        nll -= math.log((counts[t] + 1) / (total + vocab_size))
        n += 1
    return math.exp(nll / n)


# ------------------------------------------------------------------------------------------------ masked LM


def masked_token_scores(logits: Any, labels: Any) -> Any:
    """Per batch, keep only what the metrics need at masked positions: the top prediction and the token's
    negative log-likelihood (-100 / 0 elsewhere). The full vocabulary logits are never accumulated."""
    import torch
    import torch.nn.functional as F

    if isinstance(logits, tuple):
        logits = logits[0]
    mask = labels != IGNORE_INDEX
    selected = logits[mask].float()
    preds = torch.full(labels.shape, IGNORE_INDEX, dtype=torch.long, device=labels.device)
    nll = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    preds[mask] = selected.argmax(dim=-1)
    nll[mask] = F.cross_entropy(selected, labels[mask], reduction="none")
    return preds, nll


def masked_nll(nll: Any, label_ids: Any) -> tuple[float, int]:
    """(summed NLL, number of masked tokens) over the whole evaluation set."""
    mask = label_ids != IGNORE_INDEX
    return float(nll[mask].astype("float64").sum()), int(mask.sum())


def masked_lm_metrics(eval_pred: Any) -> dict[str, float]:
    """compute_metrics over masked_token_scores' output: token-weighted perplexity and accuracy."""
    preds, nll = eval_pred.predictions
    labels = eval_pred.label_ids
    total, count = masked_nll(nll, labels)
    mask = labels != IGNORE_INDEX
    if count == 0:
        return {"perplexity": float("nan"), "accuracy": float("nan")}
    return {
        "perplexity": math.exp(total / count),
        "accuracy": float((preds[mask] == labels[mask]).mean()),
        "masked_tokens": count,
    }
