"""Checkpoint discovery, torn writes and the keys a resumed run may change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hfx.checkpointing import complete_checkpoints, latest_checkpoint
from hfx.resume import changed_keys, safe
from tests.conftest import ROOT


def checkpoint(folder: Path, step: int, state: str | None = None) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_only_checkpoints_whose_save_finished_count(tmp_path) -> None:
    good = checkpoint(tmp_path, 10, json.dumps({"global_step": 10}))
    checkpoint(tmp_path, 20, None)  # killed before trainer_state.json
    checkpoint(tmp_path, 30, '{"global_st')  # killed while writing it
    checkpoint(tmp_path, 40, json.dumps({"global_step": 39}))  # not the state of this step
    (tmp_path / "checkpoint-x").mkdir()
    assert complete_checkpoints(tmp_path) == [good]
    assert latest_checkpoint(tmp_path, tidy=False) == good and (tmp_path / "checkpoint-20").exists()
    assert latest_checkpoint(tmp_path, tidy=True) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-x"]


def test_newest_complete_checkpoint_by_step_not_by_name(tmp_path) -> None:
    for step in (9, 10, 100):
        checkpoint(tmp_path, step, json.dumps({"global_step": step}))
    assert latest_checkpoint(tmp_path, tidy=False).name == "checkpoint-100"
    assert latest_checkpoint(tmp_path / "missing", tidy=True) is None


TORN = """
import os, signal, sys
from pathlib import Path
from hfx.files import write_text
from hfx.rundir import RunDir
Path.replace = lambda self, target: os.kill(os.getpid(), signal.SIGKILL)  # killed between write and rename
target = Path(sys.argv[1])
if target.suffix == ".json":
    RunDir(target.parent).write_json(target.name, {"eval_accuracy": 0.5})
else:
    write_text(target, "new " * 100000)
"""


def test_a_kill_mid_write_leaves_the_previous_complete_file(tmp_path) -> None:
    for name, old in (("metrics.json", '{"eval_accuracy": 0.9}\n'), ("config.yaml", "a: 1\n")):
        target = tmp_path / name
        target.write_text(old)
        r = subprocess.run([sys.executable, "-c", TORN, str(target)], cwd=ROOT, capture_output=True)
        assert r.returncode == -9
        assert target.read_text() == old
        assert any(p.name.startswith(f"{name}.tmp") for p in tmp_path.iterdir())  # the torn copy, beside it


def test_which_changes_a_resume_allows() -> None:
    old = {"trainer": {"learning_rate": 1e-3, "logging_steps": 5, "max_steps": 10}, "model": {"config": {"h": 8}},
           "logger": {"name": "none"}, "resume": None}
    new = {"trainer": {"learning_rate": 1e-3, "logging_steps": 2, "max_steps": 20}, "model": {"config": {"h": 16}},
           "logger": {"name": "wandb", "project": "p"}, "resume": "runs/x"}
    changed = changed_keys(old, new)
    assert changed == ["logger.name", "logger.project", "model.config.h", "resume", "trainer.logging_steps",
                       "trainer.max_steps"]
    assert [k for k in changed if not safe(k)] == ["model.config.h"]
    for key in ("trainer.learning_rate", "trainer.seed", "trainer.per_device_train_batch_size", "dataset.path",
                "tokenizer.max_length", "peft.r", "task.name", "trainer.gradient_accumulation_steps"):
        assert not safe(key), key


def test_a_secret_typed_on_the_command_line_must_be_given_again_to_resume(tmp_path) -> None:
    import pytest

    from hfx.errors import UsageError
    from hfx.resume import saved_overrides

    (tmp_path / ".hydra").mkdir()
    (tmp_path / "config.yaml").write_text("trainer: {}\n")
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- model=tiny_bert\n- +trainer.extra.hub_token=***redacted***\n- resume=x\n")
    with pytest.raises(UsageError, match=r"\+trainer.extra.hub_token held a secret.*give it again"):
        saved_overrides(tmp_path, "x", set())
    assert saved_overrides(tmp_path, "x", {"trainer.extra.hub_token"}) == ["model=tiny_bert"]


def test_lengths_read_from_arrow_are_the_ones_transformers_sampler_measures() -> None:
    import datasets
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from hfx.checkpointing import arrow_lengths

    class Tokenizer:
        model_input_names = ["input_ids", "attention_mask"]

    rows = {"input_ids": [[1] * (3 + i % 11) for i in range(60)], "labels": list(range(60))}
    whole = datasets.Dataset.from_dict(rows)
    picked = whole.shuffle(seed=3).select(range(0, 60, 2))  # rows through an indices mapping
    for ds in (whole, picked, picked.with_format("torch")):
        expected = LengthGroupedSampler(8, dataset=ds).lengths
        assert arrow_lengths(ds, Tokenizer()) == expected == arrow_lengths(ds, None)
    assert arrow_lengths(whole.remove_columns("input_ids"), Tokenizer()) is None
    assert arrow_lengths(whole.to_iterable_dataset(), Tokenizer()) is None
