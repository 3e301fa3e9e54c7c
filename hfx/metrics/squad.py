"""SQuAD v1.1 evaluation (the official script's normalisation): lowercase, no punctuation, no articles, single
spaces; exact match and token F1, each the max over the gold answers."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) in 0..1 of one prediction: the best over the gold answers."""
    return max(exact_match(prediction, g) for g in golds), max(token_f1(prediction, g) for g in golds)


def squad_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus exact_match and f1 in 0..100, as the SQuAD script reports them."""
    scores = [squad_scores(p, g) for p, g in zip(predictions, golds, strict=True)]
    n = max(len(scores), 1)
    return {"exact_match": 100 * sum(s[0] for s in scores) / n, "f1": 100 * sum(s[1] for s in scores) / n}
