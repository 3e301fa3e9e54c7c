"""The same run under `accelerate launch` with 2 CPU processes (gloo): one run dir, rank 0 writes, same loss scale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, hfx_env, shared, train_ok

ARGS = [*TINY, "dataset=sst2", "dataset.max_train_samples=128", "dataset.max_eval_samples=32",
        "trainer.max_steps=4", "trainer.logging_steps=1", "trainer.per_device_train_batch_size=16"]


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "log_history.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
def test_two_process_run_writes_one_run_dir_with_single_process_loss_scale(cache, tmp_path) -> None:
    data = f"dataset.data_dir={shared('sst2')}"
    single = train_ok(tmp_path / "single", *ARGS, data, cache=cache)
    assert single["world_size"] == 1

    accelerate = Path(sys.executable).with_name("accelerate")
    # --multi_gpu with 2 processes really starts 2 gloo ranks on a CPU-only machine (`--cpu` would start one).
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hfx", "train", *ARGS, data,
           f"cache_dir={cache}"]
    r = subprocess.run(cmd, cwd=tmp_path, env=hfx_env(cache), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    runs = list((tmp_path / "runs" / "default").iterdir())
    assert len(runs) == 1, runs  # both ranks agreed on one timestamped run dir
    run = runs[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2  # the world size it really got
    assert "eval_accuracy" in metrics and (run / "model" / "model.safetensors").is_file()
    assert r.stdout.count("finished") == 1  # only rank 0 prints the summary
    # Sequence-classification loss is not doubled under DDP: same data and seed, same first-step scale.
    first_single, first_ddp = _losses(tmp_path / "single")[0], _losses(run)[0]
    assert first_ddp == pytest.approx(first_single, rel=0.25), (first_single, first_ddp)
