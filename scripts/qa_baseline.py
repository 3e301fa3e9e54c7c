"""Trivial extractive-QA baseline: answer with the context sentence that shares the most words with the question.

Scored with hfx's SQuAD metric, so it is comparable with `eval_exact_match` / `eval_f1` of a run:
    python scripts/qa_baseline.py ../shared/data/squad/validation.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from hfx.metrics.squad import normalize_answer, squad_metrics

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def best_overlap_sentence(question: str, context: str) -> str:
    words = set(normalize_answer(question).split())
    sentences = [s for s in SENTENCE_END.split(context) if s.strip()] or [context]
    # The first sentence wins ties.
    return max(sentences, key=lambda s: len(words & set(normalize_answer(s).split())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="SQuAD-style JSONL: question, context, answers{text[]}")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.file.read_text().splitlines() if line.strip()]
    predictions = [best_overlap_sentence(r["question"], r["context"]) for r in rows]
    metrics = squad_metrics(predictions, [r["answers"]["text"] for r in rows])
    print(
        f"best-overlap sentence on {args.file} ({len(rows)} questions): "
        f"EM {metrics['exact_match']:.1f} / F1 {metrics['f1']:.1f}"
    )


if __name__ == "__main__":
    main()
