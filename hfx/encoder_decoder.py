"""Warm-started encoder-decoders (`model.decoder_name_or_path`): transformers' EncoderDecoderModel built from two
pretrained checkpoints, e.g. bert2bert from the packaged MiniLM (conf/model/minilm2minilm.yaml). The decoder gets
causal self-attention and new cross-attention; a BERT tokenizer's [CLS] starts decoding and its [SEP] ends it.
Saved, the model reloads through AutoModelForSeq2SeqLM (config.json holds both halves)."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from hfx.errors import HfxError

log = logging.getLogger("hfx")

KEY = "model.decoder_name_or_path"


def check_warm_start(mcfg: DictConfig, task: Any) -> None:
    """Composition-time checks: the option needs an encoder checkpoint and a seq2seq task. (Prefix and prompt
    tuning, which cannot wrap EncoderDecoderModel, are refused for every seq2seq task already: hfx/adapters.py.)"""
    if not mcfg.decoder_name_or_path:
        return
    if mcfg.architecture:
        raise HfxError(
            f"{KEY}={mcfg.decoder_name_or_path} conflicts with model.architecture={mcfg.architecture}: "
            "a warm-started encoder-decoder is built from two pretrained checkpoints; set one to null"
        )
    if not mcfg.name_or_path:
        raise HfxError(
            f"{KEY}={mcfg.decoder_name_or_path} needs model.name_or_path (the encoder's checkpoint)"
        )
    if not task.seq2seq:
        raise HfxError(
            f"{KEY}: a warm-started encoder-decoder serves seq2seq tasks (summarization, translation), "
            f"not task {task.name}; set model.decoder_name_or_path=null or pick task=summarization"
        )


def special_ids(tokenizer: Any) -> dict[str, int]:
    """Decoder start, end and padding from the tokenizer: BOS / EOS where it has them, else [CLS] / [SEP]."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids = {"decoder_start_token_id": start, "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise HfxError(
            f"tokenizer: a warm-started encoder-decoder needs {', '.join(missing)} (BOS or [CLS], EOS or "
            "[SEP], a padding token); set them with tokenizer.special_tokens.*"
        )
    return ids


def warm_start_config(mcfg: DictConfig, tokenizer: Any, overrides: dict[str, Any]) -> Any:
    """EncoderDecoderConfig of the two checkpoints (model.config set on both halves), with the decoder's special
    token ids and vocabulary size on the outer config, where generation and label shifting read them."""
    from transformers import EncoderDecoderConfig

    from hfx.model import pretrained_config

    encoder = pretrained_config(mcfg, "name_or_path", overrides)
    decoder = pretrained_config(mcfg, "decoder_name_or_path", overrides)
    encoder.is_decoder, encoder.add_cross_attention = False, False
    decoder.is_decoder, decoder.add_cross_attention = True, True
    config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    for key, value in special_ids(tokenizer).items():
        setattr(config, key, value)
    config.vocab_size = decoder.vocab_size
    return config


def warm_start(mcfg: DictConfig, config: Any, attention: dict[str, Any]) -> Any:
    """EncoderDecoderModel.from_encoder_decoder_pretrained over the two checkpoints, their halves loaded here so
    that the weights neither checkpoint holds (cross-attention, the LM head's transform) are named."""
    from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderModel

    from hfx.model import BuiltModel, _count, without_records

    halves, fresh = {}, []
    for side, auto_class, source in (
        ("encoder", AutoModel, mcfg.name_or_path),
        ("decoder", AutoModelForCausalLM, mcfg.decoder_name_or_path),
    ):
        try:
            with without_records("transformers.modeling_utils", "LOAD REPORT"):
                halves[side], info = auto_class.from_pretrained(
                    source,
                    config=getattr(config, side),
                    revision=mcfg.revision,
                    trust_remote_code=mcfg.trust_remote_code,
                    use_safetensors=True,
                    output_loading_info=True,
                    **attention,
                )
        except (OSError, ValueError) as e:
            key = "model.name_or_path" if side == "encoder" else KEY
            raise HfxError(f"{key}: cannot load the {side} from '{source}' ({str(e).splitlines()[0]})") from e
        fresh += sorted({f"{side}.{k.rsplit('.', 1)[0]}" for k in info.get("missing_keys", [])})
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(
        encoder_model=halves["encoder"], decoder_model=halves["decoder"]
    )
    for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id", "vocab_size"):
        setattr(model.config, key, getattr(config, key))
    for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(config, key))
    log.info("weights not in the checkpoints, initialised fresh: %s", _summary(fresh))
    log.info(
        "warm-started %s from %s (encoder) and %s (decoder): %.2fM parameters",
        type(model).__name__,
        mcfg.name_or_path,
        mcfg.decoder_name_or_path,
        _count(model) / 1e6,
    )
    return BuiltModel(model, fresh_modules=fresh)


def _summary(modules: list[str]) -> str:
    """Fresh modules with layer numbers folded (decoder.bert.encoder.layer.*.crossattention.self.query)."""
    import re

    return ", ".join(sorted({re.sub(r"\.\d+\.", ".*.", m) for m in modules})) or "none"
