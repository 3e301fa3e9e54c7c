"""Classification scores and the logits reduction used during evaluation."""

from __future__ import annotations

import pytest

from hfx.metrics.classification import argmax_logits, classification_metrics


def test_argmax_logits_reduces_to_ids_and_takes_the_first_of_a_tuple():
    import torch

    logits = torch.tensor([[[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]]])
    assert argmax_logits(logits, None).tolist() == [[1, 0]]
    assert argmax_logits((logits, torch.zeros(1)), None).tolist() == [[1, 0]]


def test_accuracy_and_macro_f1():
    import numpy as np
    from transformers import EvalPrediction

    m = classification_metrics(
        EvalPrediction(predictions=np.array([0, 1, 1, 1]), label_ids=np.array([0, 1, 0, 1]))
    )
    assert m["accuracy"] == pytest.approx(0.75)
    # class 0: P=1, R=0.5 -> F1 2/3; class 1: P=2/3, R=1 -> F1 0.8
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
