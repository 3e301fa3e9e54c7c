"""`dataset.streaming=true` (hfx/streaming.py): the same features as a materialised split, each rank its own rows,
end-to-end runs of a classifier and of a packed causal LM, and what a stream cannot do refused while composing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, TINY, shared, train_ok

STREAM = ["dataset.streaming=true", "trainer.max_steps=4", "dataset.stream_head=500", "dataset.shuffle_buffer=128"]
GPT2 = ["task=causal_lm", "model=tiny_gpt2", "tokenizer=bpe", "tokenizer.vocab_size=1000", "tokenizer.max_length=64",
        "peft=none", "logger=none", "trainer.learning_rate=1e-3", "task.num_samples=2", "task.max_new_tokens=8"]


def text_files(folder: Path, train_lines: int = 3000, eval_lines: int = 300) -> list[str]:
    """Train and validation text files from tiny_shakespeare (its head, and lines after it)."""
    lines = shared("tiny_shakespeare/input.txt").read_text().splitlines(keepends=True)
    (folder / "train.txt").write_text("".join(lines[:train_lines]))
    (folder / "validation.txt").write_text("".join(lines[train_lines:train_lines + eval_lines]))
    return ["dataset.path=text", f"dataset.data_files.train={folder / 'train.txt'}",
            f"dataset.data_files.validation={folder / 'validation.txt'}"]


def compose(*overrides: str, check: bool = False):
    from hfx.config.compose import check_composed, validate

    return validate("train", list(overrides), check_composed if check else None)


TASK_ARGS = {
    "sequence_classification": [*TINY, "dataset=sst2"],
    "masked_lm": [*TINY, "task=masked_lm", "dataset=sst2", "task.block_size=24"],
    "translation": [*TINY, "model=tiny_bart", "tokenizer=bpe", "tokenizer.vocab_size=600", "task=translation",
                    "dataset=multi30k"],
    "question_answering": [*TINY, "task=question_answering", "dataset=squad", "tokenizer.max_length=128",
                           "task.doc_stride=32"],
    "sft": ["task=sft", "dataset=alpaca", "model=tiny_gpt2", "tokenizer=bpe", "tokenizer.vocab_size=1000",
            "tokenizer.max_length=64", "peft=none", "logger=none"],
}


@pytest.mark.parametrize("task", [*TASK_ARGS, "causal_lm"])
def test_a_stream_is_preprocessed_into_the_features_of_the_materialised_split(task, tmp_path) -> None:
    """One encoding path: the streamed rows (file order, no shuffle buffer) come out as the same features, causal
    LM blocks included (packing carries a batch's remainder into the next), masked LM blocks (cut 1000 rows at a
    time either way) and question answering's windows (several per row) too: every task trains from a stream."""
    from hfx.stages import prepare_data

    if task == "causal_lm":
        args = [*GPT2, *text_files(tmp_path)]
    else:
        data = shared({"masked_lm": "sst2", "sequence_classification": "sst2", "translation": "multi30k",
                       "question_answering": "squad", "sft": "alpaca"}[task])
        args = [*TASK_ARGS[task], f"dataset.data_dir={data}", "dataset.max_eval_samples=16",
                "dataset.max_train_samples=2400"]
    args.append(f"cache_dir={tmp_path / 'cache'}")
    whole = prepare_data(compose(*args))
    streamed = prepare_data(compose(*args, "dataset.streaming=true", "trainer.max_steps=4", "dataset.shuffle_buffer=0"),
                            tokenizer=whole.tokenizer, labels=whole.labels)
    # More than one map batch (1000 rows): causal LM's 3000 lines are all its 463 blocks.
    n = 2500
    rows = list(streamed.features["train"].take(n))
    expected = whole.features["train"].select(range(min(n, len(whole.features["train"]))))
    assert len(rows) == len(expected) > 400
    assert rows == expected.to_list()
    assert streamed.features["eval"]["input_ids"] == whole.features["eval"]["input_ids"]


