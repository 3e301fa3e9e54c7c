"""The `peft` group: one registry entry per method (its schema and the peft config it builds), apply_peft, which
also trains in full the weights the checkpoint lacked, and merge_for_saving (an adapter kept separate is saved and
loaded again by hfx/saved_adapters.py)."""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from hfx.architectures import DECODER
from hfx.config.schema import EntryConfig
from hfx.errors import HfxError
from hfx.registry import Registry

log = logging.getLogger("hfx")

@dataclass
class PeftMethod:
    schema: type
    # (model, peft config, modules to train in full, peft TaskType name or None) -> (peft's config or None for
    # none, what the log says about it)
    build: Callable[[Any, DictConfig, list[str], str | None], tuple[Any, str]]
    # The method's settings checked when the config is composed (raise HfxError), before any model is loaded.
    check: Callable[[DictConfig], None] = lambda pcfg: None
    # Folds into the base weights on save (peft.merge_on_save); prefix and prompt tuning cannot.
    merges: bool = True
    # The peft task types hfx runs the method for (None: every task), and how the refusal names them; checked when
    # the config is composed.
    task_types: tuple[str, ...] | None = None
    runs_for: str = ""


PEFT_METHODS: Registry[PeftMethod] = Registry("peft method")


def peft_method(name: str, schema: type, check: Callable[[DictConfig], None] | None = None, merges: bool = True,
                task_types: tuple[str, ...] | None = None, runs_for: str = ""
                ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def add(build: Callable[..., Any]) -> Callable[..., Any]:
        PEFT_METHODS.add(name, PeftMethod(schema, build, check or (lambda pcfg: None), merges, task_types, runs_for))
        return build

    return add


def check_task_fits(pcfg: DictConfig, task: Any, task_name: str, shape: str | None) -> None:
    """At composition: a method hfx runs for some tasks only is refused for the others (shape: the architecture
    record's shape when the model is built from one, else None and the model is checked when it is built)."""
    method = PEFT_METHODS.get(pcfg.name)
    if method.task_types is None:
        return
    decoder_classifier = task.peft_task_type == "SEQ_CLS" and shape == DECODER
    if task.peft_task_type not in method.task_types or decoder_classifier:
        what = f"the {task_name} task" + (" with a decoder model" if decoder_classifier else "")
        raise HfxError(f"peft={pcfg.name}: hfx runs it for {method.runs_for}, not for {what}; use peft=lora")


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
    # DoRA: each adapted weight split into magnitude and direction, LoRA on the direction (peft's use_dora).
    use_dora: bool = False
    # Save the merged model (loadable without peft) rather than the adapter alone.
    merge_on_save: bool = True


@dataclass
class DoraSettings(LoraSettings):
    name: str = "dora"
    use_dora: bool = True


@dataclass
class IA3Settings(EntryConfig):
    name: str = "ia3"
    # Modules whose activations are scaled by a learned vector; empty = the architecture's keys, values and
    # feed-forward output (hfx/architectures.py).
    target_modules: list[str] = field(default_factory=list)
    # Those of target_modules scaled on their input (the feed-forward ones); empty = the architecture's.
    feedforward_modules: list[str] = field(default_factory=list)
    modules_to_save: list[str] = field(default_factory=list)
    merge_on_save: bool = True


@dataclass
class LohaSettings(EntryConfig):
    name: str = "loha"
    r: int = 8
    alpha: int = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    # Linear (or Conv2d) modules to adapt; empty = the architecture's LoRA targets.
    target_modules: list[str] = field(default_factory=list)
    modules_to_save: list[str] = field(default_factory=list)
    merge_on_save: bool = True


@dataclass
class PrefixTuningSettings(EntryConfig):
    name: str = "prefix_tuning"
    # Learned key/value vectors prepended in every layer (decoders: causal LM, seq2seq).
    num_virtual_tokens: int = 20
    # Reparametrise the prefix through a 2-layer MLP of width encoder_hidden_size (null = the model's hidden size).
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    modules_to_save: list[str] = field(default_factory=list)


@dataclass
class PromptTuningSettings(EntryConfig):
    name: str = "prompt_tuning"
    # Learned embeddings prepended to every input. Prompt tuning wants a high learning rate (about 1e-2 to 3e-2).
    num_virtual_tokens: int = 20
    # random, or sample_vocab: start from the embeddings of random vocabulary tokens.
    init: str = "random"
    modules_to_save: list[str] = field(default_factory=list)


LORA_BIAS = ("none", "all", "lora_only")
PROMPT_INITS = ("random", "sample_vocab")


def apply_peft(model: Any, pcfg: DictConfig, fresh_modules: list[str], task_type: str | None,
               head_modules: tuple[str, ...] = (), new_token_ids: list[int] | None = None) -> Any:
    """`head_modules`: the task's head (e.g. pooler + classifier), trained in full where the model has them.
    `new_token_ids`: rows of the input embeddings for tokens the run added, trained as well (_train_new_tokens)."""
    names = [name for name, _ in model.named_modules()]
    heads = [n for h in head_modules for n in names if n == h or n.endswith("." + h)]
    tied = _embedding_weights(model)
    parts = [p for m in dict.fromkeys([*fresh_modules, *heads]) for p in _untied_parts(model, m, tied)]
    # Keep the outermost: a module already inside another listed one adds nothing.
    parts = [p for p in dict.fromkeys(parts) if not any(p.startswith(q + ".") for q in parts)]
    to_save = list(dict.fromkeys([*pcfg.get("modules_to_save", []), *parts]))
    config, what = PEFT_METHODS.get(pcfg.name).build(model, pcfg, list(to_save), task_type)  # peft extends it
    if config is None:
        return model
    if new_token_ids:
        what += _train_new_tokens(model, config, pcfg, list(new_token_ids))
    from peft import get_peft_model

    from hfx.saved_adapters import prepare_generation, quiet_peft

    with quiet_peft():
        model = get_peft_model(model, config)

    prepare_generation(model)
    trainable, total = model.get_nb_trainable_parameters()  # what print_trainable_parameters reports
    log.info("%s; trained in full: %s; trainable %.2fM of %.2fM parameters (%.2f%%)", what,
             ",".join(to_save) or "none", trainable / 1e6, total / 1e6, 100 * trainable / total)
    return model


def _train_new_tokens(model: Any, config: Any, pcfg: DictConfig, ids: list[int]) -> str:
    """The embedding rows of added tokens train under PEFT: LoRA trains those rows alone (peft's
    trainable_token_indices; every other row stays bit-identical and merges back exactly); methods without it train
    the input embeddings in full; prompt learning keeps the embeddings frozen, so it is refused."""
    from hfx.special_tokens import plural

    # Each checkpoint (and an adapter kept separate) then carries the resized embeddings, as it must; peft warns
    # about it on every save. Loading a separate adapter grows its base's embeddings first (load_adapter).
    warnings.filterwarnings("ignore", message=".*save_embedding_layers.*resized", category=UserWarning)
    if hasattr(config, "trainable_token_indices"):
        config.trainable_token_indices = ids
        return f"; the embedding rows of {plural(len(ids), 'new token')} trained"
    if not PEFT_METHODS.get(pcfg.name).merges:
        raise HfxError(f"tokenizer.add_tokens / tokenizer.special_tokens: peft={pcfg.name} keeps the embeddings frozen, "
                       f"so the {len(ids)} added tokens would never train; use peft=lora (or peft=none)")
    emb = model.get_input_embeddings()
    name = next(n for n, m in model.named_modules() if m is emb)
    config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), name]))
    return f"; input embeddings trained in full for {plural(len(ids), 'new token')}"


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
def no_peft(model: Any, pcfg: DictConfig, train_in_full: list[str], task_type: str | None) -> tuple[None, str]:
    return None, "full fine-tuning"


