"""A PEFT model kept separate from its base (prefix and prompt tuning always, other methods with
peft.merge_on_save=false): saved as peft saves it plus what loading needs, loaded again for `hfx predict` /
`hfx evaluate`; and generation from prompt-learning models made to work."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hfx.errors import HfxError

# A separate adapter over a model built from scratch keeps that base beside it (there is no checkpoint to name).
BASE_DIR = "base"


@dataclass
class SeparateAdapter:
    """Saves a PEFT model as peft does (adapter_config.json, adapter_model.safetensors: the adapter and the modules
    trained in full) plus the base model's config.json; a base built from scratch is saved in base/ as well.
    `load_adapter` reads it back."""

    model: Any

    def save_pretrained(self, directory: str) -> None:
        self.model.save_pretrained(directory)
        base = self.model.get_base_model()
        base.config.save_pretrained(directory)
        if getattr(base, "generation_config", None) is not None and base.can_generate():
            base.generation_config.save_pretrained(directory)  # the run's generation defaults
        if not getattr(base, "name_or_path", ""):
            base.save_pretrained(str(Path(directory) / BASE_DIR), state_dict=_base_state_dict(self.model))


def _base_state_dict(model: Any) -> dict[str, Any]:
    """The base model's own weights, as before PEFT: no adapter weights, no trained copies of modules_to_save, and
    wrapped layers under their own names again."""
    prefix = getattr(model.base_model, "prefix", None)  # lora_, hada_, ia3_ (None for prompt learning)
    out = {}
    for key, value in model.get_base_model().state_dict().items():
        parts = key.split(".")
        if "modules_to_save" in parts or (prefix and any(p.startswith(prefix) for p in parts)):
            continue
        out[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = value
    return out


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated `is_gradient_checkpointing` alias whenever it wraps a model: not the
    user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def has_adapter(model_dir: Path) -> bool:
    return (model_dir / "adapter_config.json").is_file()


def load_adapter(auto_class: Any, model_dir: Path, mcfg: DictConfig) -> Any:
    """A model saved by SeparateAdapter: its base (base/, else the run's model.name_or_path) with the run's model
    config, and the adapter on top, in evaluation mode."""
    from peft import PeftModel
    from transformers import AutoConfig

    from hfx.model import without_records

    config = AutoConfig.from_pretrained(str(model_dir))
    base_dir = model_dir / BASE_DIR
    source = str(base_dir) if base_dir.is_dir() else mcfg.name_or_path
    revision = None if base_dir.is_dir() else mcfg.revision
    try:
        # Tokens the run added (tokenizer.add_tokens / special_tokens): the saved config counts their rows, the
        # pretrained base does not; load the base at its own size and grow it, the adapter holds the trained rows.
        vocab = getattr(config, "vocab_size", None)
        base_vocab = None if base_dir.is_dir() else getattr(AutoConfig.from_pretrained(
            source, revision=revision, trust_remote_code=mcfg.trust_remote_code), "vocab_size", None)
        grown = vocab is not None and base_vocab is not None and vocab > base_vocab
        if grown:
            config.vocab_size = base_vocab
        # New heads are missing from a pretrained base: the adapter holds their trained weights.
        with without_records("transformers.modeling_utils", "LOAD REPORT"):
            base = auto_class.from_pretrained(source, config=config, revision=revision, use_safetensors=True,
                                              trust_remote_code=mcfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise HfxError(f"model.name_or_path: cannot load '{source}', the base model of the adapter in {model_dir} "
                       f"({str(e).splitlines()[0]})") from e
    if grown:
        base.resize_token_embeddings(vocab, mean_resizing=False)
    if (model_dir / "generation_config.json").is_file():
        from transformers import GenerationConfig

        base.generation_config = GenerationConfig.from_pretrained(str(model_dir))
    with quiet_peft():
        model = PeftModel.from_pretrained(base, str(model_dir))
    prepare_generation(model)
    return model.eval()


def prepare_generation(model: Any) -> None:
    """Generation from a prompt-learning model, as its forward computes. peft 0.21 hands prompts and prefixes to
    generate() under the cache's old name (past_key_values) while transformers 5 passes its own `cache`: measured, a
    prefix was ignored and prompts were prepended again after the first new token; and peft drops position ids, so a
    left-padded row (GPT-2's absolute positions) continued differently from the same row alone. So such a model
    generates without a KV cache, every step a full forward with the prompts or prefix in front of the text, at the
    positions training used (virtual tokens 0..n-1, then the text, padding skipped)."""
    config = model.active_peft_config if hasattr(model, "active_peft_config") else None
    base = model.get_base_model() if config is not None else None
    if config is None or not config.is_prompt_learning or config.task_type != "CAUSAL_LM":
        return
    import torch

    base.generation_config.use_cache = False
    n = config.num_virtual_tokens

    def step_inputs(input_ids: Any, attention_mask: Any = None, **_: Any) -> dict[str, Any]:
        rows = input_ids.shape[0]
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        mask = torch.cat([torch.ones(rows, n, dtype=mask.dtype, device=mask.device), mask], 1)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        if config.peft_type == "PREFIX_TUNING":  # the prefix sits in the cache, the text after it
            return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions[:, n:],
                    "past_key_values": model.get_prompt(rows), "use_cache": False}
        embeds = model.word_embeddings(input_ids)
        prompts = model.get_prompt(batch_size=rows).to(embeds.dtype)
        return {"inputs_embeds": torch.cat([prompts, embeds], 1), "attention_mask": mask, "position_ids": positions,
                "use_cache": False}

    model.prepare_inputs_for_generation = step_inputs  # peft's generate() hands this to the base model
