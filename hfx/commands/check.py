"""`hfx check [overrides]`, also `hfx train --dry-run [overrides]`: the config composed and validated, a few
training rows through the task's preprocessing and collator as the model will see them, the model's parameter
counts (built on the meta device: no weights are loaded), and the exact launch command. Nothing is trained and no
run directory is made; only the caches (a trained tokenizer, downloaded data) are written, and the run reuses them."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hfx.errors import HfxError, UsageError

ROWS = 3
SHOWN = 48  # values shown per sequence; the rest is counted
MAX_SAMPLE = 4096  # raw rows read at most to fill ROWS features (causal LM packs many rows into one block)


def main(args: list[str]) -> None:
    from hfx.commands.train import MULTIRUN_FLAGS
    from hfx.config.compose import check_composed, validate
    from hfx.distributed import is_main_process

    if {"--help", "-h"} & set(args):
        print(__doc__)
        return
    sweep = bool(set(args) & MULTIRUN_FLAGS)
    cfg = validate("train", args, check_composed, sweep=sweep)
    try:
        sample = sample_rows(cfg)
        model, fresh = meta_model(cfg, sample)
        batch = collate(cfg, sample, model)
    except HfxError as e:  # found by the check, before anything ran: a refusal, like a config error
        raise UsageError(str(e)) from e
    if not is_main_process():
        return
    lines = [f"hfx check: {cfg.experiment_name} ({cfg.task.name}): config composed and validated"
             + (" (each sweep's first value)" if sweep else ""),
             f"data       {len(sample.raw['train'])} train / {len(sample.raw['eval'])} eval rows"
             + (f"; labels: {', '.join(map(str, sample.labels))}" if sample.labels else ""),
             *(f"           {op}" for op in sample.ops),  # what each data operation did (hfx/dataops.py)
             f"tokenizer  {type(sample.tokenizer).__name__}, {len(sample.tokenizer)} tokens, "
             f"max_length {cfg.tokenizer.max_length}",
             "",
             f"{len(batch['input_ids'])} training rows as the model sees them (preprocessed and collated; -100 = masked "
             "out of the loss):"]
    lines += show_batch(batch, sample.tokenizer, sample.labels)
    lines += ["", *show_model(model, cfg, fresh), "", f"launch     {launch_command(args)}"]
    print("\n".join(lines), flush=True)


@dataclass
class Sample:
    """The run's task, tokenizer and labels (from the whole training split, as the run makes them) and the first
    training rows through the task's preprocessing."""

    task: Any
    settings: Any
    raw: Any
    tokenizer: Any
    labels: list[str] | None
    features: Any
    ops: tuple[str, ...] = ()  # the data operations' log lines


def sample_rows(cfg: DictConfig) -> Sample:
    """`stages.prepare_data`'s steps, but only the first rows are tokenized (and not cached): the tokenizer and
    the labels still come from the whole training split, so vocabulary, label set and parameter counts are the run's."""
    import datasets

    from hfx.data import load_splits
    from hfx.dataops import filter_tokens, recorded
    from hfx.streaming import sample as stream_sample
    from hfx.tasks import TASKS, task_settings
    from hfx.tokenizer import build_tokenizer

    datasets.disable_progress_bars()  # a few rows: a bar per split would only clutter the report
    task = TASKS.get(cfg.task.name)
    settings = task_settings(cfg, task)
    with recorded() as ops:
        raw = load_splits(cfg.dataset, cfg.trainer.seed, columns=settings.columns)
        raw = stream_sample(raw, cfg.dataset)  # a streamed train split: its first dataset.stream_head rows
        task.validate_data(raw, settings)
        tokenizer = build_tokenizer(cfg.tokenizer, cfg.model, lambda: task.training_texts(raw["train"], settings),
                                    cfg.cache_dir, raw["train"]._fingerprint)
        raw = filter_tokens(raw, cfg.dataset, tokenizer, settings.columns)
    labels = task.label_names(raw, settings)
    features = first_features(task, raw["train"], tokenizer, settings, labels)
    return Sample(task, settings, raw, tokenizer, labels, features, tuple(ops))