@pytest.mark.parametrize("files", [1, 2])
def test_each_rank_reads_rows_no_other_rank_reads(files, tmp_path) -> None:
    """Under DDP accelerate shards the stream (by files when there are enough, else by batches) with the loader
    settings hfx's TrainingArguments give it (the Trainer prepares its loader with device placement, as here); each
    of 2 ranks gets its own rows and together they get them all."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    from hfx.stages import prepare_data
    from hfx.trainer import training_arguments

    texts = [f"row {i} was {'good' if i % 2 else 'bad'}" for i in range(64)]
    for k in range(files):
        (tmp_path / f"train{k}.csv").write_text("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in
                                                                          enumerate(texts) if i % files == k))
    (tmp_path / "validation.csv").write_text("text,label\nrow 99 was good,1\nrow 98 was bad,0\n")
    train = "[" + ",".join(str(tmp_path / f"train{k}.csv") for k in range(files)) + "]"
    cfg = compose(*TINY, "dataset.path=csv", f"dataset.data_files.train={train}",
                  f"dataset.data_files.validation={tmp_path / 'validation.csv'}", "dataset.streaming=true",
                  "trainer.max_steps=4", "dataset.shuffle_buffer=16", f"cache_dir={tmp_path / 'cache'}")
    data = prepare_data(cfg)
    args = training_arguments(cfg, {}, tmp_path / "checkpoints", [])
    decode = data.tokenizer.decode

    def pad(rows: list[dict]) -> dict:
        return data.tokenizer.pad([{"input_ids": r["input_ids"]} for r in rows], return_tensors="pt")

    seen = []
    for rank in range(2):
        loader = prepare_data_loader(
            DataLoader(data.features["train"], batch_size=4, collate_fn=pad), num_processes=2,
            process_index=rank, put_on_device=True, dispatch_batches=args.accelerator_config.dispatch_batches)
        seen.append([decode(ids, skip_special_tokens=True) for batch in loader for ids in batch["input_ids"]])
    assert len(seen[0]) == len(seen[1]) == 32
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(texts)


def test_row_wise_data_operations_apply_to_the_stream_and_unseen_labels_are_refused(tmp_path) -> None:
    """rename_columns and the filters run on the stream as it is read. Labels come from the eval split and the
    stream's first rows: an integer label beyond them, met later in the stream, stops the run with one line."""
    from hfx.data import load_splits
    from hfx.errors import HfxError
    from hfx.stages import prepare_data
    from hfx.tasks import TASKS, task_settings

    rows = "".join(f"row {i} {'x' * (i % 3)},{i % 2}\n" for i in range(16))
    (tmp_path / "train.csv").write_text("review,label\n" + rows + "row 16 so-so,2\n")
    (tmp_path / "validation.csv").write_text("review,label\nrow 20,0\nrow 21,1\n")
    args = [*TINY, "dataset.path=csv", f"dataset.data_files.train={tmp_path / 'train.csv'}",
            f"dataset.data_files.validation={tmp_path / 'validation.csv'}", "dataset.streaming=true",
            "trainer.max_steps=4", "dataset.stream_head=8", "dataset.shuffle_buffer=0",
            "+dataset.rename_columns.review=text", f"cache_dir={tmp_path / 'cache'}"]
    cfg = compose(*args, "dataset.filter.min_chars=7")
    raw = load_splits(cfg.dataset, 42, columns=task_settings(cfg, TASKS.get(cfg.task.name)).columns)
    kept = [r["text"] for r in raw["train"]]
    assert kept and all(len(t) >= 7 for t in kept) and "row 0 " not in kept and "row 2 xx" in kept
    data = prepare_data(compose(*args))
    assert data.labels == ["0", "1"]
    with pytest.raises(HfxError, match="label 2 is beyond the model's 2 labels"):
        list(data.features["train"])


