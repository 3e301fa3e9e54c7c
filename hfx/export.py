"""A finished run's model as a standalone folder (safetensors, tokenizer, label names, a model card), verified: the
folder, loaded back with the task's plain transformers Auto class and with `transformers.pipeline`, must give the
logits the trained model gives on the run's own evaluation rows, within a stated tolerance."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfx.errors import HfxError, UsageError
from hfx.stages import TASK_FILE

DTYPES = ("float32", "bfloat16", "float16")
# The default tolerance on the largest |exported - trained| logit: this fraction of the largest |logit| the trained
# model gives on the sample (taken as at least 1). float32 should reproduce the run to rounding; half precisions
# keep 8 (bfloat16) or 11 (float16) significant bits, and their rounding adds up over the layers. Measured (the
# 6-layer MiniLM with LoRA merged, the 2-layer test GPT-2): float16 differs by 0.06-0.08% of the largest logit,
# bfloat16 by 0.4%, so these bounds leave a margin of about 5x (float16) and 8x (bfloat16).
RELATIVE_TOLERANCE = {"float32": 1e-5, "float16": 1 / 256, "bfloat16": 1 / 32}
BATCH_SIZE = 8
ADAPTER_FILE = "adapter_config.json"
REPORT_FILE = "hfx_export.json"


@dataclass
class Parity:
    """The check's result: what was compared, on how many rows, and the largest difference against the tolerance."""

    dtype: str
    rows: int
    max_abs_diff: float = 0.0
    largest_logit: float = 0.0
    tolerance: float = 0.0
    tolerance_rule: str = ""
    loaders: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def line(self) -> str:
        return (f"max abs logit difference {self.max_abs_diff:.3g}, tolerance {self.tolerance:.3g} "
                f"({self.tolerance_rule}); {self.dtype}, {self.rows} evaluation rows, {' and '.join(self.loaders)}")


# ------------------------------------------------------------------------------------------------ the request


def adapter_config(model_dir: Path) -> dict[str, Any] | None:
    """The run's saved adapter (peft.merge_on_save=false), or None when the run saved a full model."""
    path = model_dir / ADAPTER_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_prompt_learning(adapter: dict[str, Any]) -> bool:
    """Prefix / prompt / p-tuning adapters add virtual tokens instead of changing weights: nothing to merge."""
    from peft import PeftConfig

    return bool(PeftConfig.from_peft_type(**{k: v for k, v in adapter.items() if k == "peft_type"}).is_prompt_learning)


def check_request(run: Any, out: Path, merge: bool, dtype: str, tolerance: float | None, rows: int,
                  overwrite: bool) -> None:
    """Everything about the request that can be refused before a model is loaded (UsageError: exit 2)."""
    if dtype not in DTYPES:
        raise UsageError(f"dtype: expected one of {', '.join(DTYPES)}, got '{dtype}'")
    if tolerance is not None and not (tolerance >= 0 and math.isfinite(tolerance)):
        raise UsageError(f"tolerance: expected a non-negative number (the largest logit difference allowed), got "
                         f"{tolerance}")
    if rows < 1:
        raise UsageError(f"rows: expected a positive number of evaluation rows to check, got {rows}")
    if out.exists() and not overwrite:
        raise UsageError(f"out={out}: already exists; choose another out=<dir>, or overwrite=true to replace it")
    if out.resolve() == run.path.resolve() or out.resolve() == run.model_dir.resolve():
        raise UsageError(f"out={out}: that is the run itself; name a new folder")
    adapter = adapter_config(run.model_dir)
    if adapter is None:
        return
    if merge and is_prompt_learning(adapter):
        raise UsageError(f"merge=true: the run's {adapter.get('peft_type')} adapter adds virtual tokens and has no "
                         "weights to merge into the model; export it as an adapter with merge=false")
    if not merge and dtype != "float32":
        raise UsageError(f"dtype={dtype}: an adapter export (merge=false) keeps the run's adapter and base as they "
                         "are; cast with merge=true, or leave dtype=float32")


