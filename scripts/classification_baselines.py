"""Trivial classification baselines, fitted on the train split and scored with hfx's own metric functions on the
experiments' evaluation split (the whole validation file, as the experiments evaluate):

    python scripts/classification_baselines.py [--data ../shared/data]

sst2: the majority class of train for every sentence -> accuracy (validation).
wnut17: each word's most common tag in train, O for a word train never has -> entity F1 (validation).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

from hfx.metrics.entities import entity_scores


def majority_class_accuracy(data: Path) -> float:
    def labels(split: str) -> list[str]:
        with (data / "sst2" / f"{split}.csv").open() as f:
            return [row["label"] for row in csv.DictReader(f)]

    majority = Counter(labels("train")).most_common(1)[0][0]
    reference = labels("validation")
    return sum(label == majority for label in reference) / len(reference)


def most_common_tag(train: list[dict]) -> dict[str, str]:
    """word -> its most common tag in the train rows (case-sensitive, as the words are written)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for row in train:
        for word, tag in zip(row["tokens"], row["ner_tags"], strict=True):
            counts[word][tag] += 1
    return {word: tags.most_common(1)[0][0] for word, tags in counts.items()}


def most_common_tag_scores(data: Path) -> dict[str, float]:
    def rows(split: str) -> list[dict]:
        return [json.loads(line) for line in (data / "wnut17" / f"{split}.jsonl").read_text().splitlines()]

    tags = most_common_tag(rows("train"))
    evaluation = rows("validation")
    predictions = [[tags.get(word, "O") for word in row["tokens"]] for row in evaluation]
    return entity_scores([row["ner_tags"] for row in evaluation], predictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    print(f"sst2 majority class (validation): accuracy {100 * majority_class_accuracy(args.data):.1f}")
    scores = most_common_tag_scores(args.data)
    print(f"wnut17 most common tag per word (validation): entity F1 {100 * scores['f1']:.1f} "
          f"(precision {100 * scores['precision']:.1f}, recall {100 * scores['recall']:.1f}, "
          f"word accuracy {100 * scores['accuracy']:.1f})")


if __name__ == "__main__":
    main()
