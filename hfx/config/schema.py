"""Dataclass schemas for every config group. The YAML in conf/ merges onto these, so a misspelled key or a
wrong type fails when the config is composed, before anything heavy is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class ModelConfig:
    # A hub id or local directory of a pretrained model; leave empty to build `architecture` from scratch.
    name_or_path: str | None = None
    # Warm-start an encoder-decoder (transformers' EncoderDecoderModel, e.g. bert2bert) for seq2seq tasks: this
    # checkpoint becomes the decoder (with new cross-attention), name_or_path the encoder. null = one model.
    decoder_name_or_path: str | None = None
    # Registry name of an architecture to build from a config (bert, llama, gpt2, bart, ...).
    architecture: str | None = None
    # Config fields: the whole config for `architecture`, or overrides on a pretrained config
    # (e.g. attention_probs_dropout_prob: 0.0).
    config: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    trust_remote_code: bool = False
    # Attention kernel (transformers' attn_implementation: sdpa, eager, flash_attention_2 where installed).
    # null = auto: eager for bf16 training on a CPU (measured faster there), otherwise transformers' default.
    attn_implementation: str | None = None


@dataclass
class SpecialTokensConfig:
    """The tokenizer's special-token attributes (transformers' add_special_tokens): a token not yet in the
    vocabulary is added, the model's embeddings grow to fit it and its new row trains (docs in hfx/special_tokens.py)."""

    bos_token: str | None = None
    eos_token: str | None = None
    unk_token: str | None = None
    sep_token: str | None = None
    pad_token: str | None = None
    cls_token: str | None = None
    mask_token: str | None = None
    # New special tokens: never split, skipped when decoding (transformers 5 calls them extra_special_tokens).
    additional_special_tokens: list[str] = field(default_factory=list)


@dataclass
class TokenizerConfig:
    # Registry name: `pretrained` (the model's own, or `name_or_path`), `wordpiece` or `bpe` (trained on the train split).
    kind: str = "pretrained"
    name_or_path: str | None = None
    max_length: int = 128
    vocab_size: int = 8000
    min_frequency: int = 2
    lowercase: bool = True
    # Texts read from the training split to train a tokenizer (0 = all).
    train_samples: int = 0
    # Tokens added to the vocabulary (kept whole, e.g. domain terms or markup); the model's embeddings grow to fit.
    add_tokens: list[str] = field(default_factory=list)
    special_tokens: SpecialTokensConfig = field(default_factory=SpecialTokensConfig)


@dataclass
class DatasetFilterConfig:
    """Rows removed from the training split (and from the evaluation split with `eval`), in this order, each step
    logged with what it removed; docs/data_operations.md."""

    # Columns the filters and dedupe read (a row must pass in each); null = the task's text column(s)
    # (dataset.columns.text, and text_pair when set).
    columns: list[str] | None = None
    # Drop rows whose text is empty or whitespace only (or missing).
    drop_empty: bool = False
    min_chars: int | None = None
    max_chars: int | None = None
    # Tokens as the run's tokenizer encodes the text alone, special tokens included (max_tokens equal to
    # tokenizer.max_length drops exactly the rows that would be truncated).
    min_tokens: int | None = None
    max_tokens: int | None = None
    # Drop repeated rows (the first is kept), and training rows that repeat an evaluation row: on the text
    # (`text`) or on text and label (`text_label`); null = keep repeats.
    dedupe: str | None = None
    # Also filter the data's own evaluation split (a split carved from train is filtered, or not, by the same
    # flag: carving comes first). false keeps evaluation as given, so scores compare across filter settings.
    eval: bool = False


