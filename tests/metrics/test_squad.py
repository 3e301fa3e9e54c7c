"""The SQuAD v1.1 metric: answer normalisation, exact match, token F1, the best over gold answers."""

from __future__ import annotations

import pytest

from hfx.metrics.squad import normalize_answer, squad_metrics, squad_scores, token_f1


def test_squad_normalisation_and_scores() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert squad_scores("the Eiffel tower", ["Eiffel Tower."]) == (1.0, 1.0)
    assert token_f1("big red cat", "red cat") == pytest.approx(0.8)
    assert token_f1("dog", "red cat") == 0.0
    # The best over the gold answers.
    em, f1 = squad_scores("red cat", ["a dog", "red cat sat", "cat"])
    assert em == 0.0 and f1 == pytest.approx(0.8)
    m = squad_metrics(["Paris", "in 1804", "nothing"], [["Paris"], ["1804"], ["London"]])
    assert m["exact_match"] == pytest.approx(100 / 3)
    assert m["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
