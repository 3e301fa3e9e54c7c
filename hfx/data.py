"""Loading raw splits (hub ids or local files) and caching tokenized features by fingerprint."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.distributed import main_process_first
from hfx.errors import HfxError
from hfx.files import new_dir
from hfx.registry import Registry

log = logging.getLogger("hfx")

# Builders that read local files, with the file extensions they take.
FILE_BUILDERS: Registry[tuple[str, ...]] = Registry("dataset builder")
FILE_BUILDERS.add("csv", (".csv", ".tsv"))
FILE_BUILDERS.add("json", (".json", ".jsonl"))
FILE_BUILDERS.add("parquet", (".parquet",))
FILE_BUILDERS.add("text", (".txt", ".text"))

# Bump when preprocessing changes in a way the fingerprint cannot see.
PREPROCESS_VERSION = "1"


def _files(spec: Any) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, str):
        return [spec]
    return [str(s) for s in spec]


def local_data_files(dcfg: DictConfig) -> tuple[str, dict[str, list[str]]]:
    """(builder, split -> absolute files) for local data; ('', {}) for a hub dataset. Missing files fail here."""
    if dcfg.data_dir:
        folder = Path(os.path.expanduser(dcfg.data_dir))
        if not folder.is_dir():
            raise HfxError(f"dataset.data_dir: folder '{dcfg.data_dir}' does not exist")
        found: dict[str, list[str]] = {}
        builders = set()
        for builder in FILE_BUILDERS:
            for ext in FILE_BUILDERS.get(builder):
                for f in sorted(folder.glob(f"*{ext}")):
                    found.setdefault(f.stem, []).append(str(f.resolve()))
                    builders.add(builder)
        if not found:
            exts = ", ".join(e for b in FILE_BUILDERS for e in FILE_BUILDERS.get(b))
            raise HfxError(f"dataset.data_dir: no data files ({exts}) in '{dcfg.data_dir}'")
        if len(found) == 1 and dcfg.train_split not in found:  # one file (e.g. input.txt) is the train split
            found = {dcfg.train_split: next(iter(found.values()))}
        if len(builders) > 1:
            raise HfxError(f"dataset.data_dir: '{dcfg.data_dir}' mixes file types ({', '.join(sorted(builders))})")
        if dcfg.data_files:  # files named for some splits replace the folder's files of those splits
            _, named = named_files(dcfg)
            found.update(named)
            return builder_for([f for fs in found.values() for f in fs], "dataset.data_files"), found
        return builders.pop(), found
    return named_files(dcfg)


def named_files(dcfg: DictConfig) -> tuple[str, dict[str, list[str]]]:
    """(builder, split -> absolute files) for `dataset.data_files`."""
    data_files = OmegaConf.to_container(dcfg.data_files, resolve=True) if dcfg.data_files else {}
    out: dict[str, list[str]] = {}
    for split, spec in data_files.items():
        files = []
        for f in _files(spec):
            p = Path(os.path.expanduser(f))
            if not p.is_file():
                raise HfxError(f"dataset.data_files.{split}: file '{f}' does not exist")
            if p.stat().st_size == 0:
                raise HfxError(f"dataset.data_files.{split}: file '{f}' is empty (0 bytes)")
            files.append(str(p.resolve()))
        out[split] = files
    if dcfg.path in FILE_BUILDERS and not out:
        raise HfxError(f"dataset.data_files: builder '{dcfg.path}' reads local files; give at least a train file")
    if not out:
        return "", out
    files = [f for fs in out.values() for f in fs]
    if dcfg.path in FILE_BUILDERS:
        # The files' own kind wins over the option's builder (a .jsonl named on top of a csv dataset option); files
        # of an extension hfx does not know are read by that builder.
        known = all(any(f.endswith(FILE_BUILDERS.get(b)) for b in FILE_BUILDERS) for f in files)
        return (builder_for(files, "dataset.data_files") if known else dcfg.path), out
    # Local files named on top of a hub dataset option: the builder follows the files' extension.
    return builder_for(files, "dataset.data_files"), out


def builder_options(builder: str, data_files: dict[str, list[str]]) -> dict[str, Any]:
    """Reader options the files' extension implies: tab-separated for .tsv (the csv reader splits on commas)."""
    files = [f for fs in data_files.values() for f in fs]
    tsv = [f.endswith(".tsv") for f in files]
    if builder != "csv" or not any(tsv):
        return {}
    if not all(tsv):
        raise HfxError(f"dataset: mixes .csv and .tsv files ({', '.join(files)}); name files of one kind")
    return {"sep": "\t"}


