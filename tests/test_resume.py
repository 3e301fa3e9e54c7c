"""Resume and preemption, as a user meets them: a run killed with SIGKILL, or stopped with SIGTERM, continues with
`hfx train resume=<run dir>` and ends with the metrics and weights of a run that was never interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, assert_one_line_error, hfx_env, run_hfx, train_ok

# 160 rows in batches of 16: 10 steps an epoch, 30 steps = 3 epochs; checkpoints at 7, 14, 21, 28 and 30, so a
# kill after the first lands mid-epoch and the resumed run crosses epochs.
RUN = [*TINY, "dataset.max_train_samples=160", "trainer.per_device_train_batch_size=16", "trainer.max_steps=30",
       "trainer.save_steps=7", "trainer.save_total_limit=2", "trainer.logging_steps=1"]
RUNTIME = ("runtime", "per_second", "setup_s")


def final(metrics: dict) -> dict:
    """Metrics without the timings; train_loss (a sum of per-step losses added in another order after a resume)
    rounded to 10 significant digits. Everything else must be bit-identical."""
    out = {k: v for k, v in metrics.items() if not any(s in k for s in RUNTIME)}
    out["train_loss"] = float(f"{out['train_loss']:.10g}")
    return out


def weights(run: Path) -> bytes:
    return (run / "model" / "model.safetensors").read_bytes()


def start(run: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hfx", "train", f"hydra.run.dir={run}", f"cache_dir={cache}", *RUN],
                            cwd=ROOT, env=hfx_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> None:
    state = run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.time() + timeout
    while not state.is_file():
        assert proc.poll() is None, f"the run ended before checkpoint-{step}:\n{proc.stderr.read()[-3000:]}"
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, hfx_cache) -> Path:
    run = tmp_path_factory.mktemp("resume") / "uninterrupted"
    train_ok(run, *RUN, cache=hfx_cache)
    return run


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(uninterrupted, cache, tmp_path) -> None:
    run = tmp_path / "killed"
    proc = start(run, cache)
    wait_for_checkpoint(proc, run, 14)  # in the second epoch: the resumed run must redraw its batch order
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert not (run / "metrics.json").exists(), "the kill came too late to test anything"
    # A save killed midway: files of a checkpoint without trainer_state.json, newer than the complete one.
    torn = run / "checkpoints" / "checkpoint-99"
    torn.mkdir(parents=True)
    (torn / "model.safetensors").write_bytes(b"\0" * 100)
    earlier = {p.name for p in (run / "checkpoints").iterdir()}

    r = run_hfx("train", f"resume={run}", cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (run / "train.log").read_text()
    newest = max(int(n.split("-")[1]) for n in earlier if n != "checkpoint-99")
    assert f"resuming from {run / 'checkpoints' / f'checkpoint-{newest}'}" in log
    assert "checkpoint-99: its save did not finish" in log and not torn.exists()
    # Exact on this platform (CPU, fp32): every metric and every weight byte.
    assert final(json.loads((run / "metrics.json").read_text())) == final(
        json.loads((uninterrupted / "metrics.json").read_text()))
    assert weights(run) == weights(uninterrupted)
    losses = [row["loss"] for row in map(json.loads, (run / "log_history.jsonl").read_text().splitlines())
              if "loss" in row]
    reference = [row["loss"] for row in map(json.loads, (uninterrupted / "log_history.jsonl").read_text().splitlines())
                 if "loss" in row]
    assert losses == reference


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_75_then_resumes(uninterrupted, cache, tmp_path) -> None:
    run = tmp_path / "preempted"
    proc = start(run, cache)
    wait_for_checkpoint(proc, run, 7)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    took = time.time() - sent
    assert proc.returncode == 75, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "stopped by SIGTERM at step" in lines[0] and f"resume={run}" in lines[0], stderr
    assert "Traceback" not in stderr
    step = int(lines[0].split("at step ")[1].split()[0])
    assert 7 <= step < 30 and (run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert (run / "INTERRUPTED").is_file() and not (run / "metrics.json").exists()
    assert took < 60

    r = run_hfx("train", f"resume={run}", "trainer.logging_steps=2", cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (run / "INTERRUPTED").exists()
    assert "resuming with changed settings: trainer.logging_steps=2.0 (was 1.0)" in (run / "train.log").read_text()
    assert final(json.loads((run / "metrics.json").read_text())) == final(
        json.loads((uninterrupted / "metrics.json").read_text()))
    assert weights(run) == weights(uninterrupted)


@pytest.mark.slow
def test_resume_refuses_overrides_that_change_the_result(uninterrupted, cache, tmp_path) -> None:
    before = {p: p.stat().st_mtime_ns for p in uninterrupted.rglob("*")}
    r = run_hfx("train", f"resume={uninterrupted}", "trainer.learning_rate=0.1", "trainer.seed=1",
                "trainer.logging_steps=3", cache=cache)
    assert r.returncode == 2
    assert_one_line_error(r, "trainer.learning_rate: 0.001 -> 0.1", "trainer.seed: 42 -> 1")
    assert "logging_steps" not in r.stderr
    assert {p: p.stat().st_mtime_ns for p in uninterrupted.rglob("*")} == before


def test_resume_names_what_is_not_a_run(cache, tmp_path) -> None:
    r = run_hfx("train", f"resume={tmp_path / 'nowhere'}", cache=cache)
    assert r.returncode == 2
    assert_one_line_error(r, "no such directory")
    r = run_hfx("train", f"resume={tmp_path}", cache=cache)
    assert_one_line_error(r, "not an hfx run directory")
    r = run_hfx("train", "resume=auto", "experiment_name=never_run_here", cache=cache, cwd=tmp_path)
    assert_one_line_error(r, "resume=auto: no unfinished run of experiment 'never_run_here'")


@pytest.mark.extended  # about 25-30 s; out of CI, which measured 19:28 with it
def test_resume_auto_picks_the_newest_unfinished_run(cache, tmp_path) -> None:
    # Two runs of one experiment stopped before their models were saved (a zero-step budget would finish them).
    runs = tmp_path / "runs" / "autoexp"
    for name in ("2026-01-01_00-00-00-aaaa", "2026-01-02_00-00-00-bbbb"):
        r = run_hfx("train", *TINY, "experiment_name=autoexp", f"hydra.run.dir={runs / name}", "trainer.max_steps=2",
                    "trainer.save_steps=1", cache=cache, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        import shutil

        shutil.rmtree(runs / name / "model")
        (runs / name / "metrics.json").unlink()
    r = run_hfx("train", "resume=auto", "experiment_name=autoexp", cache=cache, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (runs / "2026-01-02_00-00-00-bbbb" / "model").is_dir()
    assert not (runs / "2026-01-01_00-00-00-aaaa" / "model").exists()


@pytest.mark.slow
def test_two_runs_with_one_seed_are_identical(uninterrupted, cache, tmp_path) -> None:
    again = tmp_path / "again"
    metrics = train_ok(again, *RUN, cache=cache)
    assert final(metrics) == final(json.loads((uninterrupted / "metrics.json").read_text()))
    assert weights(again) == weights(uninterrupted)
    env = json.loads((again / "environment.json").read_text())
    assert env["packages"]["torch"] and env["packages"]["transformers"]
    assert env["git"]["commit"] == subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                                  text=True).stdout.strip()
    import hashlib

    (train_file,) = env["data"]["train"]
    assert env["data"]["train"][train_file] == "sha256:" + hashlib.sha256(Path(train_file).read_bytes()).hexdigest()
