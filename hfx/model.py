"""build_model: a pretrained checkpoint (hub id or local dir) or an architecture built from a config."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.architectures import ARCHITECTURES, ENCODER_DECODER
from hfx.errors import HfxError

log = logging.getLogger("hfx")


@dataclass
class BuiltModel:
    model: Any
    # Parameter-owning modules that the checkpoint did not provide (new heads, a missing pooler).
    fresh_modules: list[str] = field(default_factory=list)


def load_config(mcfg: DictConfig, tokenizer: Any, extra: dict[str, Any]) -> Any:
    """The model config: the pretrained one with overrides, or a fresh one for `architecture`."""
    from transformers import AutoConfig

    overrides = OmegaConf.to_container(mcfg.config, resolve=True) or {}
    if mcfg.decoder_name_or_path:
        from hfx.encoder_decoder import warm_start_config

        config = warm_start_config(mcfg, tokenizer, overrides)
    elif mcfg.name_or_path:
        config = pretrained_config(mcfg, "name_or_path", overrides)
    elif mcfg.architecture:
        record = ARCHITECTURES.get(mcfg.architecture)
        model_type = record.model_type
        special = {f"{k}_id": getattr(tokenizer, f"{k}_id") for k in ("pad_token", "bos_token", "eos_token")
                   if getattr(tokenizer, f"{k}_id", None) is not None}
        if record.shape == ENCODER_DECODER and "decoder_start_token_id" not in overrides:
            special["decoder_start_token_id"] = special.get("bos_token_id", special.get("pad_token_id"))
        # model.config.vocab_size, where given, wins over the tokenizer's size (and is checked against it below).
        config = AutoConfig.for_model(model_type, **{"vocab_size": len(tokenizer), **special, **overrides})
    else:
        raise HfxError("model: set model.name_or_path (pretrained) or model.architecture (from scratch)")
    for key, value in extra.items():
        setattr(config, key, value)
    for part in (config.encoder, config.decoder) if mcfg.decoder_name_or_path else (config,):
        check_tokenizer_fits(part, tokenizer, "vocab_size" in overrides)
    return config


def pretrained_config(mcfg: DictConfig, key: str, overrides: dict[str, Any]) -> Any:
    """The config of the checkpoint at model.<key> (name_or_path, decoder_name_or_path) with model.config set on it."""
    from transformers import AutoConfig

    source = mcfg[key]
    try:
        config = AutoConfig.from_pretrained(source, revision=mcfg.revision, trust_remote_code=mcfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise HfxError(f"model.{key}: cannot load '{source}' ({str(e).splitlines()[0]})") from e
    for name, value in overrides.items():
        if not hasattr(config, name):
            raise HfxError(f"model.config.{name}: not a field of {type(config).__name__}")
        setattr(config, name, value)
    return config


def check_tokenizer_fits(config: Any, tokenizer: Any, vocab_overridden: bool = False) -> None:
    """A tokenizer whose ids or lengths the model cannot embed fails here, not as an index error in training."""
    from hfx.special_tokens import base_size

    vocab = getattr(config, "vocab_size", None)
    # Tokens the run adds (tokenizer.add_tokens / special_tokens) get new embedding rows: only the rest must fit.
    if vocab is not None and base_size(tokenizer) > vocab:
        key = "model.config.vocab_size" if vocab_overridden else "tokenizer"
        raise HfxError(f"{key}: the tokenizer has {len(tokenizer)} tokens but the model embeds {vocab} "
                       "(its vocab_size); use the model's own tokenizer (tokenizer=auto) or a vocabulary that fits")
    positions = getattr(config, "max_position_embeddings", None)
    # Learned position embeddings end at max_position_embeddings; rotary ones (rope_parameters) do not.
    if positions and getattr(config, "rope_parameters", None) is None and tokenizer.model_max_length > positions:
        raise HfxError(f"tokenizer.max_length: {tokenizer.model_max_length} tokens is longer than the model takes "
                       f"({positions}, its max_position_embeddings)")


def build_model(mcfg: DictConfig, auto_class: Any, config: Any, attn_implementation: str | None = None) -> BuiltModel:
    attention = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if attn_implementation:
        log.info("attention implementation: %s", attn_implementation)
    if mcfg.decoder_name_or_path:
        from hfx.encoder_decoder import warm_start

        return warm_start(mcfg, config, attention)
    if not mcfg.name_or_path:
        model = auto_class.from_config(config, **attention)
        log.info("built %s from scratch: %.2fM parameters", type(model).__name__, _count(model) / 1e6)
        return BuiltModel(model, fresh_modules=[])
    try:
        # transformers prints a table of missing keys at warning level; hfx says the same in one line below.
        with without_records("transformers.modeling_utils", "LOAD REPORT"):
            model, info = auto_class.from_pretrained(
                mcfg.name_or_path,
                config=config,
                revision=mcfg.revision,
                trust_remote_code=mcfg.trust_remote_code,
                use_safetensors=True,
                output_loading_info=True,
                **attention,
            )
    except ValueError as e:
        key = "model.attn_implementation" if attention and "attn" in str(e).lower() else "model.name_or_path"
        raise HfxError(f"{key}: cannot load '{mcfg.name_or_path}' ({str(e).splitlines()[0]})") from e
    except OSError as e:
        raise HfxError(
            f"model.name_or_path: cannot load safetensors weights from '{mcfg.name_or_path}' ({str(e).splitlines()[0]})"
        ) from e
    fresh = sorted({k.rsplit(".", 1)[0] for k in info.get("missing_keys", [])})
    if fresh:
        log.info("weights not in the checkpoint, initialised fresh and trained in full: %s", ", ".join(fresh))
    unused = sorted({k.rsplit(".", 1)[0] for k in info.get("unexpected_keys", [])})
    if unused:
        log.info("checkpoint weights this model does not use: %s", ", ".join(unused))
    log.info("loaded %s from %s: %.2fM parameters", type(model).__name__, mcfg.name_or_path, _count(model) / 1e6)
    return BuiltModel(model, fresh_modules=fresh)


@contextlib.contextmanager
def without_records(logger_name: str, text: str) -> Iterator[None]:
    """Drop one library logger's records that contain `text` for the block (its level stays: transformers runs
    extra checks at some levels)."""
    logger = logging.getLogger(logger_name)

    def keep(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
