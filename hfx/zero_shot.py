"""Zero-shot classification: texts ranked against candidate labels by a pretrained model, with no training and no
run directory (`hfx predict model=minilm candidate_labels=[...] input=...`, `hfx evaluate model=minilm
zero_shot=true dataset=...`; docs/zero_shot.md).

Two methods, picked from the model (`zero_shot_method: auto`):
- `nli`: an NLI model (its labels include entailment) through transformers' `zero-shot-classification` pipeline.
  Each label's text is a hypothesis about the input; a score is the entailment probability, softmax over the
  candidates (`pipeline.multi_label=true` scores each label on its own).
- `embedding`: a sentence encoder (all-MiniLM-L6-v2 is packaged): the input and each label's text are embedded as
  sentence-transformers does (the model's pooling, mean by default, then L2-normalised), and a score is the cosine
  similarity of the two (not a probability).
A label's text is its `label_descriptions` entry, else `hypothesis_template` with the label in place of `{}`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.errors import HfxError

METHODS = ("auto", "nli", "embedding")
# Where a zero-shot command writes (its log; predictions.jsonl; metrics.json), under the working directory.
OUTPUT_DIR = "zero_shot"


def requested(cfg: DictConfig) -> bool:
    """The command line asks for zero-shot classification (candidate labels, descriptions, or zero_shot=true)."""
    return cfg.candidate_labels is not None or bool(cfg.label_descriptions) or bool(cfg.zero_shot)


def command_args(args: list[str]) -> list[str]:
    """The command line as Hydra needs it: `hypothesis_template=` and `label_descriptions.<label>=` take free text
    (`{}`, commas, quotes: quoted whole, as `input=` is), and label_descriptions entries are forced (`++`) into the
    schema's empty dict."""
    from hfx.config.compose import quoted

    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and (key == "hypothesis_template" or key.startswith("label_descriptions.")):
            arg = f"{key}={quoted(value)}"
        out.append(f"++{arg}" if key.split(".")[0] == "label_descriptions" else arg)
    return out


def job_args(args: list[str]) -> list[str]:
    """The job's arguments: its output under zero_shot/<timestamp>/ of the working directory (there is no run
    directory to write into), unless hydra.run.dir says where."""
    if any(a.lstrip("+").startswith("hydra.run.dir=") for a in args):
        return args
    return [*args, f"hydra.run.dir={OUTPUT_DIR}/${{run_stamp:}}"]


# ----------------------------------------------------------------------------------------------------- checks


def check_model(cfg: DictConfig) -> None:
    from hfx.config.compose import check_local_path

    if cfg.run is not None:
        raise HfxError("run: zero-shot classification uses model=..., not a run; drop run= (a run's model serves as "
                       "model.name_or_path=<run dir>/model)")
    m = cfg.model
    if not m.name_or_path:
        built = f", not one built from scratch (model.architecture={m.architecture})" if m.architecture else ""
        raise HfxError(f"model: zero-shot classification needs a pretrained model{built}: model=minilm (a packaged "
                       "sentence encoder, offline) or model.name_or_path=<an NLI model or a sentence encoder>")
    check_local_path("model.name_or_path", m.name_or_path)
    if cfg.zero_shot_method not in METHODS:
        raise HfxError(f"zero_shot_method: expected auto, nli or embedding, got '{cfg.zero_shot_method}'")


def label_texts(cfg: DictConfig, candidates: list[str]) -> list[str]:
    """Each candidate's text (its description, else the template filled in), the candidates checked."""
    if not candidates:
        raise HfxError("candidate_labels: expected at least one label, e.g. candidate_labels=[sports,business]")
    blank = [c for c in candidates if not str(c).strip()]
    if blank:
        raise HfxError(f"candidate_labels: an empty label among {candidates}")
    twice = sorted(c for c, n in Counter(candidates).items() if n > 1)
    if twice:
        raise HfxError(f"candidate_labels: '{twice[0]}' is given twice")
    template = cfg.hypothesis_template
    try:
        filled = template.format("\0")
    except (IndexError, KeyError, ValueError) as e:
        raise HfxError(f"hypothesis_template: expected text with one {{}} where the label goes, got '{template}' "
                       f"({type(e).__name__}: {e})") from e
    if "\0" not in filled:
        raise HfxError(f"hypothesis_template: expected text with one {{}} where the label goes, got '{template}'")
    descriptions = dict(cfg.label_descriptions or {})
    from hfx.errors import did_you_mean

    for label, text in descriptions.items():
        if label not in candidates:
            raise HfxError(f"label_descriptions.{label}: not a candidate label{did_you_mean(label, candidates)}; "
                           f"candidates: {', '.join(candidates)}")
        if not str(text).strip():
            raise HfxError(f"label_descriptions.{label}: expected a description, got an empty text")
    texts = [str(descriptions[c]) if c in descriptions else template.format(c) for c in candidates]
    same = [t for t, n in Counter(texts).items() if n > 1]
    if same:
        raise HfxError(f"label_descriptions: two labels have the same text '{same[0]}'")
    return texts


