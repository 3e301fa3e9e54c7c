"""Unigram perplexity baseline for a causal_lm / sft / masked_lm config: an add-one-smoothed unigram model fitted on
the train split's tokens, scored on the eval split's scored tokens, through the same data, tokenizer and
preprocessing (and caches) as `hfx train` (hfx.stages.prepare_data). Trains nothing.

causal_lm / sft: fitted on the train targets, scored on the eval targets (labels shifted by one, -100 dropped).
masked_lm: fitted on every non-special train token, scored on the eval split's seeded masked positions (the tokens
the run's perplexity is measured on).

    python scripts/unigram_baseline.py experiment=shakespeare_llama dataset.data_dir=../shared/data/tiny_shakespeare
    python scripts/unigram_baseline.py experiment=sst2_minilm_mlm dataset.data_dir=../shared/data/sst2
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from hfx.config.compose import compose
from hfx.labels import IGNORE_INDEX
from hfx.metrics.perplexity import target_tokens, unigram_perplexity
from hfx.stages import prepare_data


def masked_lm_tokens(features: Any, tokenizer: Any) -> tuple[Iterator[int], list[int]]:
    """(train tokens without special ones, eval tokens at the masked positions)."""
    special = set(tokenizer.all_special_ids)
    train = (t for ids in features["train"]["input_ids"] for t in ids if t not in special)
    scored = [t for labels in features["eval"]["labels"] for t in labels if t != IGNORE_INDEX]
    return train, scored


def main(overrides: list[str]) -> None:
    cfg = compose("train", overrides)
    data = prepare_data(cfg)
    if cfg.task.name == "masked_lm":
        train_tokens, eval_tokens = masked_lm_tokens(data.features, data.tokenizer)
        what = "masked eval tokens"
    else:
        train_tokens, eval_tokens = target_tokens(data.features["train"]), list(target_tokens(data.features["eval"]))
        what = "eval target tokens"
    ppl = unigram_perplexity(train_tokens, eval_tokens, len(data.tokenizer))
    print(f"{cfg.experiment_name}: unigram perplexity {ppl:.1f} on {len(eval_tokens)} {what} "
          f"(vocab {len(data.tokenizer)})")


if __name__ == "__main__":
    main(sys.argv[1:])