def _leaf_names(model: Any) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                   if name and type(mod).__name__ in ("Linear", "Conv1D", "Embedding")})


def _targets(model: Any, given: Any, default: tuple[str, ...], key: str = "peft.target_modules") -> list[str]:
    """Module names to adapt: `given`, else the architecture's default; each must name a module of the model."""
    targets = list(given) or list(default)
    if not targets:
        raise HfxError(f"{key}: no default for model type '{model.config.model_type}'; "
                       f"name some of: {', '.join(_leaf_names(model)[:12])}")
    module_names = [name for name, _ in model.named_modules()]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in module_names):
            raise HfxError(f"{key}: the model has no module '{t}'; it has e.g. {', '.join(_leaf_names(model)[:12])}")
    return targets


def _record(model: Any) -> Any:
    from hfx.architectures import architecture

    # A warm-started EncoderDecoderModel (model_type encoder-decoder) takes its encoder's family: bert2bert -> bert.
    encoder = getattr(model.config, "encoder", None) if model.config.model_type == "encoder-decoder" else None
    return architecture(encoder.model_type if encoder is not None else model.config.model_type)


def _positive(pcfg: DictConfig, *keys: str) -> None:
    for key in keys:
        if pcfg[key] < 1:
            raise HfxError(f"peft.{key}: expected a positive number, got {pcfg[key]}")