@dataclass
class DatasetConfig:
    # A hub dataset id, or a builder for local files: csv, json, parquet, text.
    path: str = MISSING
    name: str | None = None
    # split name -> file or list of files (relative to where hfx is started, or absolute).
    data_files: dict[str, Any] = field(default_factory=dict)
    # A local folder holding <split>.csv / .jsonl / .json / .parquet / .txt files: read those instead of `path`.
    data_dir: str | None = None
    revision: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    # Carved from the train split (seeded) when there is no `eval_split`: a fraction in (0, 1) or a number of rows.
    validation_split: float | None = None
    # A `test` split carved from train the same way (for `hfx evaluate run=<dir> dataset.eval_split=test`).
    test_split: float | None = None
    # Carve validation / test with each label's share of the train split (dataset.columns.label).
    stratify: bool = False
    # false: the carved rows are the contiguous end of the train split (running text, e.g. for language models).
    validation_shuffle: bool = True
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # Which column of this data plays which role of the task (e.g. columns.text: sentence); null = the task's
    # default name. The roles are the tasks' (each task's `columns` schema in hfx/tasks/<task>.py); the schema of
    # this section, one field per role of any task, is made when the configs are registered (config/store.py).
    columns: Any = None
    # Names for integer labels 0..n-1 (e.g. [negative, positive]); string labels name themselves.
    label_names: list[str] | None = None
    # Data operations, applied before tokenization in this order (docs/data_operations.md): rename_columns and
    # keep_labels (every split), carving (validation_split / test_split), filter (train; eval with filter.eval),
    # shuffle_seed (train), max_*_samples, then filter.min_tokens / max_tokens once the tokenizer exists.
    # old name -> new name, in every split that has the column; dataset.columns.* name the new names.
    rename_columns: dict[str, str] = field(default_factory=dict)
    # Keep only rows whose label (dataset.columns.label) is one of these, in every split; integer labels by value or
    # by their dataset.label_names name.
    keep_labels: list[str] | None = None
    filter: DatasetFilterConfig = field(default_factory=DatasetFilterConfig)
    # Shuffle the training split with this seed (after the filters, before max_train_samples: a random sample).
    shuffle_seed: int | None = None
    # Read the training split as a stream, never materialised (hfx/streaming.py): needs trainer.max_steps and an
    # evaluation split or file of its own; max_train_samples takes the stream's first rows.
    streaming: bool = False
    # Streaming: training features are shuffled in a buffer of this many (0 = file order), seeded by shuffle_seed
    # or trainer.seed.
    shuffle_buffer: int = 10000
    # Streaming: rows from the head of the stream that stand for the training split where all of it would be read
    # (column and value checks, label names, training a tokenizer).
    stream_head: int = 10000


@dataclass
class EntryConfig:
    """Base of a group whose options each have their own schema (task, peft, logger): `name` picks the registry
    entry; the entry's module extends this with its own fields."""

    name: str = MISSING


@dataclass
class TrainerConfig:
    """Fields of transformers.TrainingArguments, passed through by name. `extra` takes any other field."""

    learning_rate: float = 5e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    label_smoothing_factor: float = 0.0
    eval_strategy: str = "no"
    eval_steps: float | None = None
    eval_on_start: bool = False
    # Checkpoints (into <run dir>/checkpoints, for `hfx train resume=<run dir>`): every 500 steps, every
    # `save_every_minutes`, at the end and on SIGTERM / SIGINT; the newest two are kept.
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = 2
    # Also save when this many minutes have passed since the last checkpoint (null: by steps only).
    save_every_minutes: float | None = 30.0
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    logging_strategy: str = "steps"
    logging_steps: float = 50
    logging_first_step: bool = False
    seed: int = 42
    data_seed: int | None = None
    full_determinism: bool = False
    # null = auto: on where the hardware runs it fast (CUDA with bf16, or a CPU with AMX / avx512_bf16).
    bf16: bool | None = None
    fp16: bool = False
    use_cpu: bool = False
    # group_by_length pads least; hfx keeps evaluation sequential either way.
    train_sampling_strategy: str = "group_by_length"
    # Recompute activations in the backward pass to save memory (transformers 5's name for gradient checkpointing).
    activation_checkpointing: bool = False
    # null = auto: 0 on a CPU (workers would take the cores the model trains on); on a GPU, up to 4 persistent
    # workers (measured on one H200: 0.79x a plain training loop's tokens/s with 4 workers vs 0.67x without).
    dataloader_num_workers: int | None = None
    dataloader_drop_last: bool = False
    eval_accumulation_steps: int | None = None
    torch_compile: bool = False
    # null = the task's choice (sequence classification turns it off: its loss ignores it and doubles under DDP).
    average_tokens_across_devices: bool | None = None
    disable_tqdm: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FreezeConfig:
    """Weights kept at their initial values while training, with or without PEFT (applied after it, so adapter
    weights inside a frozen part freeze too): hfx/freezing.py. The parts add up."""

    # The input embeddings (BERT's embeddings block; embed_tokens, learned positions).
    embeddings: bool = False
    # The first N transformer layers (encoder.layer.N, model.layers.N, transformer.h.N; an encoder-decoder's encoder).
    layers: int = 0
    # Everything but the task's head (pooler and classifier, qa_outputs, ...; a language model's lm_head).
    all_but_head: bool = False
    # Regular expressions searched in parameter names as the model names them (bert.encoder.layer.0.attention...).
    patterns: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    task: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    # Typed per option: conf/peft/<name>.yaml builds on the schema of that PEFT method (hfx/adapters.py).
    peft: Any = MISSING
    # Weights held fixed while training (conf/freeze/); none by default.
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # One section per chosen tracker, under its name (logger=[wandb,tensorboard] -> logger.wandb, logger.tensorboard),
    # each typed by that logger's schema (hfx/loggers.py); empty for logger=none.
    logger: dict[str, Any] = field(default_factory=dict)
    # Where the run executes, typed per option (hfx/launch.py): local (this process), ddp, fsdp, deepspeed, ...
    launch: Any = MISSING
    experiment_name: str = "default"
    # A run directory to continue from its newest complete checkpoint, with its own config, or `auto`: the newest
    # unfinished run of this experiment under runs/<experiment_name>/.
    resume: str | None = None
    # Where tokenizers and tokenized datasets are cached (reused when the same config runs again).
    cache_dir: str = "~/.cache/hfx"
    # Number of evaluation examples written to predictions.jsonl (-1 = all).
    num_predictions: int = -1
    # The metric a sweep optimises, as metrics.json names it (`eval_accuracy`; conf/hparams_search/ sets it). null =
    # eval_<trainer.metric_for_best_model>, else eval_loss. A name the run does not report fails the job.
    optimized_metric: str | None = None


