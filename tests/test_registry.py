from __future__ import annotations

import pytest

from hfx.errors import HfxError
from hfx.registry import Registry


def test_unknown_name_lists_valid_names_and_suggests() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("lora", 1)
    reg.add("none", 2)
    with pytest.raises(HfxError) as e:
        reg.get("lorra")
    msg = str(e.value)
    assert "unknown widget 'lorra'" in msg and "did you mean 'lora'" in msg and "lora, none" in msg


def test_duplicate_name_is_an_error() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="twice"):
        reg.add("a", 2)


def test_every_kind_has_its_registry() -> None:
    from hfx.adapters import PEFT_METHODS
    from hfx.architectures import ARCHITECTURES
    from hfx.data import FILE_BUILDERS
    from hfx.loggers import LOGGERS
    from hfx.tasks import TASKS
    from hfx.tokenizer import TOKENIZERS

    assert "sequence_classification" in TASKS
    assert {"pretrained", "wordpiece", "bpe", "auto"} <= set(TOKENIZERS.names())
    assert {"none", "lora"} <= set(PEFT_METHODS.names())
    assert {"none", "wandb", "tensorboard"} <= set(LOGGERS.names())
    assert {"bert", "llama", "bart"} <= set(ARCHITECTURES.names())
    assert {"csv", "json", "parquet", "text"} <= set(FILE_BUILDERS.names())