def builder_for(files: list[str], key: str) -> str:
    found = {b for f in files for b in FILE_BUILDERS if f.endswith(FILE_BUILDERS.get(b))}
    if len(found) != 1:
        exts = ", ".join(e for b in FILE_BUILDERS for e in FILE_BUILDERS.get(b))
        raise HfxError(f"{key}: cannot tell how to read {', '.join(files)} (one kind of file, by extension: {exts})")
    return found.pop()


def load_splits(dcfg: DictConfig, seed: int, eval_only: bool = False, columns: Any = None) -> Any:
    """DatasetDict with `train` and `eval` splits (only `eval` with eval_only), after the data operations the
    config sets (hfx/dataops.py: renaming, filters, carving, shuffling, caps). `columns`: the task's column roles
    (TaskSettings.columns), which the operations read; None when no operation needs them."""
    from hfx.dataops import apply_ops

    if dcfg.streaming and not eval_only:
        from hfx.streaming import load_stream_splits

        return load_stream_splits(dcfg, columns)
    return apply_ops(read_splits(dcfg, eval_only), dcfg, seed, eval_only, columns)


def read_splits(dcfg: DictConfig, eval_only: bool = False) -> Any:
    """The data as read (DatasetDict of every split it has), before any data operation."""
    import datasets

    # datasets logs a parser's failure itself before raising; hfx reports it (root_cause) in its one line.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    builder, data_files = local_data_files(dcfg)
    if eval_only and dcfg.streaming and dcfg.eval_split in data_files:  # a streamed run's train file stays unread
        data_files = {dcfg.eval_split: data_files[dcfg.eval_split]}
    if data_files and dcfg.train_split not in data_files and not eval_only:
        raise HfxError(f"dataset: no '{dcfg.train_split}' file among the splits {', '.join(data_files)}")
    try:
        if data_files:
            loaded = datasets.load_dataset(builder, data_files=data_files, **builder_options(builder, data_files))
        else:
            loaded = datasets.load_dataset(dcfg.path, dcfg.name, revision=dcfg.revision)
    except (FileNotFoundError, ConnectionError) as e:
        raise HfxError(f"dataset.path: cannot load '{dcfg.path}' ({type(e).__name__}: {str(e).splitlines()[0]}); "
                       "local files: dataset.data_dir=<folder> or dataset.data_files.<split>=<file>") from e
    except (ValueError, datasets.exceptions.DatasetGenerationError) as e:
        if not data_files:
            raise HfxError(f"dataset: cannot read {dcfg.path} ({root_cause(e)})") from e
        split, cause = _failing_split(builder, data_files, e)
        files = ", ".join(data_files[split] if split else dict.fromkeys(f for fs in data_files.values() for f in fs))
        # datasets' own words for files that hold no rows (a header only).
        if re.match(r'Instruction ".+" corresponds to no data', str(cause)):
            raise HfxError(f"dataset: no rows in the {split} file {files} (empty, or a header only)") from e
        raise HfxError(f"dataset: cannot read {files} ({root_cause(cause)})") from e
    return loaded


def _failing_split(builder: str, data_files: dict[str, list[str]], error: BaseException
                   ) -> tuple[str | None, BaseException]:
    """The split whose files fail to load on their own, and that error (loaded together, one split's empty file
    fails as a type clash with another's)."""
    import datasets

    if len(data_files) == 1:
        return next(iter(data_files)), error
    for split, files in data_files.items():
        try:
            datasets.load_dataset(builder, data_files={split: files}, **builder_options(builder, data_files))
        except Exception as e:  # any reader error is the answer
            return split, e
    return None, error


def root_cause(e: BaseException) -> str:
    """The first line of the parser's own error: datasets wraps it in a generic 'An error occurred', and its JSON
    reader falls back to a second parser whose error says less than pyarrow's (which names the row)."""
    chain = [e]
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
        chain.append(e)
    arrow = [c for c in chain if type(c).__name__ == "ArrowInvalid"]
    e = arrow[0] if arrow else chain[-1]
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def column(split: Any, name: str) -> list[Any]:
    """A column by name; `a.b` reads field b of dict column a (e.g. translation.en)."""
    head, _, field = name.partition(".")
    values = split[head]
    return [v[field] for v in values] if field else list(values)


def require_columns(split: Any, cfg_keys: dict[str, str], what: str) -> None:
    """Fail with the config key, the missing column and the columns that exist."""
    cols = split.column_names
    for key, name in cfg_keys.items():
        head = name.split(".")[0]
        if head not in cols:
            raise HfxError(
                f"dataset.{key}: column '{head}' is not in the {what} data; columns: {', '.join(cols)}"
                f"{_delimiter_hint(cols)}"
            )


