"""build_model: a pretrained checkpoint (hub id or local dir) or an architecture built from a config."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.errors import HfxError
from hfx.registry import Registry

log = logging.getLogger("hfx")

# Architecture name -> transformers model_type, for models built from a config.
ARCHITECTURES: Registry[str] = Registry("architecture")
for _name in ("bert", "roberta", "distilbert", "llama", "gpt2", "bart", "t5", "mistral", "qwen2"):
    ARCHITECTURES.add(_name, _name)


@dataclass
class BuiltModel:
    model: Any
    # Parameter-owning modules that the checkpoint did not provide (new heads, a missing pooler).
    fresh_modules: list[str] = field(default_factory=list)


def load_config(mcfg: DictConfig, tokenizer: Any, extra: dict[str, Any]) -> Any:
    """The model config: the pretrained one with overrides, or a fresh one for `architecture`."""
    from transformers import AutoConfig

    overrides = OmegaConf.to_container(mcfg.config, resolve=True) or {}
    if mcfg.name_or_path:
        try:
            config = AutoConfig.from_pretrained(
                mcfg.name_or_path, revision=mcfg.revision, trust_remote_code=mcfg.trust_remote_code
            )
        except (OSError, ValueError) as e:
            raise HfxError(f"model.name_or_path: cannot load '{mcfg.name_or_path}' ({str(e).splitlines()[0]})") from e
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise HfxError(f"model.config.{key}: not a field of {type(config).__name__}")
            setattr(config, key, value)
    elif mcfg.architecture:
        model_type = ARCHITECTURES.get(mcfg.architecture)
        special = {f"{k}_id": getattr(tokenizer, f"{k}_id") for k in ("pad_token", "bos_token", "eos_token")
                   if getattr(tokenizer, f"{k}_id", None) is not None}
        if model_type in ("bart", "t5") and "decoder_start_token_id" not in overrides:
            special["decoder_start_token_id"] = special.get("bos_token_id", special.get("pad_token_id"))
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **{**special, **overrides})
    else:
        raise HfxError("model: set model.name_or_path (pretrained) or model.architecture (from scratch)")
    for key, value in extra.items():
        setattr(config, key, value)
    return config


def build_model(mcfg: DictConfig, auto_class: Any, config: Any) -> BuiltModel:
    if not mcfg.name_or_path:
        model = auto_class.from_config(config)
        log.info("built %s from scratch: %.2fM parameters", type(model).__name__, _count(model) / 1e6)
        return BuiltModel(model, fresh_modules=[])
    try:
        model, info = auto_class.from_pretrained(
            mcfg.name_or_path,
            config=config,
            revision=mcfg.revision,
            trust_remote_code=mcfg.trust_remote_code,
            use_safetensors=True,
            output_loading_info=True,
        )
    except OSError as e:
        raise HfxError(
            f"model.name_or_path: cannot load safetensors weights from '{mcfg.name_or_path}' ({str(e).splitlines()[0]})"
        ) from e
    fresh = sorted({k.rsplit(".", 1)[0] for k in info.get("missing_keys", [])})
    if fresh:
        log.info("weights not in the checkpoint, initialised fresh and trained in full: %s", ", ".join(fresh))
    log.info("loaded %s from %s: %.2fM parameters", type(model).__name__, mcfg.name_or_path, _count(model) / 1e6)
    return BuiltModel(model, fresh_modules=fresh)


def _count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