def _probability(pcfg: DictConfig, *keys: str) -> None:
    for key in keys:
        if not 0 <= pcfg[key] < 1:
            raise HfxError(f"peft.{key}: expected a probability in [0, 1), got {pcfg[key]}")


def check_lora(pcfg: DictConfig) -> None:
    """peft checks these only when it wraps the model, after the model is loaded: checked when composing instead."""
    if pcfg.r < 1:
        raise HfxError(f"peft.r: expected a positive rank, got {pcfg.r}")
    _probability(pcfg, "dropout")
    if pcfg.bias not in LORA_BIAS:
        raise HfxError(f"peft.bias: expected one of {', '.join(LORA_BIAS)}, got '{pcfg.bias}'")


def lora(model: Any, pcfg: DictConfig, train_in_full: list[str], task_type: str | None) -> tuple[Any, str]:
    record = _record(model)
    targets = _targets(model, pcfg.target_modules, record.lora_targets if record else ())
    from peft import LoraConfig

    config = LoraConfig(r=pcfg.r, lora_alpha=pcfg.alpha, lora_dropout=pcfg.dropout, target_modules=targets,
                        modules_to_save=train_in_full or None, bias=pcfg.bias, use_dora=pcfg.use_dora,
                        task_type=task_type)
    return config, f"{'DoRA' if pcfg.use_dora else 'LoRA'} r={pcfg.r} on {','.join(targets)}"


peft_method("lora", LoraSettings, check_lora)(lora)
peft_method("dora", DoraSettings, check_lora)(lora)


@peft_method("ia3", IA3Settings)
def ia3(model: Any, pcfg: DictConfig, train_in_full: list[str], task_type: str | None) -> tuple[Any, str]:
    record = _record(model)
    targets = _targets(model, pcfg.target_modules, record.ia3_targets if record else ())
    feedforward = list(pcfg.feedforward_modules) or [f for f in (record.ia3_feedforward if record else ())
                                                     if f in targets]
    for f in feedforward:
        if f not in targets:
            raise HfxError(f"peft.feedforward_modules: '{f}' is not one of peft.target_modules ({', '.join(targets)})")
    from peft import IA3Config

    config = IA3Config(target_modules=targets, feedforward_modules=feedforward,
                       modules_to_save=train_in_full or None, task_type=task_type)
    return config, f"IA3 on {','.join(targets)} (feed-forward: {','.join(feedforward) or 'none'})"


def check_loha(pcfg: DictConfig) -> None:
    _positive(pcfg, "r", "alpha")
    _probability(pcfg, "rank_dropout", "module_dropout")


