"""Data operations as config: the `dataset.*` settings that rename, keep, filter, deduplicate, shuffle and carve the
raw splits before tokenization, in one order (docs/data_operations.md):

1. rename_columns (every split)  2. keep_labels (every split)  3. carving: validation_split / test_split, stratify
4. filter: drop_empty, min/max_chars, dedupe (train; the evaluation split too with filter.eval)
5. shuffle_seed (train)  6. max_train_samples / max_eval_samples  7. filter.min/max_tokens, once the run's
tokenizer exists (a trained tokenizer learns from the training split as steps 1-6 leave it).

Each step logs what it did (`data: train: drop_empty removed 12 of 6920 rows`). All of it goes through the datasets
library (rename_columns, filter, select, shuffle, train_test_split), so every result has a fingerprint and the
tokenized-feature cache (hfx/data.py) recognises data it has seen."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hfx.errors import HfxError, one_of

log = logging.getLogger("hfx")

DEDUPE_MODES = ("text", "text_label")
LENGTHS = (("min_chars", "max_chars"), ("min_tokens", "max_tokens"))
STRATUM = "__hfx_stratum"  # a temporary ClassLabel copy of the label: what train_test_split stratifies on


@dataclass(frozen=True)
class Roles:
    """The columns the operations read, and the key that names them in errors."""

    texts: tuple[str, ...]  # filters and dedupe (a dotted name reads a field: translation.en)
    texts_key: str  # filter.columns, or columns.text when they are the task's text column(s)
    label: str | None  # keep_labels, stratify, dedupe=text_label: the task's label column


def roles(dcfg: Any, columns: Any) -> Roles:
    """`columns`: the task's column roles with the user's names (TaskSettings.columns); None when unknown."""
    roles_of = set(columns.keys()) if columns is not None else set()
    label = columns.label if "label" in roles_of else None
    if dcfg.filter.columns is not None:
        return Roles(tuple(dcfg.filter.columns), "filter.columns", label)
    texts = tuple(columns[r] for r in ("text", "text_pair") if r in roles_of and columns[r])
    return Roles(texts, "columns.text", label)


def text_ops(fcfg: Any) -> list[str]:
    """The filter steps that are set (filter.eval aside)."""
    steps = ["drop_empty"] if fcfg.drop_empty else []
    steps += [k for pair in LENGTHS for k in pair if fcfg[k] is not None]
    return steps + (["dedupe"] if fcfg.dedupe is not None else [])


# --- the operations, in order ---

def apply_ops(loaded: Any, dcfg: Any, seed: int, eval_only: bool, columns: Any) -> Any:
    """DatasetDict with `train` and `eval` (only `eval` with eval_only) after steps 1-6 of the module docstring."""
    import datasets

    r = roles(dcfg, columns)
    train_name, eval_name = dcfg.train_split, dcfg.eval_split
    if eval_only and eval_name in loaded:  # evaluating a finished run on a split or file of its own
        evaluation = keep_labels(rename({eval_name: loaded[eval_name]}, dcfg, strict=False), dcfg, r)[eval_name]
        if dcfg.filter.eval:
            evaluation = filter_split(evaluation, eval_name, dcfg, r)
        return datasets.DatasetDict(eval=nonempty(cap(evaluation, dcfg.max_eval_samples), "eval"))
    if train_name not in loaded:
        raise one_of("dataset split (dataset.train_split)", train_name, loaded.keys())
    if eval_name in loaded and dcfg.validation_split is not None:
        raise HfxError(f"dataset.validation_split: the data has its own '{eval_name}' split, so carving "
                       f"{dcfg.validation_split} of train as well is a conflict; drop one (dataset.validation_split=null "
                       "evaluates on that split)")
    if "test" in loaded and dcfg.test_split is not None:
        raise HfxError(f"dataset.test_split: the data has its own 'test' split, so carving {dcfg.test_split:g} of "
                       "train as well is a conflict; drop dataset.test_split")
    named = keep_labels(rename(used_splits(loaded, dcfg), dcfg), dcfg, r)
    train, carved = carve(named[train_name], dcfg, seed, r)
    if eval_name in named:
        evaluation = named[eval_name]
    elif eval_name in carved or "validation" in carved:  # a carved split, by its name or as the evaluation split
        evaluation = carved.get(eval_name, carved.get("validation"))
    else:
        raise HfxError(
            f"dataset: no '{eval_name}' split (have {', '.join(loaded)}); "
            "set dataset.eval_split or dataset.validation_split (a fraction of train)"
        )
    if dcfg.filter.eval:
        evaluation = filter_split(evaluation, eval_name, dcfg, r)
    evaluation = nonempty(cap(evaluation, dcfg.max_eval_samples), "eval")
    if eval_only:
        return datasets.DatasetDict(eval=evaluation)
    held_out = {eval_name: evaluation, **{n: s for n, s in carved.items() if s is not evaluation}}
    train = filter_split(train, train_name, dcfg, r, held_out)
    if dcfg.shuffle_seed is not None:
        train = train.shuffle(seed=dcfg.shuffle_seed)
        log.info("data: %s: shuffled %d rows with seed %d", train_name, len(train), dcfg.shuffle_seed)
    train = nonempty(cap(train, dcfg.max_train_samples), "train")
    return datasets.DatasetDict(train=train, eval=evaluation)


def used_splits(loaded: Any, dcfg: Any) -> dict[str, Any]:
    """The splits a run reads: train and the evaluation split, where the data has them."""
    return {n: loaded[n] for n in dict.fromkeys((dcfg.train_split, dcfg.eval_split)) if n in loaded}


def rename(named: dict[str, Any], dcfg: Any, strict: bool = True) -> dict[str, Any]:
    """strict: a column in no split is an error (not for an evaluation file of its own, which may be named anew)."""
    mapping = dict(dcfg.rename_columns)
    for old in mapping if strict else ():
        if not any(old in split.column_names for split in named.values()):
            where = next(iter(named))
            raise HfxError(f"dataset.rename_columns.{old}: column '{old}' is not in the {where} data; columns: "
                           f"{', '.join(named[where].column_names)}")
    out = {}
    for where, split in named.items():
        here = {o: n for o, n in mapping.items() if o in split.column_names}
        for old, new in here.items():
            if new in split.column_names and new not in here:
                raise HfxError(f"dataset.rename_columns.{old}: the {where} data has a column '{new}' already; "
                               "rename that one too, or pick another name")
        out[where] = split.rename_columns(here) if here else split
        if here:
            log.info("data: %s: renamed %s", where, ", ".join(f"{o} -> {n}" for o, n in here.items()))
    return out


def label_values(split: Any, dcfg: Any, label: str, where: str, strict: bool = True) -> list[str]:
    """keep_labels as the label column's values (str): each entry is a value, or the name of an integer label
    (its ClassLabel name or dataset.label_names). strict: an entry the split lacks is an error (for the training
    split; an evaluation file of its own need not hold every kept label)."""
    present = sorted({str(v) for v in split.unique(label)})
    names = getattr(split.features[label], "names", None) or dcfg.label_names
    keep = []
    for entry in dcfg.keep_labels:
        if entry in present:
            keep.append(entry)
        elif names and entry in names:
            keep.append(str(list(names).index(entry)))
        elif not strict:
            keep.append(entry)
        else:
            shown = [f"{v} ({names[int(v)]})" if names and v.isdigit() and int(v) < len(names) else v for v in present]
            raise HfxError(f"dataset.keep_labels: '{entry}' is not a label of the {where} data; labels: "
                           f"{', '.join(shown[:30])}")
    return keep


def keep_labels(named: dict[str, Any], dcfg: Any, r: Roles) -> dict[str, Any]:
    if dcfg.keep_labels is None:
        return named
    from hfx.data import require_columns

    for where, split in named.items():
        require_columns(split, {"columns.label": r.label}, where)
    reference = dcfg.train_split if dcfg.train_split in named else next(iter(named))
    keep = label_values(named[reference], dcfg, r.label, reference, strict=reference == dcfg.train_split)
    step = f"keep_labels=[{', '.join(dcfg.keep_labels)}]"
    return {where: _filter(split, where, step, "keep_labels", _label_in, [r.label], keep=keep)
            for where, split in named.items()}


def carve_sizes(dcfg: Any, n: int) -> dict[str, int]:
    """Rows to carve per split name from a train split of n rows (fractions rounded up, as datasets does)."""
    sizes = {name: int(v) if v >= 1 else math.ceil(v * n)
             for name, v in (("validation", dcfg.validation_split), ("test", dcfg.test_split)) if v is not None}
    if sizes and sum(sizes.values()) >= n:
        carved = " + ".join(f"{v} {k}" for k, v in sizes.items())
        key = "test_split" if "test" in sizes else "validation_split"
        raise HfxError(f"dataset.{key}: carving {carved} rows from a train split of {n} rows leaves the training "
                       "split empty")
    return sizes


def carve(train: Any, dcfg: Any, seed: int, r: Roles) -> tuple[Any, dict[str, Any]]:
    """Validation and test splits carved from train (seeded; stratified on the label with dataset.stratify)."""
    wanted = {name: v for name, v in (("validation", dcfg.validation_split), ("test", dcfg.test_split))
              if v is not None}
    if not wanted:
        return train, {}
    n, where = len(train), dcfg.train_split
    sizes = carve_sizes(dcfg, n)
    if dcfg.stratify:
        from hfx.data import require_columns

        require_columns(train, {"columns.label": r.label}, where)
        train = _with_stratum(train, r.label)
    if len(wanted) == 1:
        (name, value), = wanted.items()
        # The fraction as given (not its row count): the same carve, and fingerprint, as before counts existed.
        rest, carved = _split_off(train, int(value) if value >= 1 else value, seed, dcfg, f"{name}_split",
                               r.label)
        carved = {name: carved}
    else:
        rest, held = _split_off(train, sizes["validation"] + sizes["test"], seed, dcfg, "validation_split",
                                 r.label)
        validation, test = _split_off(held, sizes["test"], seed, dcfg, "test_split", r.label)
        carved = {"validation": validation, "test": test}
    how = f" (stratified on {r.label})" if dcfg.stratify else "" if dcfg.validation_shuffle else " (its last rows)"
    for name, split in carved.items():
        log.info("data: %s: %s_split=%g carved %d of %d rows into %s%s", where, name, dcfg[f"{name}_split"],
                 len(split), n, name, how)
    if dcfg.stratify:
        rest = rest.remove_columns(STRATUM)
        carved = {name: split.remove_columns(STRATUM) for name, split in carved.items()}
    return rest, carved


def _with_stratum(split: Any, label: str) -> Any:
    """The split with a ClassLabel copy of its label column (train_test_split stratifies only on a ClassLabel;
    the label column itself keeps its type, so label ids and names stay what the task makes of them)."""
    strata = split.map(_as_strings, input_columns=[label], batched=True, fn_kwargs={"into": STRATUM},
                       desc="stratify")
    return strata.class_encode_column(STRATUM)


def _as_strings(values: list[Any], into: str) -> dict[str, list[str]]:
    return {into: [str(v) for v in values]}


def _split_off(split: Any, size: float | int, seed: int, dcfg: Any, key: str, label: str | None) -> tuple[Any, Any]:
    try:
        parts = split.train_test_split(test_size=size, seed=seed, shuffle=dcfg.validation_shuffle,
                                       stratify_by_column=STRATUM if dcfg.stratify else None)
    except ValueError as e:  # too few rows to carve from; a label too rare to stratify
        rare = "populated class" in str(e) or "members" in str(e)
        key = "stratify" if dcfg.stratify and rare else key
        raise HfxError(f"dataset.{key}: {str(e).splitlines()[0].replace(STRATUM, repr(label))}") from e
    return parts["train"], parts["test"]


def filter_split(split: Any, where: str, dcfg: Any, r: Roles, held_out: dict[str, Any] | None = None) -> Any:
    """drop_empty, min/max_chars and dedupe on one split (the token filters come later, in filter_tokens)."""
    f = dcfg.filter
    if not text_ops(f):
        return split
    require_texts(split, where, r)
    heads, spec = _spec(r.texts)
    if f.drop_empty:
        split = _filter(split, where, "drop_empty", "filter.drop_empty", _nonblank, heads, spec=spec)
    for key, bounds in (("min_chars", (f.min_chars, None)), ("max_chars", (None, f.max_chars))):
        if f[key] is not None:
            split = _filter(split, where, f"{key}={f[key]}", f"filter.{key}", _chars_within, heads, spec=spec,
                            bounds=bounds)
    return dedupe(split, where, f.dedupe, r, held_out or {}) if f.dedupe is not None else split


def dedupe(split: Any, where: str, mode: str, r: Roles, held_out: dict[str, Any]) -> Any:
    """Repeated rows dropped (the first kept); from the training split also rows that repeat a held-out row (of
    the evaluation split, or of a carved test split)."""
    import numpy as np

    keys = _keys(split, mode, r)
    repeated = keys.duplicated(keep="first").to_numpy()
    seen = {k for other in held_out.values() for k in _keys(other, mode, r)}
    in_held = keys.isin(seen).to_numpy()
    out = split.select(np.flatnonzero(~(repeated | in_held)))
    also = f" ({int((in_held & ~repeated).sum())} of them repeat {' or '.join(held_out)} rows)" if held_out else ""
    log.info("data: %s: dedupe=%s removed %d of %d rows%s", where, mode, len(split) - len(out), len(split), also)
    return _not_emptied(out, len(split), where, "filter.dedupe")


def _keys(split: Any, mode: str, r: Roles) -> Any:
    """One string per row: its text column(s), and its label with dedupe=text_label."""
    import pandas as pd

    from hfx.data import column

    parts = [pd.Series([_text(v) for v in column(split, name)], dtype=object) for name in r.texts]
    if mode == "text_label":
        parts.append(pd.Series([str(v) for v in split[r.label]], dtype=object))
    return functools.reduce(lambda a, b: a + "\x1f" + b, parts)


def filter_tokens(raw: Any, dcfg: Any, tokenizer: Any, columns: Any) -> Any:
    """Step 7: filter.min_tokens / max_tokens with the run's tokenizer, on train (and eval with filter.eval)."""
    f = dcfg.filter
    if f.min_tokens is None and f.max_tokens is None:
        return raw
    import datasets

    from hfx.data import tokenizer_fingerprint

    r = roles(dcfg, columns)
    heads, spec = _spec(r.texts)
    out = dict(raw)
    for which, split in raw.items():
        where = dcfg.train_split if which == "train" else dcfg.eval_split
        if which != "train" and not f.eval:
            continue
        require_texts(split, where, r)
        for key, bounds in (("min_tokens", (f.min_tokens, None)), ("max_tokens", (None, f.max_tokens))):
            if f[key] is None:
                continue
            # The tokenizer is hashed by its own fingerprint (datasets' hash of it changes once it has been called).
            fp = hashlib.sha256(repr((getattr(split, "_fingerprint", None), key, f[key], r.texts, tokenizer_fingerprint(tokenizer)))
                                .encode()).hexdigest()[:16]
            split = _filter(split, where, f"{key}={f[key]}", f"filter.{key}", _tokens_within, heads, spec=spec,
                            bounds=bounds, tokenizer=tokenizer, new_fingerprint=fp)
        out[which] = split
    return datasets.DatasetDict(out)


