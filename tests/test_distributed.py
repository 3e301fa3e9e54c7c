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
def test_two_process_run_writes_one_run_dir_with_single_process_loss_scale(tmp_path) -> None:
    data = f"dataset.data_dir={shared('sst2')}"
    cache = tmp_path / "cache"  # fresh: the 2-process run trains the tokenizer and tokenizes; the single one reuses
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
    # Both ranks log to train.log: rank 0 trains the tokenizer and tokenizes each split, the other rank waits and
    # reuses its cache (each rank used to train and tokenize on its own: a bare accelerate PartialState() on a
    # CPU-only machine is one process, so main_process_first never waited).
    log = (run / "train.log").read_text()
    assert log.count("world size 2") == 2, log  # both ranks wrote here
    assert log.count("training a wordpiece tokenizer") == 1 and log.count("reusing wordpiece tokenizer") == 1, log
    for split in ("train", "eval"):
        assert log.count(f"tokenizing {split} split") == 1, log
        assert log.count(f"reusing tokenized {split} split") == 1, log

    single = train_ok(tmp_path / "single", *ARGS, data, cache=cache)
    assert single["world_size"] == 1
    # Sequence-classification loss is not doubled under DDP: same data and seed, same first-step scale.
    first_single, first_ddp = _losses(tmp_path / "single")[0], _losses(run)[0]
    assert first_ddp == pytest.approx(first_single, rel=0.25), (first_single, first_ddp)


# First-step parity per task (tests/ddp_step.py): 2 processes x 4 rows against 1 process x 8 rows, the same 8 rows,
# same seed, dropout off, masked LM's masks seeded per row (hfx draws them per batch: see ddp_step.RowSeededMasks).
# Measured: loss and grad_norm agree to 2e-7 (relative) for every task; the tolerance leaves room for float
# summation order (DDP all-reduces the gradients). A loss-scale error shows as 2x.
EXACT = 1e-4


@pytest.mark.slow
def test_every_task_matches_one_process_in_first_step_and_evaluation(tmp_path) -> None:
    """One 2-process launch runs every task: the first step's loss and grad_norm, the final metrics and the
    predictions (an odd number of evaluation rows) equal a 1-process run's; each rank scores about half the
    evaluation rows (causal LM / SFT used to score all of them on every rank)."""
    from tests import ddp_step

    cache, data = tmp_path / "cache", shared("sst2").parent
    driver = str(Path(ddp_step.__file__))
    one = subprocess.run([sys.executable, driver, str(tmp_path / "one.json"), str(cache), str(data)],
                         env=hfx_env(cache), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-4000:]
    accelerate = Path(sys.executable).with_name("accelerate")
    two = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", driver, str(tmp_path / "two.json"),
                          str(cache), str(data)], env=hfx_env(cache), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-4000:]
    single, ddp = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    ranks = [json.loads((tmp_path / f"two.rank{r}.json").read_text()) for r in (0, 1)]
    # main_process_first's view of the launch (a bare PartialState() on a CPU saw 1 process: no rank waited).
    assert [r["processes"] for r in ranks] == [2, 2]
    scored = [r["scored"] for r in ranks]
    assert set(single) == set(ddp) == set(ddp_step.CASES)
    for task, got in ddp.items():
        want = single[task]
        assert (want["world_size"], got["world_size"]) == (1, 2), task  # the world size it really got
        for key in ("loss", "grad_norm"):
            assert got[key] == pytest.approx(want[key], rel=EXACT), (task, key, want, got)
        assert set(got["metrics"]) == set(want["metrics"]), task
        for key, value in want["metrics"].items():  # eval loss (token-weighted or per batch), accuracy, F1, BLEU, ...
            assert got["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-9), (task, key, want, got)
        # Complete and in order: accelerate's padded duplicates at the end (7 rows over 2 ranks) are dropped.
        assert got["predictions"] == want["predictions"] and len(got["predictions"]) > 0, task
        rows = got["eval_rows"]
        if scored[0][task]:  # tasks whose evaluation batches carry labels (not QA)
            assert all(s[task] <= (rows + 1) // 2 for s in scored), (task, rows, scored)
            assert scored[0][task] + scored[1][task] >= rows, (task, rows, scored)