def _delimiter_hint(cols: list[str]) -> str:
    """One column whose name holds another delimiter: the file was read with the wrong one."""
    import csv

    if len(cols) != 1:
        return ""
    try:
        delimiter = csv.Sniffer().sniff(cols[0], delimiters=";\t|").delimiter
    except csv.Error:
        return ""
    return f" (one column: is the file delimited by {delimiter!r}? .csv files are read with ',', .tsv with tabs)"


def require_values(raw: Any, cfg_keys: dict[str, str]) -> None:
    """Each named column of each split holds one type of value and none missing (an empty CSV cell, a JSON null)."""
    from datasets import Json

    for key, name in cfg_keys.items():
        head = name.split(".")[0]
        if any(isinstance(split.features[head], Json) for split in raw.values()):
            # datasets' type for a column whose rows differ in type (1 in one row, "pos" in another)
            kinds = sorted({type(v).__name__ for split in raw.values() for v in split[head] if v is not None})
            raise HfxError(f"dataset.{key}: column '{head}' mixes value types ({', '.join(kinds)}); use one type")
        for what, split in raw.items():
            # Arrow's null count, no Python loop over the rows, where the table is the split as it is (not a
            # selection of its rows through an indices mapping, nor a stream's head)
            table = getattr(getattr(split, "data", None), "table", None)
            whole = table is not None and getattr(split, "_indices", 0) is None and head in table.column_names
            missing = table.column(head).null_count if whole else sum(v is None for v in split[head])
            if missing:
                raise HfxError(f"dataset.{key}: column '{head}' has {missing} empty value(s) in the {what} data; "
                               "fill or drop those rows")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The serialised tokenizer from its added tokens on (normalizer, pre-tokenizer, vocabulary, post-processor),
        # hashed as text (parsing and re-dumping a 30k vocabulary took 0.1-0.2 s). Truncation and padding, which
        # come before and change as soon as the tokenizer is called, are left out.
        state = backend.to_str()
        h.update(state[max(state.find('"added_tokens"'), 0):].encode())
    else:
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    h.update(repr((tokenizer.padding_side, tokenizer.truncation_side, getattr(tokenizer, "chat_template", None))).encode())
    return h.hexdigest()[:16]


def features_fingerprint(split: Any, tokenizer: Any, settings: Any, labels: list[str] | None, train: bool) -> str:
    parts = {
        "data": split._fingerprint,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "task": OmegaConf.to_container(settings.task, resolve=True),
        "columns": OmegaConf.to_container(settings.columns, resolve=True),
        "max_length": settings.max_length,
        "labels": labels,
        "train": train,
        "version": PREPROCESS_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def tokenize_splits(raw: Any, task: Any, tokenizer: Any, settings: Any, labels: list[str] | None,
                    cache_dir: str) -> dict[str, Any]:
    """Tokenize train and eval, reusing the cache when data, tokenizer and preprocessing settings are unchanged."""
    import datasets

    from hfx.streaming import is_stream

    root = Path(os.path.expanduser(cache_dir)) / "features"
    out = {}
    for split_name, split in raw.items():
        train = split_name == "train"
        if is_stream(split):  # dataset.streaming: mapped lazily as it is read, not cached
            out[split_name] = task.preprocess(split, tokenizer, settings, labels, train)
            continue
        fp = features_fingerprint(split, tokenizer, settings, labels, train)
        path = root / f"{task.name}-{split_name}-{fp}"
        with main_process_first():
            if path.is_dir():
                log.info("reusing tokenized %s split from cache %s", split_name, path)
                out[split_name] = datasets.load_from_disk(str(path))
                continue
            log.info("tokenizing %s split (%d rows) -> cache %s", split_name, len(split), path)
            features = task.preprocess(split, tokenizer, settings, labels, train)
            with new_dir(path) as tmp:
                features.save_to_disk(str(tmp))
            out[split_name] = datasets.load_from_disk(str(path))
    return out


def map_features(split: Any, encode: Any, train: bool, **kwargs: Any) -> Any:
    """Run a task's batched `encode` over a raw split, dropping the raw columns; hfx caches the result itself. A stream
    is mapped by the same `encode`, lazily (rows come out as the stream is read)."""
    from hfx.streaming import is_stream

    if is_stream(split):
        return split.map(encode, batched=True, remove_columns=split.column_names, **kwargs)
    return split.map(encode, batched=True, remove_columns=split.column_names, keep_in_memory=True,
                     desc=f"tokenize {'train' if train else 'eval'}", **kwargs)
