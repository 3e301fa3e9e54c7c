"""Unigram perplexity baseline for a causal_lm / sft config: an add-one-smoothed unigram model fitted on the train
split's target tokens, scored on the eval split's target tokens, through the same data, tokenizer and
preprocessing (and caches) as `hfx train` (hfx.stages.prepare_data). Trains nothing.

    python scripts/unigram_baseline.py experiment=shakespeare_llama dataset.data_dir=../shared/data/tiny_shakespeare
"""

from __future__ import annotations

import sys

from hfx.config.compose import compose
from hfx.metrics.perplexity import target_tokens, unigram_perplexity
from hfx.stages import prepare_data


def main(overrides: list[str]) -> None:
    cfg = compose("train", overrides)
    data = prepare_data(cfg)
    eval_targets = list(target_tokens(data.features["eval"]))
    ppl = unigram_perplexity(target_tokens(data.features["train"]), eval_targets, len(data.tokenizer))
    print(f"{cfg.experiment_name}: unigram perplexity {ppl:.1f} on {len(eval_targets)} eval target tokens "
          f"(vocab {len(data.tokenizer)})")


if __name__ == "__main__":
    main(sys.argv[1:])
