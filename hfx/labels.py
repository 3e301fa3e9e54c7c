"""Label conventions the tasks share: the label id that losses and metrics skip, a classifier's label maps, and
the check that evaluation labels were all seen in training."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hfx.errors import HfxError

# PyTorch cross-entropy's ignore_index: special tokens, padding, prompts and unmasked tokens carry it.
IGNORE_INDEX = -100


def label_maps(labels: list[str] | None) -> dict[str, Any]:
    """num_labels / id2label / label2id for a classification head (saved with the model's config)."""
    labels = labels or []
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {n: i for i, n in enumerate(labels)},
    }


def require_seen_in_training(
    key: str, train_values: Sequence[Any], eval_values: Iterable[Any], noun: str
) -> None:
    """Raise HfxError when evaluation holds values that training never shows (the model could not predict them).

    `train_values` come in the order the message lists them; `noun` names them ("labels", "tags")."""
    unseen = sorted(set(map(str, eval_values)) - set(map(str, train_values)))
    if unseen:
        raise HfxError(
            f"dataset.{key}: evaluation {noun} never seen in training: {', '.join(unseen[:10])} "
            f"(training has {', '.join(map(str, train_values[:20]))})"
        )
