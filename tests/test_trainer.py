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