def method_for(cfg: DictConfig) -> str:
    """nli or embedding: `zero_shot_method`, or (auto) nli for a model whose labels include entailment."""
    from transformers import AutoConfig

    m = cfg.model
    try:
        config = AutoConfig.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise HfxError(f"model.name_or_path: cannot load '{m.name_or_path}' ({type(e).__name__}: {reason})") from e
    nli = any(str(label).lower().startswith("entail") for label in (config.label2id or {}))
    if cfg.zero_shot_method == "auto":
        return "nli" if nli else "embedding"
    if cfg.zero_shot_method == "nli" and not nli:
        raise HfxError(f"zero_shot_method: nli needs an NLI model (labels with entailment); {m.name_or_path} has "
                       f"labels {', '.join(map(str, config.label2id or {}))}; use zero_shot_method=embedding")
    return cfg.zero_shot_method


def record_text(record: dict[str, Any]) -> str:
    """The text of one input record: its `text` field, or its only (first) field."""
    if "messages" in record:
        raise HfxError("messages: zero-shot classification takes text (input= or input_file=), not a conversation")
    text = record["text"] if "text" in record else next(iter(record.values()), None)
    if not isinstance(text, str):
        raise HfxError(f"input: zero-shot classification takes a text per record (a 'text' field), got {record}")
    return text


# ------------------------------------------------------------------------------------------------ classifiers


class NLIClassifier:
    """transformers' zero-shot-classification pipeline, each label's text given whole as the hypothesis."""

    def __init__(self, mcfg: DictConfig, texts: list[str], kwargs: dict[str, Any]):
        from transformers import pipeline

        src = mcfg.name_or_path
        self.texts, self.kwargs = texts, kwargs
        self.pipe = pipeline("zero-shot-classification", model=src, tokenizer=src, revision=mcfg.revision,
                             trust_remote_code=mcfg.trust_remote_code, model_kwargs={"use_safetensors": True})

    def __call__(self, inputs: list[str]) -> list[list[float]]:
        outs = self.pipe(inputs, candidate_labels=self.texts, hypothesis_template="{}", batch_size=len(inputs),
                         **self.kwargs)
        outs = [outs] if isinstance(outs, dict) else outs
        return [[dict(zip(o["labels"], o["scores"], strict=True))[t] for t in self.texts] for o in outs]


class EmbeddingClassifier:
    """Cosine similarity of sentence embeddings, pooled as the model's sentence-transformers config says."""

    def __init__(self, mcfg: DictConfig, texts: list[str], kwargs: dict[str, Any]):
        import torch
        from transformers import AutoModel, AutoTokenizer

        src, revision = mcfg.name_or_path, mcfg.revision
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(src, revision=revision, trust_remote_code=mcfg.trust_remote_code)
        self.model = AutoModel.from_pretrained(src, revision=revision, trust_remote_code=mcfg.trust_remote_code,
                                               use_safetensors=True).to(self.device).eval()
        self.pooling, self.max_length = sentence_settings(src, revision, self.tokenizer)
        self.labels = self.encode(texts)

    def encode(self, texts: list[str]) -> Any:
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = enc.to(self.device)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    def __call__(self, inputs: list[str]) -> list[list[float]]:
        return (self.encode(inputs) @ self.labels.T).cpu().tolist()


