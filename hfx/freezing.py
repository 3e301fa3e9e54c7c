"""The `freeze` group: weights kept at their initial values while training, chosen by part (the embeddings, the
first layers, all but the head) or by parameter-name pattern. Applied after PEFT, so a frozen part's adapter weights
are frozen too; and what is left trainable is logged and counted."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig

from hfx.errors import HfxError

log = logging.getLogger("hfx")

# The list of transformer blocks is a ModuleList under one of these names (encoder.layer.N in BERT, model.layers.N in
# Llama, transformer.h.N in GPT-2, encoder.block.N in T5); the first found is frozen from its start.
LAYER_STACKS = ("layer", "layers", "h", "block", "blocks")
# Input embedding modules besides get_input_embeddings(): BERT's whole embeddings block, learned positions.
EMBEDDINGS = ("embeddings", "embed_tokens", "embed_positions", "wte", "wpe", "word_embeddings")
MAX_SHOWN = 12  # parts named in the log line and in metrics.json


def is_active(fcfg: DictConfig) -> bool:
    return bool(fcfg.embeddings or fcfg.layers or fcfg.all_but_head or fcfg.patterns)


def check_freeze(fcfg: DictConfig) -> None:
    """Checked when the config is composed, before any model is loaded."""
    if fcfg.layers < 0:
        raise HfxError(f"freeze.layers: expected a number of layers >= 0, got {fcfg.layers}")
    for pattern in fcfg.patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise HfxError(f"freeze.patterns: '{pattern}' is not a regular expression ({e})") from e


def apply_freeze(model: Any, fcfg: DictConfig, head_modules: Iterable[str] = (), fresh_modules: Iterable[str] = ()
                 ) -> str | None:
    """Sets requires_grad=False on the configured parameters of the model (the transformers model inside a PEFT
    wrapper, named as it names them). Returns what was frozen, compactly (None when `freeze` is off)."""
    if not is_active(fcfg):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # Every name of every parameter: a weight tied to another (an LM head) has both names.
    named = list(base.named_parameters(remove_duplicate=False))
    parts = embedding_modules(base) if fcfg.embeddings else []
    if fcfg.layers:
        parts += first_layers(base, fcfg.layers)
    chosen: set[int] = set()
    if fcfg.all_but_head:
        head = head_parts(base, [*head_modules, *fresh_modules])
        kept = {id(p) for n, p in named if _under(n, head)}
        chosen |= {id(p) for _, p in named if id(p) not in kept}
    chosen |= {id(p) for n, p in named if _under(n, parts)}
    for pattern in fcfg.patterns:
        matched = {id(p) for n, p in named if re.search(pattern, n)}
        if not matched:
            raise HfxError(f"freeze.patterns: '{pattern}' matches no parameter name; they look like "
                           f"{', '.join(n for n, _ in named[:4])}")
        chosen |= matched
    for _, p in named:
        if id(p) in chosen:
            p.requires_grad_(False)
    counts = parameter_counts(model)
    if counts["parameters_trainable"] == 0:
        raise HfxError("freeze: nothing is left to train (every parameter is frozen); freeze fewer parts")
    frozen = compact(frozen_parts(base, chosen))
    log.info("freeze: %s; trainable %.2fM of %.2fM parameters (%.2f%%): %s", frozen,
             counts["parameters_trainable"] / 1e6, counts["parameters_total"] / 1e6,
             counts["parameters_trainable_percent"], compact(trainable_parts(base)))
    return frozen


def _under(name: str, modules: list[str]) -> bool:
    return any(name.startswith(m + ".") for m in modules)


def parameter_counts(model: Any) -> dict[str, Any]:
    """Total and trainable parameters, counted as peft's print_trainable_parameters counts them."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters_total": total, "parameters_trainable": trainable,
            "parameters_trainable_percent": round(100 * trainable / max(total, 1), 4)}


def embedding_modules(model: Any) -> list[str]:
    found = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in EMBEDDINGS]
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    found += [n for n, m in model.named_modules() if emb is not None and m is emb][:1]
    if not found:
        raise HfxError(f"freeze.embeddings: found no embedding module in {type(model).__name__}; name its "
                       "parameters in freeze.patterns instead")
    found = list(dict.fromkeys(found))
    return [m for m in found if not _under(m, found)]


def layer_stack(model: Any) -> tuple[str, int]:
    """The model's list of transformer blocks (its name and length): the first ModuleList named like one."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in LAYER_STACKS and len(module):
            return name, len(module)
    raise HfxError(f"freeze.layers: found no list of layers in {type(model).__name__} (looked for modules named "
                   f"{', '.join(LAYER_STACKS)}); name the parameters in freeze.patterns instead")


def first_layers(model: Any, n: int) -> list[str]:
    stack, count = layer_stack(model)
    if n > count:
        raise HfxError(f"freeze.layers: the model has {count} layers ({stack}.0-{count - 1}), got {n}")
    return [f"{stack}.{i}" for i in range(n)]


def head_parts(model: Any, names: list[str]) -> list[str]:
    """The task's head modules present in the model; for a language model without one, its output embeddings."""
    modules = [n for n, _ in model.named_modules()]
    found = [m for h in names for m in modules if m == h or m.endswith("." + h)]
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not found and out is not None:
        found = [n for n, m in model.named_modules(remove_duplicate=False) if m is out][-1:]
    if not found:
        raise HfxError(f"freeze.all_but_head: {type(model).__name__} has no task head to keep training (looked for "
                       f"{', '.join(names) or 'an output embedding'}); use freeze.patterns")
    return found


def frozen_parts(model: Any, chosen: set[int]) -> list[str]:
    """The outermost modules that are wholly frozen and hold a parameter `freeze` chose, then any chosen parameter
    outside them."""
    parts = _outermost(model, lambda ps: all(not p.requires_grad for p in ps) and any(id(p) in chosen for p in ps))
    loose = [n for n, p in model.named_parameters() if id(p) in chosen and not _under(n, parts)]
    return parts + loose


def trainable_parts(model: Any) -> list[str]:
    return _outermost(model, lambda ps: all(p.requires_grad for p in ps))


def _outermost(model: Any, wholly: Any) -> list[str]:
    out: list[str] = []
    for name, module in model.named_modules():
        if not name or _under(name, out):
            continue
        ps = list(module.parameters())
        if ps and wholly(ps):
            out.append(name)
    return out


def compact(names: list[str]) -> str:
    """`a.layer.0`, `a.layer.1`, `a.layer.2` -> `a.layer.0-2`; names that differ in one index share a line."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for name in names:
        parts = name.split(".")
        i = next((k for k, p in enumerate(parts) if p.isdigit()), None)
        key = tuple(parts) if i is None else (*parts[:i], "*", *parts[i + 1:])
        groups.setdefault(key, [])
        if i is not None:
            groups[key].append(int(parts[i]))
    shown = []
    for key, indices in groups.items():
        shown.append(".".join(key).replace("*", _ranges(indices)) if indices else ".".join(key))
    more = f" (+{len(shown) - MAX_SHOWN} more)" if len(shown) > MAX_SHOWN else ""
    return (", ".join(shown[:MAX_SHOWN]) + more) or "nothing"


def _ranges(indices: list[int]) -> str:
    indices = sorted(set(indices))
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
