"""What hfx knows about a model family, in one record per transformers `model_type`: its shape (encoder,
decoder, encoder-decoder), the default LoRA targets and the tokenizer a from-scratch build trains. Every other
module reads these records; none keeps a table of its own."""

from __future__ import annotations

from dataclasses import dataclass

from hfx.registry import Registry

ENCODER, DECODER, ENCODER_DECODER = "encoder", "decoder", "encoder-decoder"


@dataclass(frozen=True)
class Architecture:
    model_type: str
    # encoder (BERT-like), decoder (GPT-like) or encoder-decoder (BART / T5-like).
    shape: str
    # The usual attention projections adapted by LoRA when peft.target_modules is empty.
    lora_targets: tuple[str, ...] = ()
    # The tokenizer trained for a model built from scratch (tokenizer=auto): wordpiece or bpe.
    tokenizer: str = "bpe"
    # Buildable from a config with `model.architecture=<model_type>` (tested).
    buildable: bool = False

    @property
    def is_encoder_only(self) -> bool:
        return self.shape == ENCODER


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def _add(model_type: str, shape: str, lora_targets: tuple[str, ...] = (), tokenizer: str = "bpe",
         buildable: bool = False) -> None:
    ARCHITECTURES.add(model_type, Architecture(model_type, shape, lora_targets, tokenizer, buildable))


_add("bert", ENCODER, ("query", "value"), "wordpiece", buildable=True)
_add("roberta", ENCODER, ("query", "value"), "wordpiece", buildable=True)
_add("distilbert", ENCODER, ("q_lin", "v_lin"), "wordpiece", buildable=True)
for _encoder in ("albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "mpnet", "camembert", "modernbert",
                 "ernie"):
    _add(_encoder, ENCODER, tokenizer="wordpiece")
for _decoder in ("llama", "mistral", "qwen2"):
    _add(_decoder, DECODER, ("q_proj", "v_proj"), buildable=True)
_add("gpt2", DECODER, ("c_attn",), buildable=True)
_add("bart", ENCODER_DECODER, ("q_proj", "v_proj"), buildable=True)
_add("t5", ENCODER_DECODER, ("q", "v"), buildable=True)


def architecture(model_type: str | None) -> Architecture | None:
    """The record for a model_type, or None for one hfx has no record of (a hub model of another family)."""
    return ARCHITECTURES.get(model_type) if model_type in ARCHITECTURES else None


def buildable() -> list[str]:
    """Names accepted by `model.architecture` (models built from a config)."""
    return [n for n in ARCHITECTURES if ARCHITECTURES.get(n).buildable]