def first_features(task: Any, train: Any, tokenizer: Any, settings: Any, labels: list[str] | None) -> Any:
    """ROWS training examples from the fewest leading raw rows that give them (a language model packs many rows
    into one block, and may refuse a sample shorter than one block: then more rows are read)."""
    n = ROWS
    while True:
        rows = train.select(range(min(n, len(train))))
        try:
            features = task.preprocess(rows, tokenizer, settings, labels, True)
        except HfxError:
            if len(rows) == len(train):
                raise
            features = []
        if len(features) >= ROWS or len(rows) == len(train) or (len(features) and n >= MAX_SAMPLE):
            break
        n *= 4
    if len(features) == 0:
        raise HfxError("dataset: the training split gives no training example after the task's preprocessing "
                       f"(tokenizer.max_length={settings.max_length})")
    return features.select(range(min(ROWS, len(features))))


def meta_model(cfg: DictConfig, sample: Sample) -> tuple[Any, list[str]]:
    """The run's model and PEFT wrapper built on the meta device: shapes and parameter counts without weights.
    Weights the checkpoint lacks (new heads) are read from its key list, since apply_peft trains them in full."""
    import torch

    from hfx.adapters import apply_peft
    from hfx.freezing import apply_freeze
    from hfx.model import load_config
    from hfx.special_tokens import fit_embeddings, new_token_ids

    task = sample.task
    config = load_config(cfg.model, sample.tokenizer, task.model_kwargs(sample.labels))
    task.check_model(config, sample.settings)
    remote = {"trust_remote_code": True} if cfg.model.trust_remote_code else {}
    with torch.device("meta"):
        model = task.auto_model_class().from_config(config, **remote)
    fresh = fresh_modules(model, cfg.model) if cfg.model.name_or_path else []
    fit_embeddings(model, sample.tokenizer)  # rows for tokenizer.add_tokens / special_tokens
    model = apply_peft(model, cfg.peft, fresh, task.peft_task_type, task.head_modules,
                       new_token_ids(sample.tokenizer))
    apply_freeze(model, cfg.freeze, task.head_modules, fresh)
    return model, fresh


def checkpoint_keys(name_or_path: str, revision: str | None) -> set[str] | None:
    """Tensor names in a checkpoint's safetensors files, read from their headers only (None when unknown)."""
    import json

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            return set(json.loads(index.read_text())["weight_map"])
        single = path / "model.safetensors"
        if not single.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return set(f.keys())
    try:
        from huggingface_hub import get_safetensors_metadata

        return set(get_safetensors_metadata(name_or_path, revision=revision).weight_map)
    except Exception:  # offline, no safetensors, gated: the counts then assume the checkpoint has every weight
        return None


def fresh_modules(model: Any, mcfg: DictConfig, source: str | None = None) -> list[str]:
    """Modules whose parameters the checkpoint does not hold (as from_pretrained's missing keys)."""
    if mcfg.decoder_name_or_path and source is None:  # a warm-started EncoderDecoderModel: each half, its checkpoint
        halves = (("encoder", mcfg.name_or_path), ("decoder", mcfg.decoder_name_or_path))
        return [f"{side}.{m}" for side, path in halves for m in fresh_modules(getattr(model, side), mcfg, path)]
    keys = checkpoint_keys(source or mcfg.name_or_path, mcfg.revision)
    if keys is None:
        return []
    names = [name for name, _ in model.named_parameters()]
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and any(n.startswith(prefix + ".") for n in names) and not any(k.startswith(prefix + ".") for k in keys):
        keys = {f"{prefix}.{k}" for k in keys}  # a base-model checkpoint loaded into a model with a head
    return sorted({n.rsplit(".", 1)[0] for n in names if n not in keys})


def collate(cfg: DictConfig, sample: Sample, model: Any) -> dict[str, Any]:
    """The rows through the task's collator (padding, masking, shifted labels), as the Trainer batches them."""
    import inspect

    from transformers import set_seed

    set_seed(cfg.trainer.seed)
    # The Trainer drops columns the model's forward does not take (e.g. `length`, kept for length grouping).
    keep = set(inspect.signature(base_model(model).forward).parameters) | {"label", "labels", "label_ids"}
    if not cfg.trainer.extra.get("remove_unused_columns", True):
        keep = set(sample.features.column_names)
    rows = [{k: v for k, v in sample.features[i].items() if k in keep} for i in range(len(sample.features))]
    return dict(sample.task.collator(sample.tokenizer, model, sample.settings)(rows))