def sentence_settings(src: str, revision: str | None, tokenizer: Any) -> tuple[str, int]:
    """(pooling, max tokens) from a sentence-transformers model's own files (modules.json, its Pooling module's
    config, sentence_bert_config.json); mean pooling and the tokenizer's limit (at most 512) for other encoders."""
    from transformers.utils import cached_file

    def read(name: str) -> Any:
        path = cached_file(src, name, revision=revision, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        return json.loads(Path(path).read_text()) if path else None

    pooling = "mean"
    for module in read("modules.json") or []:
        if str(module.get("type", "")).endswith("Pooling"):
            config = read(f"{module['path']}/config.json") or {}
            pooling = next((mode for key, mode in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"))
                            if config.get(key)), "mean")
    limit = (read("sentence_bert_config.json") or {}).get("max_seq_length")
    return pooling, int(limit or min(getattr(tokenizer, "model_max_length", 512) or 512, 512))


def load_classifier(cfg: DictConfig, method: str, texts: list[str], kwargs: dict[str, Any]) -> Any:
    cls = NLIClassifier if method == "nli" else EmbeddingClassifier
    return cls(cfg.model, texts, kwargs)


def ranked(labels: list[str], scores: list[float]) -> list[dict[str, Any]]:
    """[{label, score}] best first, as text-classification gives them."""
    order = sorted(range(len(labels)), key=lambda i: -scores[i])
    return [{"label": labels[i], "score": float(scores[i])} for i in order]


# ------------------------------------------------------------------------------------------------ hfx predict


def check_predict(cfg: DictConfig, records: list[dict[str, Any]]) -> None:
    check_model(cfg)
    label_texts(cfg, predict_candidates(cfg))
    if method_for(cfg) == "embedding" and cfg.pipeline:
        raise HfxError(f"pipeline.{next(iter(cfg.pipeline))}: the embedding method takes no pipeline arguments "
                       "(they go to the nli method's zero-shot-classification pipeline)")
    for record in records:
        record_text(record)


def predict_candidates(cfg: DictConfig) -> list[str]:
    if cfg.candidate_labels is not None:
        return [str(c) for c in cfg.candidate_labels]
    if cfg.label_descriptions:
        return list(cfg.label_descriptions)
    raise HfxError("candidate_labels: zero-shot prediction needs the labels to choose from, e.g. "
                   "candidate_labels=[sports,business]")


def predict(cfg: DictConfig, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per record, {input, prediction: [{label, score}] best first}, printed as JSON lines as they come."""
    labels = predict_candidates(cfg)
    texts = label_texts(cfg, labels)
    classify = load_classifier(cfg, method_for(cfg), texts, OmegaConf.to_container(cfg.pipeline, resolve=True))
    rows = []
    for start in range(0, len(records), cfg.batch_size):
        batch = records[start : start + cfg.batch_size]
        for record, scores in zip(batch, classify([record_text(r) for r in batch]), strict=True):
            rows.append({"input": record, "prediction": ranked(labels, scores)})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    return rows


# ----------------------------------------------------------------------------------------------- hfx evaluate


@dataclass
class LabelledRows:
    texts: list[str]
    references: list[str]
    candidates: list[str]


def evaluation_rows(cfg: DictConfig) -> LabelledRows:
    """The evaluation split read as `hfx train` reads data (dataset option, files, columns, label names, data
    operations), its labels as names, and the candidates: candidate_labels, else the data's label names."""
    from hfx.config.compose import explain_config_error
    from hfx.config.store import train_schema
    from hfx.data import load_splits
    from hfx.tasks import TASKS, TaskSettings

    if not cfg.dataset:
        raise HfxError("dataset: zero-shot evaluation needs labelled data: dataset=<option> (e.g. dataset=sst2 "
                       "dataset.data_dir=<folder>) or dataset.path=csv dataset.data_files.validation=<file>")
    try:
        dcfg = OmegaConf.merge(train_schema().dataset, OmegaConf.to_container(cfg.dataset, resolve=True))
        dcfg.path  # noqa: B018 (a MISSING path fails here, in one line)
    except Exception as e:  # a misspelled or mistyped dataset.* key
        raise HfxError(explain_config_error(e).replace("'path'", "'dataset.path'")) from e
    task = TASKS.get("sequence_classification")
    given = {k: v for k, v in (OmegaConf.to_container(dcfg.columns) or {}).items() if v is not None}
    columns = OmegaConf.merge(OmegaConf.structured(task.columns),
                              {k: v for k, v in given.items() if k in ("text", "text_pair", "label")})
    if columns.text_pair:
        raise HfxError("dataset.columns.text_pair: zero-shot classification reads one text per row")
    raw = load_splits(dcfg, 42, eval_only=True, columns=columns)
    task.validate_data(raw, TaskSettings(task=None, columns=columns, max_length=512))
    split = raw["eval"]
    if len(split) == 0:
        raise HfxError(f"dataset: the '{dcfg.eval_split}' split has no rows to evaluate")
    values = split[columns.label]
    names = getattr(split.features[columns.label], "names", None)
    if all(isinstance(v, int) for v in values):
        names = names or dcfg.label_names or cfg.candidate_labels
        if names is None:
            raise HfxError(f"dataset.label_names: the labels in column '{columns.label}' are numbers; name them "
                           "(dataset.label_names=[negative,positive]) or give candidate_labels in label order")
        if min(values) < 0 or max(values) >= len(names):
            raise HfxError(f"dataset.label_names: {len(names)} names ({', '.join(map(str, names))}) for integer "
                           f"labels {min(values)}..{max(values)}")
        references = [str(names[v]) for v in values]
        data_labels = [str(n) for n in names]
    else:
        references = [str(v) for v in values]
        data_labels = sorted(set(references))
    candidates = [str(c) for c in cfg.candidate_labels] if cfg.candidate_labels is not None else data_labels
    missing = sorted(set(references) - set(candidates))
    if missing:
        raise HfxError(f"candidate_labels: the data's label(s) {', '.join(missing)} are not among the candidates "
                       f"({', '.join(candidates)})")
    return LabelledRows([str(t) for t in split[columns.text]], references, candidates)


def check_evaluate(cfg: DictConfig) -> None:
    check_model(cfg)
    if cfg.per_device_eval_batch_size < 1:
        raise HfxError(f"per_device_eval_batch_size: expected a positive number, got {cfg.per_device_eval_batch_size}")
    label_texts(cfg, evaluation_rows(cfg).candidates)
    method_for(cfg)


def evaluate(cfg: DictConfig, out_path: Path) -> dict[str, Any]:
    """Accuracy and macro F1 of the top-ranked label, beside the majority-class baseline on the same rows;
    metrics.json, predictions.jsonl and config.yaml under out_path."""
    from sklearn.metrics import accuracy_score, f1_score

    from hfx.rundir import RunDir, print_summary

    data = evaluation_rows(cfg)
    method = method_for(cfg)
    classify = load_classifier(cfg, method, label_texts(cfg, data.candidates), {})
    start = time.perf_counter()
    scores: list[list[float]] = [[] for _ in data.texts]
    # Batches of similar length pad least; scores go back to their rows.
    order = sorted(range(len(data.texts)), key=lambda i: len(data.texts[i]))
    for i in range(0, len(order), cfg.per_device_eval_batch_size):
        batch = order[i : i + cfg.per_device_eval_batch_size]
        for row, row_scores in zip(batch, classify([data.texts[j] for j in batch]), strict=True):
            scores[row] = row_scores
    runtime = time.perf_counter() - start
    preds = [data.candidates[max(range(len(s)), key=s.__getitem__)] for s in scores]
    refs = data.references
    # The most frequent label of these rows: the best any constant answer scores here.
    counts = Counter(refs)
    majority = max(data.candidates, key=lambda c: (counts[c], -data.candidates.index(c)))
    metrics = {
        "eval_accuracy": float(accuracy_score(refs, preds)),
        "eval_f1_macro": float(f1_score(refs, preds, average="macro", zero_division=0)),
        "eval_majority_accuracy": float(accuracy_score(refs, [majority] * len(refs))),
        "eval_majority_f1_macro": float(f1_score(refs, [majority] * len(refs), average="macro", zero_division=0)),
        "eval_samples": len(refs),
        "eval_runtime": round(runtime, 3),
        "eval_samples_per_second": round(len(refs) / runtime, 3) if runtime > 0 else None,
        "majority_label": majority,
        "zero_shot_method": method,
    }
    rows = [{"input": t, "reference": r, "prediction": p, "correct": r == p,
             "scores": dict(zip(data.candidates, map(float, s), strict=True))}
            for t, r, p, s in zip(data.texts, refs, preds, scores, strict=True)]
    out = RunDir(out_path)
    out.write_config(cfg)
    out.write_json("metrics.json", metrics)
    out.write_jsonl("predictions.jsonl", rows)
    print_summary(f"hfx: zero-shot evaluation ({method}) of {cfg.model.name_or_path}", out.path, metrics,
                  extra_keys=("majority_label",))
    return metrics


def require_run_or_zero_shot(cfg: Any, served: str, how: str) -> None:
    """predict / evaluate without zero-shot options: a run is required, and its own model is the one used.
    `served` says what is done with the run ("served"), `how` the zero-shot form of the command."""
    from hfx.errors import HfxError

    if cfg.run is None:
        raise HfxError(f"run: required and not given (run=<run dir>; or {how})")
    if cfg.model.name_or_path or cfg.model.architecture:
        raise HfxError(f"model: a run is {served} with its own model; model=... without run= is for zero-shot "
                       f"use ({how})")

