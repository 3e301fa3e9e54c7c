"""The `peft` group: one registry entry per method (its schema and how it wraps a model), and apply_peft, which
also trains in full the weights the checkpoint lacked."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from hfx.config.schema import EntryConfig
from hfx.errors import HfxError
from hfx.registry import Registry

log = logging.getLogger("hfx")


@dataclass
class PeftMethod:
    schema: type
    # (model, peft config, modules to train in full, peft TaskType name or None) -> the wrapped model
    apply: Callable[[Any, DictConfig, list[str], str | None], Any]
    # The method's settings checked when the config is composed (raise HfxError), before any model is loaded.
    check: Callable[[DictConfig], None] = lambda pcfg: None


PEFT_METHODS: Registry[PeftMethod] = Registry("peft method")


def peft_method(name: str, schema: type, check: Callable[[DictConfig], None] | None = None
                ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def add(apply: Callable[..., Any]) -> Callable[..., Any]:
        PEFT_METHODS.add(name, PeftMethod(schema, apply, check or (lambda pcfg: None)))
        return apply

    return add


@dataclass
class NoPeftConfig(EntryConfig):
    name: str = "none"


@dataclass
class LoraSettings(EntryConfig):
    name: str = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    # Module names to adapt; empty = the architecture's usual attention projections (hfx/architectures.py).
    target_modules: list[str] = field(default_factory=list)
    # Extra modules trained in full; weights the checkpoint lacks (new heads) are always added.
    modules_to_save: list[str] = field(default_factory=list)
    bias: str = "none"  # none, all or lora_only (peft's LoraConfig.bias)
    # Save the merged model (loadable without peft) rather than the adapter alone.
    merge_on_save: bool = True


LORA_BIAS = ("none", "all", "lora_only")


def apply_peft(model: Any, pcfg: DictConfig, fresh_modules: list[str], task_type: str | None,
               head_modules: tuple[str, ...] = ()) -> Any:
    """`head_modules`: the task's head (e.g. pooler + classifier), trained in full where the model has them."""
    names = [name for name, _ in model.named_modules()]
    heads = [n for h in head_modules for n in names if n == h or n.endswith("." + h)]
    tied = _embedding_weights(model)
    parts = [p for m in dict.fromkeys([*fresh_modules, *heads]) for p in _untied_parts(model, m, tied)]
    # Keep the outermost: a module already inside another listed one adds nothing.
    parts = [p for p in dict.fromkeys(parts) if not any(p.startswith(q + ".") for q in parts)]
    return PEFT_METHODS.get(pcfg.name).apply(model, pcfg, parts, task_type)


def _embedding_weights(model: Any) -> set[int]:
    """ids of the input embedding weights: a tied weight is the same Parameter object (on the meta device too, where
    every data_ptr is 0, for `hfx check`)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return {id(emb.weight)} if emb is not None and hasattr(emb, "weight") else set()


def _untied_parts(model: Any, name: str, tied: set[int]) -> list[str]:
    """`name`, or its sub-modules that hold no weight tied to the input embeddings (an MLM decoder shares the
    embedding matrix: training a copy of it would train a second vocabulary-sized matrix and untie it)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return [name]
    if not any(id(p) in tied for p in module.parameters()):
        return [name]
    return [part for child, _ in module.named_children() for part in _untied_parts(model, f"{name}.{child}", tied)]


@peft_method("none", NoPeftConfig)
def no_peft(model: Any, pcfg: DictConfig, train_in_full: list[str], task_type: str | None) -> Any:
    return model


def _leaf_names(model: Any) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                   if name and type(mod).__name__ in ("Linear", "Conv1D", "Embedding")})


def check_lora(pcfg: DictConfig) -> None:
    """peft checks these only when it wraps the model, after the model is loaded: checked when composing instead."""
    if pcfg.r < 1:
        raise HfxError(f"peft.r: expected a positive rank, got {pcfg.r}")
    if not 0 <= pcfg.dropout < 1:
        raise HfxError(f"peft.dropout: expected a probability in [0, 1), got {pcfg.dropout}")
    if pcfg.bias not in LORA_BIAS:
        raise HfxError(f"peft.bias: expected one of {', '.join(LORA_BIAS)}, got '{pcfg.bias}'")


@peft_method("lora", LoraSettings, check_lora)
def lora(model: Any, pcfg: DictConfig, train_in_full: list[str], task_type: str | None) -> Any:
    from hfx.architectures import architecture

    record = architecture(model.config.model_type)
    targets = list(pcfg.target_modules) or list(record.lora_targets if record else ())
    if not targets:
        raise HfxError(
            f"peft.target_modules: no default for model type '{model.config.model_type}'; "
            f"name some of: {', '.join(_leaf_names(model)[:12])}"
        )
    module_names = [name for name, _ in model.named_modules()]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in module_names):
            raise HfxError(
                f"peft.target_modules: the model has no module '{t}'; it has e.g. {', '.join(_leaf_names(model)[:12])}"
            )
    # Fresh weights (new heads, a pooler the checkpoint lacks) would stay frozen at random under LoRA.
    to_save = list(dict.fromkeys([*pcfg.modules_to_save, *train_in_full]))
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=pcfg.r, lora_alpha=pcfg.alpha, lora_dropout=pcfg.dropout, target_modules=targets,
                        modules_to_save=list(to_save) or None, bias=pcfg.bias, task_type=task_type)
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing` alias.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d on %s; trained in full: %s; trainable %.2fM of %.2fM parameters (%.2f%%)", pcfg.r,
             ",".join(targets), ",".join(to_save) or "none", trainable / 1e6, total / 1e6, 100 * trainable / total)
    return model


def merge_for_saving(model: Any, pcfg: DictConfig) -> Any:
    if "merge_on_save" in pcfg and pcfg.merge_on_save and hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model
