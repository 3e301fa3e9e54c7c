"""Perplexity pieces: causal-LM target tokens and the unigram baseline; masked-LM token-weighted scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hfx.labels import IGNORE_INDEX
from hfx.metrics.perplexity import masked_lm_metrics, masked_token_scores, target_tokens, unigram_perplexity


def test_target_tokens_are_the_shifted_labels_without_ignored():
    feats = {
        "labels": [
            [IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9, 10, 11, 12],
            [IGNORE_INDEX, 6, 7],
            [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 6],
        ]
    }
    assert list(target_tokens(feats)) == [7, 8, 9, 10, 11, 12, 6, 7, 6]


def test_unigram_perplexity_by_hand():
    # counts: a=2, b=1; N=3, V=4 -> p(a)=3/7, p(c)=1/7
    ppl = unigram_perplexity([1, 1, 2], [1, 3], vocab_size=4)
    assert ppl == pytest.approx(math.exp(-(math.log(3 / 7) + math.log(1 / 7)) / 2))


def test_perplexity_is_weighted_by_masked_tokens():
    import torch

    torch.manual_seed(0)
    # Two batches with different numbers of masked tokens: a mean of batch means would be biased.
    batches = []
    for n_masked in (1, 9):
        labels = torch.full((1, 12), IGNORE_INDEX)
        labels[0, :n_masked] = torch.randint(0, 20, (n_masked,))
        logits = torch.randn(1, 12, 20)
        batches.append((masked_token_scores(logits, labels), labels, logits))
    preds = np.concatenate([b[0][0].numpy() for b in batches])
    nll = np.concatenate([b[0][1].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert (preds[labels == IGNORE_INDEX] == IGNORE_INDEX).all()

    from transformers import EvalPrediction

    metrics = masked_lm_metrics(EvalPrediction(predictions=(preds, nll), label_ids=labels))
    all_logits = torch.cat([b[2] for b in batches])
    all_labels = torch.cat([b[1] for b in batches])
    expected = torch.nn.functional.cross_entropy(
        all_logits.reshape(-1, 20), all_labels.reshape(-1)
    )  # token mean
    assert metrics["masked_tokens"] == 10
    assert math.isclose(metrics["perplexity"], math.exp(expected.item()), rel_tol=1e-5)
    batch_mean = np.mean([torch.nn.functional.cross_entropy(b[2][0], b[1][0]).item() for b in batches])
    assert not math.isclose(metrics["perplexity"], math.exp(batch_mean), rel_tol=1e-3)