@pytest.mark.extended  # about 40 s: three runs
def test_a_killed_streaming_run_resumes_to_the_uninterrupted_result(cache, tmp_path) -> None:
    """The Trainer skips the batches a resumed run trained on by reading them again (the buffer shuffle is seeded):
    the same losses and weights as a run never interrupted."""
    import subprocess
    import sys
    import time

    from tests.conftest import hfx_env, run_hfx

    args = [*TINY, "dataset=sst2", f"dataset.data_dir={shared('sst2')}", *STREAM, "dataset.max_eval_samples=32",
            "trainer.per_device_train_batch_size=16", "trainer.save_steps=2", "trainer.logging_steps=1",
            f"cache_dir={cache}"]
    whole = tmp_path / "whole"
    train_ok(whole, *args, cache=cache)
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "hfx", "train", f"hydra.run.dir={run}", *args], env=hfx_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
        assert proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not (run / "metrics.json").exists(), "the kill came too late to test anything"
    r = run_hfx("train", f"resume={run}", cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]

    def losses(path: Path) -> list[float]:
        return [x["loss"] for x in map(json.loads, (path / "log_history.jsonl").read_text().splitlines()) if "loss" in x]

    assert losses(run) == losses(whole) and len(losses(whole)) == 4
    assert (run / "model" / "model.safetensors").read_bytes() == (whole / "model" / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_classifier_trains_from_a_stream(cache, tmp_path) -> None:
    run = tmp_path / "run"
    metrics = train_ok(run, *TINY, "dataset=sst2", f"dataset.data_dir={shared('sst2')}", *STREAM,
                       "dataset.max_eval_samples=32", "trainer.per_device_train_batch_size=16", cache=cache)
    assert metrics["world_size"] == 1 and "eval_accuracy" in metrics
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 32  # the materialised eval slice


@pytest.mark.slow
def test_a_causal_lm_packs_a_stream_into_blocks(cache, tmp_path) -> None:
    run = tmp_path / "run"
    metrics = train_ok(run, *GPT2, *text_files(tmp_path), *STREAM, "trainer.per_device_train_batch_size=8",
                       cache=cache)
    assert metrics["eval_perplexity"] > 1 and metrics["eval_target_tokens"] > 0
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["generated"] is not None for r in rows)


@pytest.mark.extended  # about 30 s on 2 cores: 2 gloo ranks
def test_a_stream_trains_under_two_process_ddp(cache, tmp_path) -> None:
    metrics = train_ok(tmp_path / "run", *TINY, "dataset=sst2", f"dataset.data_dir={shared('sst2')}", *STREAM,
                       "dataset.max_eval_samples=32", "launch=ddp", "launch.num_processes=2", cache=cache)
    assert metrics["world_size"] == 2  # the world size it really got


@pytest.mark.parametrize("overrides, needles", [
    (["trainer.max_steps=-1"], ["trainer.max_steps", "> 0"]),
    (["dataset=tiny_shakespeare", "task=causal_lm"], ["dataset.validation_split", "dataset.data_files.validation"]),
    (["dataset.filter.dedupe=text"], ["dataset.filter.dedupe", "whole training split"]),
    (["dataset.keep_labels=[positive]"], ["dataset.keep_labels"]),
    (["dataset.shuffle_buffer=-1"], ["dataset.shuffle_buffer", ">= 0"]),
    ([f"dataset.data_files.train={SHARED_DATA / 'sst2' / 'train.csv'}"], ["dataset.streaming: no 'validation' file"]),
])
def test_what_a_stream_cannot_do_is_refused_while_composing(overrides, needles) -> None:
    from hfx.errors import UsageError

    with pytest.raises(UsageError) as e:
        compose(*TINY, "dataset.streaming=true", "trainer.max_steps=4", *overrides, check=True)
    message = str(e.value)
    assert "\n" not in message and all(n in message for n in needles), message


@pytest.mark.slow
def test_question_answering_trains_from_a_stream_of_windows(cache, tmp_path) -> None:
    run = tmp_path / "run"
    metrics = train_ok(run, *TASK_ARGS["question_answering"], f"dataset.data_dir={shared('squad')}", *STREAM,
                       "dataset.max_eval_samples=16", "trainer.per_device_train_batch_size=8", cache=cache)
    assert metrics["world_size"] == 1 and {"eval_exact_match", "eval_f1", "eval_loss"} <= set(metrics)
    assert "streamed train" in (run / "train.log").read_text()
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 16


@pytest.mark.slow
def test_a_dataset_repository_streams_through_the_hub_branch(cache, tmp_path) -> None:
    """No hub here: a folder laid out as a dataset repository (train.csv, validation.csv) named by dataset.path goes
    through load_dataset's repository resolution, as a hub id does, and hfx's hub branch: both splits streamed,
    the eval split's first max_eval_samples rows materialised."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for split, rows in (("train", 300), ("validation", 40)):
        lines = (shared("sst2") / f"{split}.csv").read_text().splitlines(keepends=True)
        (repo / f"{split}.csv").write_text("".join(lines[:rows + 1]))
    run = tmp_path / "run"
    metrics = train_ok(run, *TINY, "dataset=sst2", f"dataset.path={repo}", *STREAM, "dataset.max_eval_samples=16",
                       cache=cache)
    assert "eval_accuracy" in metrics
    log = (run / "train.log").read_text()
    assert "train: streamed (1 shard(s)); validation: 16 rows" in log
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 16
