"""Classification scores (accuracy, macro F1) and the logits reduction that keeps evaluation memory small."""

from __future__ import annotations

from typing import Any


def argmax_logits(logits: Any, labels: Any) -> Any:
    """preprocess_logits_for_metrics: reduce each batch to class (or tag) ids so evaluation never holds the full
    logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def classification_metrics(eval_pred: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    preds, refs = eval_pred.predictions, eval_pred.label_ids
    return {
        "accuracy": float(accuracy_score(refs, preds)),
        "f1_macro": float(f1_score(refs, preds, average="macro", zero_division=0)),
    }