@peft_method("loha", LohaSettings, check_loha)
def loha(model: Any, pcfg: DictConfig, train_in_full: list[str], task_type: str | None) -> tuple[Any, str]:
    import torch

    record = _record(model)
    targets = _targets(model, pcfg.target_modules, record.lora_targets if record else ())
    for name, module in model.named_modules():
        if any(name == t or name.endswith("." + t) for t in targets) and not isinstance(
                module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            raise HfxError(f"peft.target_modules: LoHa adapts Linear and Conv layers only, and '{name}' is a "
                           f"{type(module).__name__} (use peft=lora or peft=ia3 for {model.config.model_type})")
    from peft import LoHaConfig

    config = LoHaConfig(r=pcfg.r, alpha=pcfg.alpha, rank_dropout=pcfg.rank_dropout,
                        module_dropout=pcfg.module_dropout, target_modules=targets,
                        modules_to_save=train_in_full or None, task_type=task_type)
    return config, f"LoHa r={pcfg.r} on {','.join(targets)}"


def _prompt_learning_supported(model: Any, task_type: str | None, method: str) -> None:
    """Where hfx runs prompt learning: its virtual tokens shift every per-token output (token classification, QA
    spans), seq2seq generation through them is untested, and a decoder classifier reading the last position cannot
    find the padding behind them."""
    if task_type is None:
        raise HfxError(f"peft={method}: peft prepends virtual tokens only for the tasks it knows (classification, "
                       "QA, causal LM, seq2seq); this task has none: use peft=lora")
    record = _record(model)
    if task_type not in ("SEQ_CLS", "CAUSAL_LM") or (task_type == "SEQ_CLS" and record and record.shape == DECODER):
        raise HfxError(f"peft={method}: hfx runs it for sequence classification with an encoder and for causal "
                       f"language models, not for this task with {model.config.model_type} (the virtual tokens "
                       "shift its per-token outputs or padding); use peft=lora")


def check_prefix(pcfg: DictConfig) -> None:
    _positive(pcfg, "num_virtual_tokens")


@peft_method("prefix_tuning", PrefixTuningSettings, check_prefix, merges=False, task_types=("CAUSAL_LM",),
             runs_for="causal language models (task=causal_lm, sft)")
def prefix_tuning(model: Any, pcfg: DictConfig, train_in_full: list[str], task_type: str | None
                  ) -> tuple[Any, str]:
    _prompt_learning_supported(model, task_type, "prefix_tuning")
    # peft hands the prefix over as past key values, which encoders (and heads other than an LM's) do not take.
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), model)
    if task_type != "CAUSAL_LM" and not any("past_key_values" in inspect.signature(m.forward).parameters
                                            for m in (model, backbone)):
        raise HfxError(f"peft=prefix_tuning: {type(model).__name__} takes no past key values, through which peft "
                       "feeds the prefix; hfx runs it for causal language models (task=causal_lm, sft): use "
                       "peft=prompt_tuning or peft=lora here")
    if task_type != "CAUSAL_LM":  # seq2seq: peft's prefix reaches the decoder only, and generation is not fixed
        raise HfxError("peft=prefix_tuning: hfx runs it for causal language models (task=causal_lm, sft); use "
                       "peft=prompt_tuning or peft=lora here")
    from peft import PrefixTuningConfig

    extra = {"encoder_hidden_size": pcfg.encoder_hidden_size} if pcfg.encoder_hidden_size else {}
    config = PrefixTuningConfig(num_virtual_tokens=pcfg.num_virtual_tokens, prefix_projection=pcfg.prefix_projection,
                                modules_to_save=train_in_full or None, task_type=task_type, **extra)
    return config, f"prefix tuning: {pcfg.num_virtual_tokens} virtual tokens"


def check_prompt(pcfg: DictConfig) -> None:
    _positive(pcfg, "num_virtual_tokens")
    if pcfg.init not in PROMPT_INITS:
        raise HfxError(f"peft.init: expected one of {', '.join(PROMPT_INITS)}, got '{pcfg.init}'")


@peft_method("prompt_tuning", PromptTuningSettings, check_prompt, merges=False, task_types=("SEQ_CLS", "CAUSAL_LM"),
             runs_for="sequence classification with an encoder and causal language models (task="
                      "sequence_classification, causal_lm, sft)")
def prompt_tuning(model: Any, pcfg: DictConfig, train_in_full: list[str], task_type: str | None
                  ) -> tuple[Any, str]:
    _prompt_learning_supported(model, task_type, "prompt_tuning")
    from peft import PromptTuningConfig

    config = PromptTuningConfig(num_virtual_tokens=pcfg.num_virtual_tokens, prompt_tuning_init=pcfg.init.upper(),
                                modules_to_save=train_in_full or None, task_type=task_type)
    return config, f"prompt tuning: {pcfg.num_virtual_tokens} virtual tokens ({pcfg.init} init)"


def merge_for_saving(model: Any, pcfg: DictConfig) -> Any:
    """The model to save: merged into the base weights where the method merges and peft.merge_on_save is on;
    otherwise the adapter kept separate (SeparateAdapter)."""
    if not hasattr(model, "peft_config"):
        return model
    if PEFT_METHODS.get(pcfg.name).merges and pcfg.merge_on_save:
        # peft's IA3 / LoHa merge fails on a module trained in full that has no `weight` (BertPooler): each trained
        # copy takes its wrapper's place first.
        from peft.utils import ModulesToSaveWrapper

        base = model.get_base_model()
        for name, module in list(base.named_modules()):
            if isinstance(module, ModulesToSaveWrapper):
                parent, _, attr = name.rpartition(".")
                setattr(base.get_submodule(parent), attr, module.modules_to_save[model.active_adapter])
        return model.merge_and_unload()
    from hfx.saved_adapters import SeparateAdapter

    return SeparateAdapter(model)
