"""Composition-time checks of the data operations (`dataset.*`, hfx/dataops.py), called by
`compose.check_composed`: the values first, without the data; then, when the operations name columns or labels or
count rows, those against the data as read (not filtered), so that a misspelling is refused before a run directory
exists."""

from __future__ import annotations

from typing import Any

from hfx.dataops import (
    DEDUPE_MODES,
    LENGTHS,
    Roles,
    carve_sizes,
    label_values,
    rename,
    require_texts,
    roles,
    text_ops,
    used_splits,
)
from hfx.errors import HfxError


def check_dataset(cfg: Any, task: Any) -> None:
    """Composition-time check of the data operations' values (hfx/config/compose.py)."""
    from hfx.data import FILE_BUILDERS, local_data_files
    from hfx.streaming import check_streaming
    from hfx.tasks import task_settings

    dcfg = cfg.dataset
    local = dcfg.path in FILE_BUILDERS or dcfg.data_dir or dcfg.data_files
    files = local_data_files(dcfg)[1] if local else {}
    check_streaming(cfg, task, files)  # what a stream cannot do (dataset.streaming=true)
    check_values(dcfg, task_settings(cfg, task).columns, task.name, files)


def check_dataset_names(cfg: Any, task: Any) -> None:
    """The columns and labels the operations name, and the rows they count, against the data (read, which the
    run then finds in datasets' cache). Nothing to read when no operation names any."""
    from hfx.data import read_splits
    from hfx.tasks import task_settings

    if names_data(cfg.dataset) and not cfg.dataset.streaming:  # a stream is not read here: checked as it is read
        check_names(read_splits(cfg.dataset), cfg.dataset, task_settings(cfg, task).columns)


def check_values(dcfg: Any, columns: Any, task: str, files: dict[str, list[str]]) -> None:
    """The dataset operations of a composed config, without the data: values in range, and the columns they need
    exist among the task's roles. `files`: split -> local files (empty for a hub dataset)."""
    f = dcfg.filter
    r = roles(dcfg, columns)
    for pair in LENGTHS:
        for key in pair:
            if f[key] is not None and f[key] < 0:
                raise HfxError(f"dataset.filter.{key}: expected a length >= 0 (or null), got {f[key]}")
        lo, hi = f[pair[0]], f[pair[1]]
        if lo is not None and hi is not None and lo > hi:
            raise HfxError(f"dataset.filter.{pair[0]}: {lo} is above dataset.filter.{pair[1]} ({hi}): no row passes")
    if f.dedupe is not None and f.dedupe not in DEDUPE_MODES:
        raise HfxError(f"dataset.filter.dedupe: expected one of {', '.join(DEDUPE_MODES)} (or null), got '{f.dedupe}'")
    if f.columns is not None and not f.columns:
        raise HfxError("dataset.filter.columns: expected at least one column (or null: the task's text column)")
    if text_ops(f) and not r.texts:
        raise HfxError(f"dataset.filter.columns: the {task} task has no text column to filter on; name the "
                       f"column(s): dataset.filter.columns=[...] (its roles: {', '.join(columns or [])})")
    needs_label = [k for k, on in (("keep_labels", dcfg.keep_labels is not None), ("stratify", dcfg.stratify),
                                   ("filter.dedupe", f.dedupe == "text_label")) if on]
    if needs_label and r.label is None:
        raise HfxError(f"dataset.{needs_label[0]}: the {task} task has no label column (dataset.columns.label)")
    if dcfg.keep_labels is not None and not dcfg.keep_labels:
        raise HfxError("dataset.keep_labels: expected at least one label (or null: keep every label)")
    for key in ("validation_split", "test_split"):
        value = dcfg[key]
        if value is not None and not (0 < value < 1 or (value >= 1 and float(value).is_integer())):
            raise HfxError(f"dataset.{key}: expected a fraction in (0, 1) or a number of rows (1, 2, ...), "
                           f"got {value:g}")
    v, t = dcfg.validation_split, dcfg.test_split
    if v is not None and t is not None and v < 1 and t < 1 and v + t >= 1:
        raise HfxError(f"dataset.test_split: validation_split {v:g} + test_split {t:g} = {v + t:g} leaves no rows "
                       "for training; the fractions must add up to less than 1")
    if t is not None and "test" in files:
        raise HfxError(f"dataset.test_split={t:g} conflicts with the 'test' file ({', '.join(files['test'])}): "
                       "evaluate on that file (hfx evaluate dataset.eval_split=test) or carve from train, not both")
    if dcfg.stratify and v is None and t is None:
        raise HfxError("dataset.stratify: nothing is carved to stratify; set dataset.validation_split or "
                       "dataset.test_split")
    if dcfg.stratify and not dcfg.validation_shuffle:
        raise HfxError("dataset.stratify: a stratified carve draws rows at random; it cannot take the contiguous "
                       "end of train (dataset.validation_shuffle=false)")
    if dcfg.shuffle_seed is not None and dcfg.shuffle_seed < 0:
        raise HfxError(f"dataset.shuffle_seed: expected a seed >= 0, got {dcfg.shuffle_seed}")
    new = list(dcfg.rename_columns.values())
    for old, name in dcfg.rename_columns.items():
        if not name or new.count(name) > 1:
            raise HfxError(f"dataset.rename_columns.{old}: expected a new column name of its own, got '{name}'")


def names_data(dcfg: Any) -> bool:
    """Whether the operations name columns or labels, or count rows: checked against the data before a run."""
    counts = any(x is not None and x >= 1 for x in (dcfg.validation_split, dcfg.test_split))
    return bool(dcfg.rename_columns or dcfg.keep_labels is not None or text_ops(dcfg.filter) or dcfg.stratify
                or counts)


def check_names(loaded: Any, dcfg: Any, columns: Any) -> None:
    """The columns and labels the operations name, and row counts to carve, against the data itself (read, not
    filtered): so that a misspelling is refused before a run directory exists."""
    named = used_splits(loaded, dcfg)
    named = rename(named, dcfg)
    r = roles(dcfg, columns)
    for where, split in named.items():
        _require(split, where, r, dcfg)
    if dcfg.keep_labels is not None and dcfg.train_split in named:
        label_values(named[dcfg.train_split], dcfg, r.label, dcfg.train_split)
    if dcfg.train_split in named and dcfg.eval_split not in named:
        carve_sizes(dcfg, len(named[dcfg.train_split]))


def _require(split: Any, where: str, r: Roles, dcfg: Any) -> None:
    from hfx.data import require_columns

    if text_ops(dcfg.filter) and (where == dcfg.train_split or dcfg.filter.eval):
        require_texts(split, where, r)
    if r.label and (dcfg.keep_labels is not None or dcfg.stratify or dcfg.filter.dedupe == "text_label"):
        require_columns(split, {"columns.label": r.label}, where)