def show_batch(batch: dict[str, Any], tokenizer: Any, labels: list[str] | None) -> list[str]:
    lines = []
    width = max(len(k) for k in [*batch, "tokens"]) + 2
    for i in range(len(batch["input_ids"])):
        lines.append(f"row {i}")
        for key, value in batch.items():
            row = value[i].tolist() if hasattr(value[i], "tolist") else value[i]
            if key.endswith("input_ids"):
                tokens = tokenizer.convert_ids_to_tokens(row)
                lines.append(f"  {key.replace('input_ids', 'tokens'):<{width}}{_capped(tokens)}")
            lines.append(f"  {key:<{width}}{_capped(row)}")
            if key == "labels":
                decoded = _label_text(row, tokenizer, labels)
                if decoded:
                    lines.append(f"  {'labels as':<{width}}{decoded}")
            if key == "end_positions" and "start_positions" in batch:  # extractive QA: the answer span
                start = int(batch["start_positions"][i])
                span = tokenizer.decode(batch["input_ids"][i][start:row + 1]) if start or row else ""
                lines.append(f"  {'answer':<{width}}{span!r}" + ("" if start or row else " (none: [CLS])"))
    return lines


def _label_text(row: Any, tokenizer: Any, labels: list[str] | None) -> str:
    """A class name for a sequence label; label names or tokens for per-token labels, masked runs collapsed."""
    from hfx.labels import IGNORE_INDEX

    if not isinstance(row, list):
        return labels[row] if labels and isinstance(row, int) and 0 <= row < len(labels) else ""
    if not all(isinstance(v, int) for v in row):
        return ""  # not ids (e.g. scores)
    out: list[str] = []
    masked = 0
    for v in [*row, None]:
        if v == IGNORE_INDEX:
            masked += 1
            continue
        if masked:
            out.append(f"<masked x{masked}>" if masked > 1 else "<masked>")
            masked = 0
        if v is not None:
            out.append(labels[v] if labels else tokenizer.convert_ids_to_tokens(v))
    return _capped(out)


def _capped(values: Any) -> str:
    if not isinstance(values, list):
        return str(values)
    shown = " ".join(str(v) for v in values[:SHOWN])
    return shown + (f" ... (+{len(values) - SHOWN} more)" if len(values) > SHOWN else "")


def show_model(model: Any, cfg: DictConfig, fresh: list[str]) -> list[str]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = base_model(model)
    source = cfg.model.name_or_path or f"{cfg.model.architecture}, from scratch"
    lines = [f"model      {type(base).__name__} ({source}), built on the meta device: no weights loaded",
             f"parameters {total:,} total, {trainable:,} trainable ({100 * trainable / max(total, 1):.2f}%), "
             f"peft={cfg.peft.name}"]
    outermost = [m for m in fresh if not any(m.startswith(f"{o}.") for o in fresh)]
    if outermost:
        lines.append(f"fresh      {', '.join(outermost)} (not in the checkpoint: initialised and trained in full)")
    return lines


def base_model(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def launch_command(args: list[str]) -> str:
    """The command that runs this config: `hfx train <args>`, or the launcher's own line under a multi-process
    launch (accelerate launch / torchrun), as it was typed."""
    from hfx.distributed import world_size

    command = shlex.join(["hfx", "train", *args])
    if world_size() <= 1:
        return command
    import psutil

    launcher = psutil.Process(os.getppid()).cmdline()
    # [python, .../accelerate, launch, ...] or [.../torchrun, ...]: the tool by its name, then its arguments.
    start = next((i for i, a in enumerate(launcher) if Path(a).name in ("accelerate", "torchrun")), None)
    if start is None:
        return command
    rest = [a for a in launcher[start + 1:] if a != "--dry-run"]
    if "hfx" in rest and rest[rest.index("hfx") + 1:rest.index("hfx") + 2] == ["check"]:
        rest[rest.index("hfx") + 1] = "train"
    return shlex.join([Path(launcher[start]).name, *rest])
