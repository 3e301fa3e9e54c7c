"""Unigram perplexity baseline for a causal_lm / sft config: an add-one-smoothed unigram model fitted on the train
split's target tokens, scored on the eval split's target tokens, through the same data, tokenizer and
preprocessing (and caches) as `hfx train`. Trains nothing.

    python scripts/unigram_baseline.py experiment=shakespeare_llama dataset.data_dir=../shared/data/tiny_shakespeare
"""

from __future__ import annotations

import sys

from hfx.cli import compose
from hfx.config.store import register_configs
from hfx.data import load_splits, tokenize_splits
from hfx.tasks import TASKS
from hfx.tasks.causal_lm import target_tokens, unigram_perplexity
from hfx.tokenizer import build_tokenizer


def main(overrides: list[str]) -> None:
    register_configs()
    cfg = compose("train", overrides)
    task = TASKS.get(cfg.task.name)
    raw = load_splits(cfg.dataset, cfg.trainer.seed)
    task.validate_data(raw, cfg)
    tokenizer = build_tokenizer(
        cfg.tokenizer,
        cfg.model,
        lambda: task.training_texts(raw["train"], cfg),
        cfg.cache_dir,
        raw["train"]._fingerprint,
    )
    features = tokenize_splits(raw, task, tokenizer, cfg, None)
    eval_targets = list(target_tokens(features["eval"]))
    ppl = unigram_perplexity(target_tokens(features["train"]), eval_targets, len(tokenizer))
    print(
        f"{cfg.experiment_name}: unigram perplexity {ppl:.1f} on {len(eval_targets)} eval target tokens "
        f"(vocab {len(tokenizer)})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
