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
    # IA3 (peft=ia3) when peft.target_modules is empty: the scaled modules (keys, values, feed-forward output) and,
    # of those, the feed-forward ones (scaled on their input); peft's own defaults for these families.
    ia3_targets: tuple[str, ...] = ()
    ia3_feedforward: tuple[str, ...] = ()

    @property
    def is_encoder_only(self) -> bool:
        return self.shape == ENCODER


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def _add(model_type: str, shape: str, lora_targets: tuple[str, ...] = (), tokenizer: str = "bpe",
         buildable: bool = False, ia3: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())) -> None:
    ARCHITECTURES.add(model_type, Architecture(model_type, shape, lora_targets, tokenizer, buildable, *ia3))


_BERT_IA3 = (("key", "value", "output.dense"), ("output.dense",))
_add("bert", ENCODER, ("query", "value"), "wordpiece", buildable=True, ia3=_BERT_IA3)
_add("roberta", ENCODER, ("query", "value"), "wordpiece", buildable=True, ia3=_BERT_IA3)
_add("distilbert", ENCODER, ("q_lin", "v_lin"), "wordpiece", buildable=True,
     ia3=(("k_lin", "v_lin", "lin2"), ("lin2",)))
for _encoder in ("albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "mpnet", "camembert", "modernbert",
                 "ernie"):
    _add(_encoder, ENCODER, tokenizer="wordpiece")
for _decoder in ("llama", "mistral", "qwen2"):
    _add(_decoder, DECODER, ("q_proj", "v_proj"), buildable=True, ia3=(("k_proj", "v_proj", "down_proj"), ("down_proj",)))
_add("gpt2", DECODER, ("c_attn",), buildable=True, ia3=(("c_attn", "mlp.c_proj"), ("mlp.c_proj",)))
_add("bart", ENCODER_DECODER, ("q_proj", "v_proj"), buildable=True, ia3=(("k_proj", "v_proj", "fc2"), ("fc2",)))
_add("t5", ENCODER_DECODER, ("q", "v"), buildable=True, ia3=(("k", "v", "wo"), ("wo",)))


def architecture(model_type: str | None) -> Architecture | None:
    """The record for a model_type, or None for one hfx has no record of (a hub model of another family)."""
    return ARCHITECTURES.get(model_type) if model_type in ARCHITECTURES else None


def buildable() -> list[str]:
    """Names accepted by `model.architecture` (models built from a config)."""
    return [n for n in ARCHITECTURES if ARCHITECTURES.get(n).buildable]
