"""Entity-level tagging scores (seqeval) over word-level IOB tags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hfx.labels import IGNORE_INDEX


def entity_scores(references: list[list[str]], predictions: list[list[str]]) -> dict[str, float]:
    """Entity-level precision / recall / F1 (seqeval, conlleval rules) and word accuracy."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {
        "precision": float(precision_score(references, predictions, zero_division=0)),
        "recall": float(recall_score(references, predictions, zero_division=0)),
        "f1": float(f1_score(references, predictions, zero_division=0)),
        "accuracy": float(accuracy_score(references, predictions)),
    }


def word_level_from_tokens(
    preds: Any, label_ids: Any, labels: Sequence[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """(references, predictions) per example from token arrays where exactly the first sub-token of each
    word has a label (evaluation features are built that way) and everything else is -100."""
    refs, hyps = [], []
    for pred_row, label_row in zip(preds, label_ids, strict=True):
        keep = [i for i, lab in enumerate(label_row) if lab != IGNORE_INDEX]
        refs.append([labels[int(label_row[i])] for i in keep])
        hyps.append([labels[int(pred_row[i])] for i in keep])
    return refs, hyps