@dataclass
class ZeroShotOptions:
    """Zero-shot classification with no run and no training (hfx/zero_shot.py, docs/zero_shot.md): `hfx predict` /
    `hfx evaluate` without run=, given candidate labels (or, for evaluate, zero_shot=true and the data's labels)."""

    # The model: model=minilm (a packaged sentence encoder) or model.name_or_path=<an NLI model or sentence encoder>.
    model: ModelConfig = field(default_factory=ModelConfig)
    # The labels to choose from. evaluate: default the data's label names (dataset.label_names or its string labels).
    candidate_labels: list[str] | None = None
    # evaluate without run= and without candidate_labels: the data's label names are the candidates.
    zero_shot: bool = False
    # A label's text: `{}` replaced by the label (transformers' zero-shot default).
    hypothesis_template: str = "This example is {}."
    # label -> the text used in place of the template for that label (e.g. positive: a great, enjoyable film).
    label_descriptions: dict[str, str] = field(default_factory=dict)
    # auto: nli when the model's labels include entailment (an NLI model), else embedding; nli; embedding.
    zero_shot_method: str = "auto"


@dataclass
class PredictConfig(ZeroShotOptions):
    # A run directory written by `hfx train`; not needed for zero-shot classification (candidate_labels=...).
    run: str | None = None
    input: str | None = None
    input_file: str | None = None
    output_file: str | None = None
    # A conversation for an sft run, as JSON: [{"role": "user", "content": "..."}, ...], last turn the user's; the run's
    # chat template renders every turn and the assistant's reply comes back.
    messages: str | None = None
    # Pipeline keyword arguments (e.g. top_k, max_new_tokens).
    pipeline: dict[str, Any] = field(default_factory=dict)
    # Records of input_file sent through the pipeline together.
    batch_size: int = 16


@dataclass
class EvaluateConfig(ZeroShotOptions):
    # A run directory written by `hfx train`; not needed for zero-shot evaluation (zero_shot=true or candidate_labels).
    run: str | None = None
    # With run=: overrides on the run's saved dataset config (eval_split, data_files, data_dir, max_eval_samples, ...).
    # Zero-shot: the data, as in train (dataset=<option>, dataset.data_dir=..., dataset.columns.text=..., ...).
    dataset: dict[str, Any] = field(default_factory=dict)
    per_device_eval_batch_size: int = 64