# ------------------------------------------------------------------------------------------------ the sample


def parity_batches(run: Any, model: Any, rows: int) -> list[dict[str, Any]]:
    """Up to `rows` of the run's evaluation rows, tokenized the way the run does (its cached features) and collated
    by the task's own collator, in batches of the columns the model's forward takes."""
    import inspect

    from hfx.stages import prepare_data

    data = prepare_data(run.cfg, tokenizer=run.tokenizer(), labels=run.labels, eval_only=True)
    features = data.features["eval"]
    features = features.select(range(min(rows, len(features))))
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    accepted = set(inspect.signature(base.forward).parameters) | {"label", "label_ids"}
    features = features.remove_columns([c for c in features.column_names if c not in accepted])
    collate = run.task.collator(data.tokenizer, model, data.settings)
    return [collate([features[i] for i in range(start, min(start + BATCH_SIZE, len(features)))])
            for start in range(0, len(features), BATCH_SIZE)]


def logits_of(output: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """Every *logits tensor of a model output (QA: start and end), as float32, padding positions left out."""
    import torch

    masks = [batch.get("attention_mask"), batch.get("decoder_attention_mask")]
    if batch.get("labels") is not None and getattr(batch["labels"], "ndim", 0) == 2:
        masks.append(batch["labels"] != -100)
    found = {}
    for key, value in output.items():
        if not key.endswith("logits") or not torch.is_tensor(value):
            continue
        value = value.detach().float()
        mask = next((m for m in masks if m is not None and value.ndim >= 3 and m.shape == value.shape[:2]), None)
        found[key] = value[mask.bool()] if mask is not None else value
    if not found:
        raise HfxError(f"export: the model's output has no logits to compare (it has {', '.join(output.keys())})")
    return found


def compare(reference: Any, candidate: Any, batches: list[dict[str, Any]]) -> tuple[float, float]:
    """(largest |candidate - reference| logit, largest |reference| logit) over the batches."""
    import torch

    worst, largest = 0.0, 0.0
    with torch.inference_mode():
        for batch in batches:
            ref = logits_of(reference(**batch), batch)
            got = logits_of(candidate(**batch), batch)
            for key, value in ref.items():
                if key not in got or got[key].shape != value.shape:
                    raise HfxError(f"export: the exported model's {key} have shape "
                                   f"{tuple(got[key].shape) if key in got else 'none'}, the trained model's "
                                   f"{tuple(value.shape)}")
                worst = max(worst, float((got[key] - value).abs().max()) if value.numel() else 0.0)
                largest = max(largest, float(value.abs().max()) if value.numel() else 0.0)
    return worst, largest


# ------------------------------------------------------------------------------------------------ the export


def model_to_save(run: Any, dtype: str) -> Any:
    """The trained model as the run loader gives it, its adapter (if any) merged into the weights, cast to `dtype`,
    label names in its config."""
    import torch

    model = run.model()
    if hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    labels = run.labels
    if labels and getattr(model.config, "num_labels", None) == len(labels):
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {name: i for i, name in enumerate(labels)}
    return model


def write_model(run: Any, target: Path, merge: bool, dtype: str) -> None:
    """The model files: merged (and cast), or, for merge=false on a run that kept its adapter separate, that
    adapter as the run saved it (its config, its base model's config, and base/ for a base built from scratch)."""
    import shutil

    if adapter_config(run.model_dir) is not None and not merge:
        shutil.copytree(run.model_dir, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(TASK_FILE, "README.md"))
        return
    model_to_save(run, dtype).save_pretrained(str(target))
    run.tokenizer().save_pretrained(str(target))


def load_exported(run: Any, path: Path) -> Any:
    """The exported folder loaded as its model card says: the task's Auto class; an adapter folder through peft onto
    its base (base/ for a base built from scratch, else the run's model.name_or_path) with the folder's config."""
    auto = run.task.auto_model_class()
    if adapter_config(path) is None:
        return auto.from_pretrained(str(path), use_safetensors=True).eval()
    from peft import PeftModel
    from transformers import AutoConfig

    source = str(path / "base") if (path / "base").is_dir() else run.cfg.model.name_or_path
    base = auto.from_pretrained(source, config=AutoConfig.from_pretrained(str(path)), use_safetensors=True)
    from hfx.saved_adapters import quiet_peft

    with quiet_peft():
        return PeftModel.from_pretrained(base, str(path)).eval()


def pipeline_of(run: Any, path: Path, model: Any) -> Any:
    """transformers.pipeline on the exported folder (an adapter export: on the model peft loaded from it, as
    `hfx predict` serves such a run)."""
    from transformers import pipeline

    from hfx.pipelines import register

    register(run.pipeline)
    return pipeline(run.pipeline, model=str(path) if adapter_config(path) is None else model, tokenizer=str(path))


def sample_input(run: Any) -> Any:
    """The first row of the run's predictions.jsonl as the pipeline takes it: its text fields (input, prompt,
    question and context, ...) without the reference and prediction; None when there is none."""
    from hfx.commands.predict import pipeline_input

    path = run.path / "predictions.jsonl"
    line = next((x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()), "") if path.is_file() else ""
    row = json.loads(line) if line else {}
    record = {k: v for k, v in row.items()
              if isinstance(v, str) and v and k not in ("id", "reference", "prediction", "generated")}
    try:
        return pipeline_input(run.task, record) if record else None
    except HfxError:  # the rows of this task do not hold the pipeline's fields
        return None


def check_parity(run: Any, path: Path, reference: Any, batches: list[dict[str, Any]], dtype: str,
                 tolerance: float | None, rows: int) -> Parity:
    """The exported folder loaded with the task's Auto class and with pipeline(), each compared with the trained
    model; the pipeline also serves one of the run's inputs end to end."""
    parity = Parity(dtype=dtype, rows=rows)
    loaded = load_exported(run, path)
    pipe = pipeline_of(run, path, loaded)
    for name, model in ((run.task.auto_model_class().__name__, loaded), (f"pipeline('{run.pipeline}')", pipe.model)):
        worst, largest = compare(reference, model.eval(), batches)
        parity.max_abs_diff = max(parity.max_abs_diff, worst)
        parity.largest_logit = max(parity.largest_logit, largest)
        parity.loaders.append(name)
    sample = sample_input(run)
    if sample is not None:
        pipe(sample, **run.task.pipeline_kwargs())
    if tolerance is None:
        share = RELATIVE_TOLERANCE[dtype]
        parity.tolerance = share * max(1.0, parity.largest_logit)
        parity.tolerance_rule = f"{share:.3g} x max(1, largest |logit| {parity.largest_logit:.3g})"
    else:
        parity.tolerance, parity.tolerance_rule = tolerance, "set by tolerance="
    return parity


def export(run: Any, out: Path, merge: bool, dtype: str, tolerance: float | None, rows: int,
           overwrite: bool) -> Parity:
    """Write the export beside `out`, check it, and move it into place only when it passes: a failed export leaves
    nothing (and an existing `out` as it was)."""
    from transformers.utils import logging as transformers_logging

    from hfx.files import new_dir

    transformers_logging.disable_progress_bar()  # "Loading weights" bars on every load: the error line stays alone
    # peft reads transformers' deprecated `is_gradient_checkpointing` alias (as in hfx.adapters).
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    reference = run.model().eval()
    try:
        batches = parity_batches(run, reference, rows)
    except HfxError as e:
        raise UsageError(f"export: the run's evaluation rows for the parity check: {e}") from e
    with new_dir(out, replace=overwrite) as tmp:
        write_model(run, tmp, merge, dtype)
        parity = check_parity(run, tmp, reference, batches, dtype, tolerance, sum(len(b["input_ids"]) for b in batches))
        if not parity.ok:
            raise HfxError(f"export: parity check failed: {parity.line()}; nothing was written to {out}")
        (tmp / "README.md").write_text(model_card(run, parity, merged=adapter_config(tmp) is None))
        (tmp / REPORT_FILE).write_text(json.dumps({
            "run": str(run.path), "task": run.task.name, "pipeline": run.pipeline, "dtype": dtype,
            "merged": adapter_config(tmp) is None, "rows": parity.rows, "max_abs_diff": parity.max_abs_diff,
            "largest_logit": parity.largest_logit, "tolerance": parity.tolerance, "loaders": parity.loaders,
        }, indent=2) + "\n")
    return parity


# ------------------------------------------------------------------------------------------------ the card


def model_card(run: Any, parity: Parity, merged: bool) -> str:
    """README.md: front matter for the hub, how to load it, labels, the run's metrics, the export check and the run's
    resolved config (config.yaml, secrets already redacted when the run wrote it)."""
    import transformers

    cfg = run.cfg
    source = cfg.model.name_or_path
    hub_id = source if source and not Path(source).expanduser().exists() else None  # a local path says nothing
    front = ["---", f"library_name: {'transformers' if merged else 'peft'}", f"pipeline_tag: {run.pipeline}",
             "tags:", "- hfx", f"- {run.task.name}", *([f"base_model: {hub_id}"] if hub_id else []), "---"]
    made_from = f"fine-tuned from `{source}`" if source else f"a `{cfg.model.architecture}` model trained from scratch"
    if cfg.peft.name != "none":
        made_from += f" with PEFT `{cfg.peft.name}`, " + ("merged into the weights" if merged else
                                                          "the adapter alone (it loads onto the base model it names)")
    lines = [*front, "", f"# {cfg.experiment_name} ({run.task.name})", "",
             f"Exported by `hfx export` from the hfx run `{run.path.name}`: {made_from}.", "",
             "```python", *usage(run, "<this folder>", merged), "```", ""]
    if run.pipeline.startswith("hfx-") or run.pipeline == "question-answering":
        lines += [f"transformers 5 has no `{run.pipeline}` pipeline: `hfx.pipelines.register(\"{run.pipeline}\")` "
                  "adds it (or load the model with its Auto class).", ""]
    if run.labels:
        lines += ["## Labels", "", "| id | label |", "|---|---|", *(f"| {i} | {n} |" for i, n in enumerate(run.labels)),
                  ""]
    metrics_file = run.path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    shown = {k: v for k, v in metrics.items() if k.startswith("eval_") or k in ("train_loss", "train_runtime")}
    if shown:
        lines += ["## Evaluation (the run's metrics.json)", "", "| metric | value |", "|---|---|",
                  *(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in shown.items()), ""]
    lines += ["## Export check", "",
              f"Loaded from this folder with {' and '.join(f'`{n}`' for n in parity.loaders)}, the model reproduces "
              f"the trained model's logits on {parity.rows} of the run's evaluation rows: {parity.line()}. "
              f"transformers {transformers.__version__}.", "",
              "## Training config", "", "The run's resolved `config.yaml` (secrets redacted):", "", "```yaml",
              (run.path / "config.yaml").read_text().rstrip(), "```", ""]
    return "\n".join(lines)


def usage(run: Any, folder: str, merged: bool) -> list[str]:
    """Python lines that load the export (what `load_exported` does): a pipeline on the folder, or for an adapter,
    peft onto its base first."""
    if merged:
        return ["from transformers import pipeline", "", f'pipe = pipeline("{run.pipeline}", model="{folder}")']
    auto = run.task.auto_model_class().__name__
    source = f"{folder}/base" if (run.model_dir / "base").is_dir() else run.cfg.model.name_or_path
    return ["from peft import PeftModel", f"from transformers import AutoConfig, {auto}, pipeline", "",
            f'base = {auto}.from_pretrained("{source}", config=AutoConfig.from_pretrained("{folder}"))',
            f'model = PeftModel.from_pretrained(base, "{folder}")',
            f'pipe = pipeline("{run.pipeline}", model=model, tokenizer="{folder}")']
