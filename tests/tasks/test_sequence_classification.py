"""Sequence classification end to end through the real CLI, plus its label handling."""

from __future__ import annotations

import csv
import json
from collections import Counter
from itertools import islice

import pytest
from omegaconf import OmegaConf

from hfx.errors import HfxError
from hfx.tasks import TASKS
from tests.conftest import TINY, assert_one_line_error, run_hfx, shared, train_ok
from tests.tasks.conftest import assert_loss_falls, settings_for

TASK = TASKS.get("sequence_classification")


def _settings(label_names=None):
    return settings_for("sequence_classification", label_names=label_names)


def _raw(train_labels, eval_labels):
    import datasets

    return {"train": datasets.Dataset.from_dict({"label": train_labels}),
            "eval": datasets.Dataset.from_dict({"label": eval_labels})}


def test_string_labels_get_a_stable_sorted_order() -> None:
    assert TASK.label_names(_raw(["pos", "neg", "neutral", "pos"], ["neg"]), _settings()) == ["neg", "neutral", "pos"]


def test_integer_labels_keep_their_ids_and_take_names() -> None:
    assert TASK.label_names(_raw([1, 0, 1], [0]), _settings()) == ["0", "1"]
    assert TASK.label_names(_raw([1, 0], [1]), _settings(label_names=["negative", "positive"])) == ["negative", "positive"]


def test_eval_labels_unseen_in_training_fail() -> None:
    with pytest.raises(HfxError, match="never seen in training: neutral"):
        TASK.label_names(_raw(["pos", "neg"], ["neutral"]), _settings())


@pytest.mark.extended  # about a minute on 2 cores: outside CI's 20 minutes (`pytest -m extended`)
def test_train_on_sst2_then_predict_and_evaluate(cache, tmp_path) -> None:
    run = tmp_path / "run"
    # The packaged MiniLM cut to its first two layers, trained in full: about 0.8 accuracy after 100 steps, where a
    # model from scratch may still sit at chance (when it starts to learn SST-2 varies from run to run).
    metrics = train_ok(run, "dataset=sst2", f"dataset.data_dir={shared('sst2')}", "model=minilm",
                       "+model.config.num_hidden_layers=2", "peft=none", "logger=none",
                       "trainer.learning_rate=5e-4", "trainer.warmup_steps=0.1", "trainer.logging_steps=10",
                       "dataset.max_train_samples=3200", "dataset.max_eval_samples=200", "trainer.max_steps=100",
                       "trainer.per_device_train_batch_size=32", cache=cache)
    for key in ("eval_accuracy", "eval_loss", "eval_f1_macro", "train_runtime", "train_samples_per_second"):
        assert key in metrics, key
    config = OmegaConf.load(run / "config.yaml")
    assert config.trainer.max_steps == 100 and config.model.config.num_hidden_layers == 2  # overrides are saved

    # It learned: the loss falls, and accuracy beats the train slice's majority class on the same eval rows.
    assert_loss_falls(run, by=0.85)
    with (shared("sst2") / "train.csv").open() as f:
        majority = Counter(r["label"] for r in islice(csv.DictReader(f), 3200)).most_common(1)[0][0]
    with (shared("sst2") / "validation.csv").open() as f:
        eval_rows = list(islice(csv.DictReader(f), 200))
    baseline = sum(r["label"] == majority for r in eval_rows) / len(eval_rows)
    assert metrics["eval_accuracy"] > baseline + 0.15, (metrics["eval_accuracy"], baseline)

    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == [r["sentence"] for r in eval_rows]  # dataset order, despite length grouping
    acc = sum(r["correct"] for r in rows) / len(rows)
    assert abs(acc - metrics["eval_accuracy"]) < 1e-9
    assert {r["reference"] for r in rows} <= {"negative", "positive"}

    from transformers import pipeline

    clf = pipeline("text-classification", model=str(run / "model"))
    out = clf(["a wonderful , moving film", "dull and tedious"])
    assert {o["label"] for o in out} <= {"negative", "positive"}

    # Bad predict / evaluate inputs are refused before anything is written inside the finished run.
    before = sorted(p.name for p in run.iterdir())
    r = run_hfx("predict", f"run={run}", f"input_file={tmp_path / 'missing.jsonl'}", cache=cache)
    assert_one_line_error(r, "input_file", "missing.jsonl")
    r = run_hfx("evaluate", f"run={run}", f"dataset.data_files.validation={tmp_path / 'missing.csv'}", cache=cache)
    assert_one_line_error(r, "dataset.data_files.validation", "missing.csv")
    r = run_hfx("evaluate", f"run={run}", "dataset.eval_splt=test", cache=cache)
    assert_one_line_error(r, "eval_splt", "did you mean 'eval_split'")
    assert sorted(p.name for p in run.iterdir()) == before

    r = run_hfx("predict", f"run={run}", "input=a wonderful film", cache=cache)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["prediction"][0]["label"] in {"negative", "positive"}

    r = run_hfx("evaluate", f"run={run}", "dataset.eval_split=test", "dataset.max_eval_samples=32", cache=cache)
    assert r.returncode == 0, r.stderr[-2000:]
    (evaluated,) = list((run / "evaluate").iterdir())
    assert "eval_accuracy" in json.loads((evaluated / "metrics.json").read_text())
    assert len((evaluated / "predictions.jsonl").read_text().splitlines()) == 32

    # A file of the user's replaces the run's data (the run read a data_dir, which would otherwise win).
    r = run_hfx("evaluate", f"run={run}", f"dataset.data_files.validation={shared('sst2') / 'test.csv'}",
                "dataset.max_eval_samples=16", cache=cache)
    assert r.returncode == 0, r.stderr[-2000:]
    (second,) = [p for p in (run / "evaluate").iterdir() if p != evaluated]
    assert len((second / "predictions.jsonl").read_text().splitlines()) == 16


