"""`dataset.streaming=true`: the training split read as a `datasets.IterableDataset`, never materialised.

The train split streams (local csv / json / text / parquet files and hub ids alike); the data operations that work
row by row (rename_columns, the filters but dedupe) apply to the stream lazily, the task's own preprocessing maps
over it (causal LM packs blocks as the rows go by), and the features are shuffled in a buffer of
`dataset.shuffle_buffer` with the run's seed (moved on by the Trainer's set_epoch each pass). The evaluation split is
materialised: the eval file, or the first `dataset.max_eval_samples` rows of a hub split. Where the whole training
split would be read otherwise (validating columns and values, label names, training a tokenizer) the first
`dataset.stream_head` rows stand for it. Under DDP accelerate gives each rank its own rows (hfx/trainer.py turns its
batch dispatching off: that concatenates batches of different widths and fails on dynamic padding)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from hfx.errors import HfxError

log = logging.getLogger("hfx")


def is_stream(split: Any) -> bool:
    """A split read lazily (datasets.IterableDataset): it has no length and no fingerprint."""
    import datasets

    return isinstance(split, datasets.IterableDataset)


def load_stream_splits(dcfg: Any, columns: Any) -> Any:
    """DatasetDict-like dict: `train` a stream after the row-wise data operations, `eval` materialised."""
    import datasets

    from hfx.data import builder_options, local_data_files, root_cause
    from hfx.dataops import cap, filter_split, nonempty, rename, roles

    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    builder, files = local_data_files(dcfg)
    train_name, eval_name = dcfg.train_split, dcfg.eval_split
    try:
        if files:
            if train_name not in files:
                raise HfxError(f"dataset: no '{train_name}' file among the splits {', '.join(files)}")
            options = builder_options(builder, files)
            train = datasets.load_dataset(builder, data_files={train_name: files[train_name]}, split=train_name,
                                          streaming=True, **options)
            evaluation = datasets.load_dataset(builder, data_files={eval_name: files[eval_name]}, split=eval_name,
                                               **options)
        else:
            hub = {"path": dcfg.path, "name": dcfg.name, "revision": dcfg.revision}
            train = datasets.load_dataset(**hub, split=train_name, streaming=True)
            evaluation = eval_slice(datasets.load_dataset(**hub, split=eval_name, streaming=True),
                                    dcfg.max_eval_samples)
        train = train._resolve_features()  # column names and types from the first rows; nothing else is read
    except HfxError:
        raise
    except Exception as e:  # a reader or hub error: its own first line
        raise HfxError(f"dataset: cannot stream {dcfg.path if not files else ', '.join(files[train_name])} "
                       f"({root_cause(e)})") from e
    r = roles(dcfg, columns)
    named = rename({train_name: train, eval_name: evaluation}, dcfg)
    train, evaluation = named[train_name], named[eval_name]
    if dcfg.filter.eval:
        evaluation = filter_split(evaluation, eval_name, dcfg, r)
    evaluation = nonempty(cap(evaluation, dcfg.max_eval_samples), "eval")
    train = filter_split(train, train_name, dcfg, r)  # lazily: applied as rows are read
    if dcfg.max_train_samples is not None and dcfg.max_train_samples >= 0:
        train = train.take(dcfg.max_train_samples)
    log.info("data: %s: streamed (%d shard(s)); %s: %d rows", train_name, train.n_shards, eval_name, len(evaluation))
    return {"train": train, "eval": evaluation}


def eval_slice(stream: Any, n: int | None) -> Any:
    """The first n rows of a stream (all of it when n is None) as a Dataset."""
    import datasets

    rows = stream.take(n) if n is not None and n >= 0 else stream
    return datasets.Dataset.from_list(list(rows), features=stream.features)


def head(stream: Any, n: int) -> Any:
    """The first n rows of a stream as a Dataset with a fingerprint of its contents (the tokenizer cache's key)."""
    import datasets
    from datasets.fingerprint import Hasher

    rows = list(stream.take(n))
    if not rows:
        raise HfxError("dataset: the training stream has no rows (after the filters)")
    features = stream.features
    split = datasets.Dataset.from_list(rows, features=features)
    split._fingerprint = hashlib.sha256(Hasher.hash(rows).encode()).hexdigest()[:16]
    return split


def sample(raw: Any, dcfg: Any) -> Any:
    """The splits with the stream's first `dataset.stream_head` rows in place of the stream (raw as it is when
    nothing streams): what checks, label names and a trained tokenizer read."""
    if "train" not in raw or not is_stream(raw["train"]):
        return raw
    out = dict(raw)
    out["train"] = head(raw["train"], dcfg.stream_head)
    log.info("data: %s: checks, labels and a trained tokenizer read the stream's first %d rows", dcfg.train_split,
             len(out["train"]))
    return out


def shuffled(features: Any, dcfg: Any, seed: int) -> Any:
    """Training features shuffled in a buffer (after the task's preprocessing, so causal LM shuffles blocks, not
    lines); dataset.shuffle_seed, else the run's seed. The Trainer's set_epoch reseeds each pass."""
    if dcfg.shuffle_buffer <= 0:
        return features
    return features.shuffle(seed=dcfg.shuffle_seed if dcfg.shuffle_seed is not None else seed,
                            buffer_size=dcfg.shuffle_buffer)


def count(split: Any) -> str:
    """Rows of a split for the log: a number, or `streamed`."""
    return "streamed" if is_stream(split) else str(len(split))


# --- composition-time refusals (hfx/config/data_checks.py) ---

def check_streaming(cfg: Any, task: Any, files: dict[str, list[str]]) -> None:
    """What a stream cannot do, refused before a run directory exists. `files`: split -> local files."""
    d, f = cfg.dataset, cfg.dataset.filter
    if not d.streaming:
        return
    if not getattr(task, "streaming", False):
        raise HfxError(f"dataset.streaming: the {task.name} task does not train from a stream yet; "
                       "set dataset.streaming=false")
    if cfg.trainer.max_steps <= 0:
        raise HfxError("trainer.max_steps: dataset.streaming=true needs trainer.max_steps > 0 (a stream has no "
                       "length to count epochs by)")
    for key in ("validation_split", "test_split"):
        if d[key] is not None:
            raise HfxError(f"dataset.{key}: carving rows out of the training split needs all of it, which "
                           "dataset.streaming=true never reads; evaluate on a file of its own "
                           f"(dataset.data_files.{d.eval_split}=<file>) or the data's own split "
                           f"(dataset.{key}=null)")
    if d.stratify:
        raise HfxError("dataset.stratify: a stratified carve needs the whole training split; not with "
                       "dataset.streaming=true")
    if f.dedupe is not None:
        raise HfxError("dataset.filter.dedupe: finding repeated rows needs the whole training split; not with "
                       "dataset.streaming=true (set dataset.filter.dedupe=null)")
    if d.keep_labels is not None:
        raise HfxError("dataset.keep_labels: not with dataset.streaming=true (the kept labels are checked against "
                       "the whole training split); filter the file, or set dataset.streaming=false")
    if d.shuffle_buffer < 0:
        raise HfxError(f"dataset.shuffle_buffer: expected rows >= 0 (0: file order), got {d.shuffle_buffer}")
    if d.stream_head < 1:
        raise HfxError(f"dataset.stream_head: expected rows >= 1, got {d.stream_head}")
    if files and d.eval_split not in files:
        raise HfxError(f"dataset.streaming: no '{d.eval_split}' file to evaluate on (a stream cannot be split); "
                       f"name one: dataset.data_files.{d.eval_split}=<file>")