# --- filter functions (module level, so datasets fingerprints them the same in every process) ---

def _filter(split: Any, where: str, step: str, key: str, fn: Any, heads: list[str], new_fingerprint: str | None = None,
            **kwargs: Any) -> Any:
    from hfx.streaming import is_stream

    if is_stream(split):  # filtered lazily as rows are read (nothing to count yet)
        log.info("data: %s: %s applies to the stream as it is read", where, step)
        return split.filter(fn, input_columns=heads, batched=True, fn_kwargs=kwargs)
    before = len(split)
    out = split.filter(fn, input_columns=heads, batched=True, fn_kwargs=kwargs, new_fingerprint=new_fingerprint,
                       desc=f"{step} ({where})")
    log.info("data: %s: %s removed %d of %d rows", where, step, before - len(out), before)
    return _not_emptied(out, before, where, key)


def _not_emptied(split: Any, before: int, where: str, key: str) -> Any:
    if before and not len(split):
        raise HfxError(f"dataset.{key}: removed all {before} rows of the {where} split")
    return split


def _spec(texts: tuple[str, ...]) -> tuple[list[str], list[tuple[int, str]]]:
    """Top-level columns to read, and per text column (index into them, field or '')."""
    parsed = [name.partition(".")[::2] for name in texts]
    heads = list(dict.fromkeys(head for head, _ in parsed))
    return heads, [(heads.index(head), field) for head, field in parsed]


