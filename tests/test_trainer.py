"""Training arguments and the precision / attention choices hfx makes for the hardware."""

from __future__ import annotations

import pytest

from hfx.config.compose import compose
from hfx.errors import HfxError
from hfx.trainer import attention_implementation, on_cpu, use_bf16


def test_fp16_on_a_cpu_names_fp16_not_bf16() -> None:
    cfg = compose("train", ["trainer.fp16=true"])
    if not on_cpu(cfg.trainer):
        pytest.skip("a CUDA device is in use")
    with pytest.raises(HfxError, match=r"^trainer.fp16: fp16 training needs a CUDA GPU") as e:
        use_bf16(cfg.trainer)
    assert "bf16=true" in str(e.value)  # the way out, not the cause


def test_bf16_on_a_cpu_trains_with_eager_attention() -> None:
    # Measured on an avx512_bf16 CPU: eager attention 15-24% faster than sdpa in bf16, sdpa as fast or faster in fp32.
    bf16 = compose("train", ["trainer.bf16=true", "trainer.use_cpu=true"])
    assert attention_implementation(bf16) == "eager"
    assert attention_implementation(compose("train", ["trainer.bf16=false"])) is None
    chosen = compose("train", ["trainer.bf16=true", "trainer.use_cpu=true", "model.attn_implementation=sdpa"])
    assert attention_implementation(chosen) == "sdpa"


def test_data_workers_stay_off_on_a_cpu() -> None:
    from hfx.trainer import data_workers

    cfg = compose("train", ["trainer.use_cpu=true"])
    assert data_workers(cfg.trainer) == {"dataloader_num_workers": 0}
    assert data_workers(compose("train", ["trainer.dataloader_num_workers=3"]).trainer) == {"dataloader_num_workers": 3}




@pytest.mark.slow
def test_evaluation_predictions_follow_dataset_order(tmp_path, hfx_cache) -> None:
    """Length-grouped training must not reorder evaluation: the rows for predictions.jsonl and the Trainer's logits
    equal a plain forward pass over the eval rows in dataset order (SST-2 sentences run from 2 to 50+ tokens)."""
    import torch

    from hfx.stages import prepare
    from hfx.trainer import build_trainer
    from tests.conftest import TINY, shared

    # A wide initialisation keeps the tiny model's logits far apart from row to row, so a reordering shows.
    cfg = compose("train", [*TINY, "+model.config.initializer_range=0.5", "dataset=sst2",
                            f"dataset.data_dir={shared('sst2')}", f"cache_dir={hfx_cache}",
                            "dataset.max_train_samples=32", "dataset.max_eval_samples=96", "trainer.max_steps=2",
                            "trainer.per_device_eval_batch_size=16", "trainer.use_cpu=true", "trainer.bf16=false"])
    assert cfg.trainer.train_sampling_strategy == "group_by_length"
    run = prepare(cfg)
    trainer = build_trainer(cfg, run.task, run.model, run.tokenizer, run.features, run.labels, tmp_path, [])
    trainer.train()
    features = run.features["eval"]
    collate = run.task.collator(run.tokenizer, run.model, run.settings)
    model = trainer.model.eval()
    with torch.no_grad():
        in_order = torch.cat([
            model(**collate([{k: v for k, v in features[i].items() if k not in ("labels", "length")}
                             for i in range(start, min(start + 16, len(features)))])).logits
            for start in range(0, len(features), 16)
        ])
    assert in_order.std(dim=0).min() > 0.1  # rows far apart, so a reordering cannot pass the comparisons below
    expected = [run.labels[i] for i in in_order.argmax(-1).tolist()]

    evaluation = run.task.evaluate(trainer, features, run.raw["eval"], run.tokenizer, run.settings, run.labels)
    assert [r["prediction"] for r in evaluation.predictions] == expected
    assert [r["reference"] for r in evaluation.predictions] == [run.labels[i] for i in run.raw["eval"]["label"]]
    trainer.compute_metrics = trainer.preprocess_logits_for_metrics = None  # the raw logits this time
    torch.testing.assert_close(torch.as_tensor(trainer.predict(features).predictions), in_order)