@pytest.mark.slow
def test_minilm_lora_trains_head_and_pooler_and_serves_the_same_predictions(cache, tmp_path) -> None:
    run = tmp_path / "run"
    # fp32: after 3 steps many logits are near a tie, and bf16 evaluation vs fp32 serving could flip them.
    train_ok(run, "dataset.max_train_samples=96", "dataset.max_eval_samples=16", "trainer.max_steps=3",
             "trainer.bf16=false", cache=cache)
    log = (run / "train.log").read_text()
    lora_line = next(line for line in log.splitlines() if "LoRA r=" in line)
    trained = lora_line.split("trained in full: ")[1].split(";")[0].split(",")
    assert {t.rsplit(".", 1)[-1] for t in trained} == {"classifier", "pooler"}, trained
    # The merged model served by pipeline gives the run's own evaluation predictions.
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(run / "model"))
    served = [o["label"] for o in clf([r["input"] for r in rows])]
    assert served == [r["prediction"] for r in rows]
    assert json.loads((run / "model" / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}

    # hfx predict batches an input file (padding inside a batch changes no prediction) ...
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": r["input"]}) + "\n" for r in rows))
    r = run_hfx("predict", f"run={run}", f"input_file={texts}", "batch_size=5", cache=cache)
    assert r.returncode == 0, r.stderr[-2000:]
    printed = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [p["prediction"][0]["label"] for p in printed] == [r["prediction"] for r in rows]
    # ... and takes free text as typed: commas, quotes, `=` and `${` stay in the input.
    text = "it's great, isn't it? a=b ${oc.env:HOME}"
    r = run_hfx("predict", f"run={run}", f"input={text}", cache=cache)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["input"] == {"text": text}


@pytest.mark.extended  # outside CI's 20 minutes (make test-extended)
def test_same_seed_same_result_different_seed_differs(cache, tmp_path) -> None:
    args = [*TINY, "dataset.max_train_samples=64", "dataset.max_eval_samples=32", "trainer.max_steps=3"]
    a = train_ok(tmp_path / "a", *args, cache=cache)
    b = train_ok(tmp_path / "b", *args, cache=cache)
    c = train_ok(tmp_path / "c", *args, "trainer.seed=7", cache=cache)
    assert a["eval_loss"] == b["eval_loss"]  # the new head is built after seeding
    assert a["eval_loss"] != c["eval_loss"]
