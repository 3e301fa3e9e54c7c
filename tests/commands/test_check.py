"""`hfx train --dry-run` / `hfx check`: rows as the model sees them, parameter counts equal to the real model's, the
launch command, a fault caught before training, and no run directory."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import TINY, assert_one_line_error, run_hfx, shared


def _field(out: str, name: str) -> list[str]:
    """Every value printed on a `  <name>  ...` line of the report, in order."""
    return [m.group(1) for m in re.finditer(rf"^\s*{re.escape(name)}\s{{2,}}(.*)$", out, re.M)]


def _counts(out: str) -> tuple[int, int]:
    m = re.search(r"^parameters\s+([\d,]+) total, ([\d,]+) trainable", out, re.M)
    assert m, out
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def _no_run_dirs(cwd: Path) -> None:
    assert not [p for p in cwd.rglob("*") if p.name in ("runs", "multirun", "outputs", ".hydra")], list(cwd.rglob("*"))


@pytest.mark.slow
def test_dry_run_shows_rows_counts_of_the_real_model_and_the_command(cache, tmp_path) -> None:
    """The default experiment (MiniLM + LoRA): its pooler and new classifier are trained in full, which the counts
    must reflect without loading a weight."""
    args = [f"cache_dir={cache}", "experiment_name=dry run", "trainer.learning_rate=3e-4",
            "dataset.max_train_samples=64", "dataset.max_eval_samples=16"]
    r = run_hfx("train", "--dry-run", *args, cache=cache, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "3 training rows as the model sees them" in out
    tokens, labels = _field(out, "tokens"), _field(out, "labels as")
    assert len(tokens) == 3 and all(t.startswith("[CLS] ") and "[SEP]" in t for t in tokens)
    assert len(labels) == 3 and set(labels) <= {"negative", "positive"}
    assert all(set(m.split()) <= {"0", "1"} for m in _field(out, "attention_mask"))
    assert len(_field(out, "input_ids")) == 3 and not _field(out, "length")  # the Trainer drops that column

    from hfx.config.compose import compose
    from hfx.stages import prepare

    model = prepare(compose("train", args)).model
    real = (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert _counts(out) == real
    assert "built on the meta device" in out and "fresh      classifier" in out

    (launch,) = _field(out, "launch")
    assert shlex.split(launch) == ["hfx", "train", *args]
    _no_run_dirs(tmp_path)


@pytest.mark.slow
def test_check_shows_masked_prompt_labels_of_instruction_tuning(cache, tmp_path) -> None:
    data = shared("alpaca")
    r = run_hfx("check", "experiment=alpaca_sft_llama", f"dataset.data_dir={data}", f"cache_dir={cache}",
                cache=cache, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    labels = _field(r.stdout, "labels as")
    # The prompt is masked out of the loss; the response tokens follow it.
    assert len(labels) == 3 and all(re.match(r"<masked x\d+> \S", row) for row in labels), labels
    ids = _field(r.stdout, "labels")
    assert all(row.startswith("-100 -100") for row in ids)
    total, trainable = _counts(r.stdout)
    assert total == trainable > 1_000_000  # built from scratch, trained in full
    assert _field(r.stdout, "launch") == [f"hfx train experiment=alpaca_sft_llama dataset.data_dir={data} "
                                          f"cache_dir={cache}"]
    _no_run_dirs(tmp_path)


@pytest.mark.slow
def test_dry_run_catches_a_missing_lora_target_in_one_line(cache, tmp_path) -> None:
    r = run_hfx("train", "--dry-run", *TINY, "peft=lora", "peft.target_modules=[query,attn_proj]",
                "dataset.max_train_samples=64", f"cache_dir={cache}", cache=cache, cwd=tmp_path)
    assert_one_line_error(r, "peft.target_modules", "attn_proj")
    assert r.returncode == 2  # refused before anything ran
    _no_run_dirs(tmp_path)
