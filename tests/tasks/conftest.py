"""Shared by the task tests: the settings a task receives; for the decoder-LM tests (causal_lm, sft), a BPE
tokenizer trained on the fly."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from hfx.tasks import TASKS, TaskSettings

LINES = [
    "First Citizen:",
    "Before we proceed any further, hear me speak.",
    "",
    "All:",
    "Speak, speak.",
    "You are all resolved rather to die than to famish?",
    "Resolved. resolved.",
    "We know't, we know't.",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    from hfx.tokenizer import build_tokenizer

    tcfg = OmegaConf.create(
        dict(kind="bpe", max_length=64, vocab_size=300, min_frequency=1, lowercase=False, train_samples=0)
    )
    mcfg = OmegaConf.create(dict(name_or_path=None, architecture="gpt2"))
    texts = LINES * 3 + ["Give three tips for staying healthy.", "Eat well, sleep, exercise.", "Sum: 1 2"]
    return build_tokenizer(
        tcfg, mcfg, lambda: iter(texts), str(tmp_path_factory.mktemp("tok")), "causal-lm-test"
    )


def settings_for(
    task: str,
    *,
    columns: dict | None = None,
    max_length: int = 64,
    label_names: list[str] | None = None,
    num_predictions: int = -1,
    **task_over,
) -> TaskSettings:
    """What `task` receives: its schema's defaults with `task_over`, its column defaults with `columns`."""
    entry = TASKS.get(task)
    return TaskSettings(
        task=OmegaConf.merge(OmegaConf.structured(entry.schema), task_over),
        columns=OmegaConf.merge(OmegaConf.structured(entry.columns), columns or {}),
        max_length=max_length,
        label_names=label_names,
        num_predictions=num_predictions,
    )


# End-to-end overrides: a tiny model trained for a few steps.
TINY_LM = [
    "tokenizer=bpe",
    "tokenizer.vocab_size=500",
    "logger=none",
    "trainer.learning_rate=1e-3",
    "trainer.logging_steps=5",
    "trainer.max_steps=8",
    "trainer.per_device_train_batch_size=8",
    "task.num_samples=3",
    "task.max_new_tokens=12",
]


def check_lm_run(run, fields: tuple[str, ...]) -> dict:
    import json
    import math

    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["eval_loss"]) and math.isfinite(metrics["eval_perplexity"])
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(set(fields) <= set(r) for r in rows)
    assert any(r["generated"] for r in rows)
    return metrics


def logged_losses(run) -> list[float]:
    """The training loss at each logging step of a run (log_history.jsonl)."""
    import json

    rows = [json.loads(line) for line in (run / "log_history.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def assert_loss_falls(run, by: float) -> list[float]:
    """The last logged training loss is at most `by` times the first: the run learned something."""
    losses = logged_losses(run)
    assert len(losses) >= 3 and losses[-1] <= by * losses[0], losses
    return losses


def unigram_perplexity_for(overrides: list[str], cache) -> float:
    """The unigram baseline of a causal_lm / sft run with these overrides (as scripts/unigram_baseline.py computes
    it): fitted on the train targets, scored on the eval targets, through the run's cached tokenizer and features."""
    from hfx.config.compose import compose
    from hfx.metrics.perplexity import target_tokens, unigram_perplexity
    from hfx.stages import prepare_data

    data = prepare_data(compose("train", [*overrides, f"cache_dir={cache}"]))
    return unigram_perplexity(
        target_tokens(data.features["train"]), target_tokens(data.features["eval"]), len(data.tokenizer)
    )


def baseline_script(name: str):
    """A module of scripts/ (the trivial baselines the README quotes), loaded by its path: the tests score the
    same baselines on their own slices."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
