"""Trivial seq2seq baselines, scored with hfx's own metric functions on the experiments' evaluation slices.

    python scripts/seq2seq_baselines.py [--data ../shared/data]

multi30k: copy the English source as the "German translation" -> BLEU (validation, first 200 rows).
dialogsum: the first two lines of the dialogue as the summary -> ROUGE-1/2/L (test, first 100 rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hfx.metrics.text import bleu, rouge


def read_jsonl(path: Path, n: int) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


def copy_source_bleu(data: Path, n: int = 200) -> dict[str, float]:
    rows = read_jsonl(data / "multi30k" / "validation.jsonl", n)
    return bleu([r["translation"]["en"] for r in rows], [r["translation"]["de"] for r in rows])


def first_lines_rouge(data: Path, n: int = 100, lines: int = 2) -> dict[str, float]:
    rows = read_jsonl(data / "dialogsum" / "test.jsonl", n)
    preds = ["\n".join(r["dialogue"].splitlines()[:lines]) for r in rows]
    return rouge(preds, [r["summary"] for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    print(f"multi30k copy source (validation[:200]): BLEU {copy_source_bleu(args.data)['bleu']:.2f}")
    scores = first_lines_rouge(args.data)
    print("dialogsum first 2 lines (test[:100]): " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
