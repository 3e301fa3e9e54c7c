"""ROUGE and BLEU on strings with known scores."""

from __future__ import annotations

import pytest

from hfx.metrics.text import bleu, rouge, text_metrics


def test_rouge_and_bleu_on_known_strings():
    same = rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
    # Stemming: "cats"/"cat", "sitting"/"sit" match.
    stemmed = rouge(["cats sitting"], ["cat sit"])
    assert stemmed["rouge1"] == pytest.approx(100.0)
    half = rouge(["the cat"], ["the dog"])
    assert half["rouge1"] == pytest.approx(50.0) and half["rouge2"] == pytest.approx(0.0)
    assert bleu(["the cat sat on the mat ."], ["the cat sat on the mat ."])["bleu"] == pytest.approx(100.0)
    assert bleu(["xyz"], ["the cat sat on the mat ."])["bleu"] == pytest.approx(0.0)
    assert set(text_metrics("rouge", ["a"], ["a"])) == {"rouge1", "rouge2", "rougeL"}
