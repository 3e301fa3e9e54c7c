"""Sequence-to-sequence generation: summarization (ROUGE) and translation (BLEU) with encoder-decoder models.
Metrics in hfx.metrics.text; the pipelines that serve a run in hfx.pipelines.seq2seq."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hfx.architectures import DECODER, ENCODER_DECODER, Architecture, architecture
from hfx.data import column, map_features, require_columns
from hfx.errors import HfxError, one_of
from hfx.labels import IGNORE_INDEX
from hfx.metrics.text import text_metrics
from hfx.tasks.base import TASKS, Evaluation, Task, TaskConfig, TaskSettings, prediction_count

# task.metric -> the pipeline that serves the saved model. transformers 5 removed the "summarization" /
# "translation" pipelines; hfx.pipelines.seq2seq registers these, with the outputs transformers 4 gave
# (summary_text, translation_text).
FLAVOURS = {"rouge": "hfx-summarization", "bleu": "hfx-translation"}


@dataclass
class GenerationSettings:
    """Decoding for evaluation, saved with the model as generation_config.json (the pipeline uses it too)."""

    max_new_tokens: int = 64
    num_beams: int = 1
    # Weak models loop under greedy decoding; 3 stops most of it (measured on dialogsum). 0 = off.
    no_repeat_ngram_size: int = 0
    # Beam search only.
    length_penalty: float = 1.0
    early_stopping: bool = False


@dataclass
class Seq2SeqConfig(TaskConfig):
    name: str = "seq2seq"
    # rouge (summarization: eval_rouge1/2/L) or bleu (translation: eval_bleu, sacrebleu corpus BLEU).
    metric: str = "rouge"
    # Prepended to every source (T5-style "summarize: "); saved as the model's config.prefix for the pipeline.
    source_prefix: str = ""
    max_target_length: int = 128
    generation: GenerationSettings = field(default_factory=GenerationSettings)


@dataclass
class Seq2SeqColumns:
    # A dotted name reads a field of a dict column: translation.en.
    source: str = "source"
    target: str = "target"


def _columns(s: TaskSettings) -> dict[str, str]:
    return {"columns.source": s.columns.source, "columns.target": s.columns.target}


def _shape_error(model_type: str, shape: str) -> HfxError:
    return HfxError(
        f"model: task seq2seq needs an encoder-decoder model (bart, t5); model type {model_type} is {shape}"
    )


def _require_fields(split: Any, key: str, name: str, what: str) -> None:
    """For a dotted name (translation.de), the field must exist in the dict column."""
    head, _, sub = name.partition(".")
    if not sub:
        return
    feature = split.features[head]
    fields = list(feature.keys()) if isinstance(feature, dict) else None
    if fields is None:
        raise HfxError(
            f"dataset.{key}: column '{head}' of the {what} data is not a dict column, so '{name}' "
            f"cannot name a field of it"
        )
    if sub not in fields:
        raise HfxError(
            f"dataset.{key}: column '{head}' of the {what} data has no field '{sub}'; "
            f"fields: {', '.join(fields)}"
        )


class Seq2Seq(Task):
    name = "seq2seq"
    pipeline_task = FLAVOURS["rouge"]
    schema = Seq2SeqConfig
    columns = Seq2SeqColumns
    peft_task_type = "SEQ_2_SEQ_LM"
    head_modules = ()
    seq2seq = True
    streaming = True  # its preprocessing maps row by row (map_features)

    def pipeline_name(self, s: TaskSettings) -> str:
        return FLAVOURS[s.task.metric]

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def check_architecture(self, record: Architecture) -> None:
        if record.shape != ENCODER_DECODER:
            raise _shape_error(record.model_type, "decoder-only" if record.shape == DECODER else "encoder-only")

    def check_model(self, model_config: Any, s: TaskSettings) -> None:
        if getattr(model_config, "is_encoder_decoder", False):
            return
        kind = model_config.model_type
        arch = architecture(kind)
        raise _shape_error(kind, "encoder-only" if arch is not None and arch.is_encoder_only else "decoder-only")

    def validate_data(self, raw: Any, s: TaskSettings) -> None:
        if s.task.metric not in FLAVOURS:
            raise one_of("task.metric", s.task.metric, FLAVOURS)
        for split_name, split in raw.items():
            require_columns(split, _columns(s), split_name)
            for key, name in _columns(s).items():
                _require_fields(split, key, name, split_name)
            target = s.columns.target
            for i, text in enumerate(column(split, target)):
                if not isinstance(text, str) or not text.strip():
                    raise HfxError(
                        f"dataset.columns.target: row {i} of the {split_name} data has an empty target "
                        f"in '{target}' (expected non-empty text)"
                    )

    def training_texts(self, split: Any, s: TaskSettings) -> Iterator[str]:
        # Both sides: a translation model shares one vocabulary between the languages.
        yield from column(split, s.columns.source)
        yield from column(split, s.columns.target)

    def preprocess(
        self, split: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None, train: bool
    ) -> Any:
        c, t = s.columns, s.task
        max_source, max_target = s.max_length, t.max_target_length
        eos, start = target_marks(tokenizer)

        def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
            sources = [t.source_prefix + (text or "") for text in column(batch, c.source)]
            # Sources stay as the tokenizer makes them: that is what the pipeline feeds the model later.
            enc = tokenizer(sources, truncation=True, max_length=max_source)
            # A leading start token is cut off below: room for one more token, so labels keep max_target.
            targets = tokenizer(
                text_target=column(batch, c.target), truncation=True, max_length=max_target + (start is not None)
            )
            enc["labels"] = [
                with_eos(ids[1:] if ids[:1] == [start] else ids, eos, max_target) for ids in targets["input_ids"]
            ]
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        return map_features(split, encode, train)

    def collator(self, tokenizer: Any, model: Any, s: TaskSettings) -> Any:
        import warnings

        from transformers import DataCollatorForSeq2Seq

        # The first hook that sees the live model: generation settings must be on it before any evaluation.
        configure_generation(model, tokenizer, s.task)
        # EncoderDecoderModel warns on every loss it computes from labels, which is the way it recommends.
        warnings.filterwarnings("ignore", message="Version v4.12.0 introduces a better way", category=FutureWarning)
        return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE_INDEX)

    def training_args(self, s: TaskSettings) -> dict[str, Any]:
        # Generation settings live on model.generation_config (configure_generation), which is also saved.
        return {"predict_with_generate": True}

    def trainer_kwargs(self, tokenizer: Any, s: TaskSettings, labels: list[str] | None) -> dict[str, Any]:
        def compute_metrics(eval_pred: Any) -> dict[str, float]:
            # Evaluations during training see only label ids; the final one (evaluate) rescored on the raw text.
            preds = decode(eval_pred.predictions, tokenizer)
            refs = decode(eval_pred.label_ids, tokenizer)
            return {
                **text_metrics(s.task.metric, preds, refs),
                "gen_len": generated_length(eval_pred.predictions, tokenizer),
            }

        return {"compute_metrics": compute_metrics}

    def evaluate(
        self, trainer: Any, features: Any, raw: Any, tokenizer: Any, s: TaskSettings, labels: list[str] | None
    ) -> Evaluation:
        out = trainer.predict(features, metric_key_prefix="eval")
        preds = decode(out.predictions, tokenizer)
        sources, references = column(raw, s.columns.source), column(raw, s.columns.target)
        # Scored against the raw target text: references decoded from the labels are cut at max_target_length
        # and pass through the tokenizer (its normalisation, unknown pieces), which flatters or spoils the score.
        metrics = dict(out.metrics)
        metrics.update({f"eval_{k}": v for k, v in text_metrics(s.task.metric, preds, references).items()})
        limit = prediction_count(s.num_predictions, len(preds))
        rows = [
            {"source": sources[i], "reference": references[i], "prediction": preds[i]} for i in range(limit)
        ]
        return Evaluation(metrics=metrics, predictions=rows)


def with_eos(ids: list[int], eos_id: int, max_length: int) -> list[int]:
    """Targets must end in EOS so the model learns to stop; trained BPE tokenizers add none (pretrained ones do)."""
    if ids and ids[-1] == eos_id:
        return list(ids)
    return list(ids[: max_length - 1]) + [eos_id]


def target_marks(tokenizer: Any) -> tuple[int, int | None]:
    """(the EOS that ends a target, a leading token to drop from it). A BERT tokenizer (no BOS / EOS, as in
    bert2bert) wraps targets in [CLS] ... [SEP]: [SEP] ends them, and [CLS] is the decoder's start token, fed to
    the decoder rather than predicted."""
    if tokenizer.eos_token_id is not None or tokenizer.sep_token_id is None:
        return tokenizer.eos_token_id, None
    return tokenizer.sep_token_id, tokenizer.cls_token_id if tokenizer.bos_token_id is None else None


def configure_generation(model: Any, tokenizer: Any, task: Any) -> None:
    """task.generation -> the model's generation_config (used by evaluation, saved with the model); `task` is the
    task's own section."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    g, gen = task.generation, base.generation_config
    # As max_length (decoder start + new tokens): the Trainer fills in max_length=20 otherwise, and a saved config
    # holding both makes every pipeline call warn.
    gen.max_length, gen.max_new_tokens = g.max_new_tokens + 1, None
    gen.num_beams = g.num_beams
    gen.no_repeat_ngram_size = g.no_repeat_ngram_size or None
    if g.num_beams > 1:  # beam-only flags with greedy decoding fail validation when the config is saved
        gen.length_penalty = g.length_penalty
        gen.early_stopping = g.early_stopping
    if gen.forced_eos_token_id is not None and tokenizer.eos_token_id is not None:
        # BART's config defaults forced_eos_token_id to 2, which is [CLS] in a trained vocabulary, not </s>.
        gen.forced_eos_token_id = tokenizer.eos_token_id
        base.config.forced_eos_token_id = tokenizer.eos_token_id
    if task.source_prefix:
        base.config.prefix = task.source_prefix


def decode(ids: Any, tokenizer: Any) -> list[str]:
    """Token ids (generated or labels, padded with -100 by the Trainer) -> stripped texts."""
    import numpy as np

    if isinstance(ids, tuple):
        ids = ids[0]
    ids = np.where(np.asarray(ids) < 0, tokenizer.pad_token_id, ids)
    return [t.strip() for t in tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]


def generated_length(ids: Any, tokenizer: Any) -> float:
    """Mean generated tokens per example, padding excluded."""
    import numpy as np

    if isinstance(ids, tuple):
        ids = ids[0]
    ids = np.asarray(ids)
    if ids.size == 0:
        return 0.0
    return float(((ids != tokenizer.pad_token_id) & (ids >= 0)).sum(axis=1).mean())


TASKS.add(Seq2Seq.name, Seq2Seq())
