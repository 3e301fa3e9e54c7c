"""Entity-level seqeval scores and the word-level view of token predictions."""

from __future__ import annotations

from hfx.labels import IGNORE_INDEX
from hfx.metrics.entities import entity_scores, word_level_from_tokens

LABELS = ["O", "B-location", "B-person", "I-location", "I-person"]


def test_entity_scores_are_entity_level():
    ref = [["B-person", "I-person", "O", "B-location"]]
    hyp = [["B-person", "O", "O", "B-location"]]  # person span cut short: wrong entity
    s = entity_scores(ref, hyp)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["accuracy"] == 0.75


def test_word_level_reads_only_labelled_positions():
    preds = [[2, 2, 4, 0, 1, 3]]
    labels = [[IGNORE_INDEX, 2, IGNORE_INDEX, 0, 1, IGNORE_INDEX]]
    refs, hyps = word_level_from_tokens(preds, labels, LABELS)
    assert refs == [["B-person", "O", "B-location"]] and hyps == [["B-person", "O", "B-location"]]