def _text(value: Any) -> str:
    """The text a filter reads from one cell: a list of words joined by spaces; missing = empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _texts(cols: tuple[list[Any], ...], spec: list[tuple[int, str]]) -> Iterator[list[str]]:
    for i, field in spec:
        yield [_text(v.get(field) if field and v is not None else v) for v in cols[i]]


def _nonblank(*cols: list[Any], spec: list[tuple[int, str]]) -> list[bool]:
    return [all(t.strip() for t in row) for row in zip(*_texts(cols, spec), strict=True)]


def _within(n: int, bounds: tuple[int | None, int | None]) -> bool:
    lo, hi = bounds
    return (lo is None or n >= lo) and (hi is None or n <= hi)


def _chars_within(*cols: list[Any], spec: list[tuple[int, str]], bounds: tuple[int | None, int | None]) -> list[bool]:
    return [all(_within(len(t), bounds) for t in row) for row in zip(*_texts(cols, spec), strict=True)]


def _tokens_within(*cols: list[Any], spec: list[tuple[int, str]], bounds: tuple[int | None, int | None],
                   tokenizer: Any) -> list[bool]:
    lengths = [[len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]] for texts in _texts(cols, spec)]
    return [all(_within(n, bounds) for n in row) for row in zip(*lengths, strict=True)]


def _label_in(labels: list[Any], keep: list[str]) -> list[bool]:
    wanted = set(keep)
    return [str(v) in wanted for v in labels]


# --- caps (dataset.max_*_samples) ---

def cap(split: Any, n: int | None) -> Any:
    if n is None or n < 0:
        return split
    return split.select(range(min(n, len(split))))


def nonempty(split: Any, which: str) -> Any:
    if len(split) == 0:
        name = "training" if which == "train" else "evaluation"
        raise HfxError(f"dataset: the {name} split is empty (check dataset.max_{which}_samples and the {which} file)")
    return split


def require_texts(split: Any, where: str, r: Roles) -> None:
    from hfx.data import require_columns

    for name in r.texts:
        require_columns(split, {r.texts_key: name}, where)


@contextmanager
def recorded() -> Iterator[list[str]]:
    """The `data: ...` lines the operations log inside the block (for `hfx check`, which has no log of its own)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("data: "):
                lines.append(message.removeprefix("data: "))

    handler, level = Collect(), log.level
    log.addHandler(handler)
    log.setLevel(min(level or logging.INFO, logging.INFO))
    try:
        yield lines
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
