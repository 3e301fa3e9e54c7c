"""Shared fixtures: the real CLI in a subprocess, the shared datasets, composed configs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()

# A tiny from-scratch setup: fast enough for many end-to-end runs in CI.
TINY = ["model=tiny_bert", "tokenizer=wordpiece", "tokenizer.vocab_size=2000", "peft=none", "logger=none",
        "trainer.learning_rate=1e-3", "trainer.logging_steps=5"]


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared dataset {path} is not available")
    return path


@pytest.fixture(scope="session")
def hfx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir for the session: later runs reuse tokenizers and features like a user's repeat runs."""
    return tmp_path_factory.mktemp("hfx-cache")


def hfx_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               HFX_CACHE_DIR=str(cache), TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_hfx(*args: str, cache: Path, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess:
    """`hfx <args>` as a user runs it (a subprocess of the installed package)."""
    return subprocess.run(
        [sys.executable, "-m", "hfx", *args], cwd=cwd or ROOT, env={**hfx_env(cache), **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )


def train_ok(run_dir: Path, *overrides: str, cache: Path, **kw) -> dict:
    """Run `hfx train` into run_dir, assert success, return metrics.json."""
    r = run_hfx("train", f"hydra.run.dir={run_dir}", f"cache_dir={cache}", *overrides, cache=cache, **kw)
    assert r.returncode == 0, f"hfx train failed:\nSTDOUT:\n{r.stdout[-3000:]}\nSTDERR:\n{r.stderr[-5000:]}"
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def cache(hfx_cache: Path) -> Path:
    return hfx_cache


def predict_ok(run_dir: Path, value: str | dict, cache: Path, *overrides: str) -> list[dict]:
    """`hfx predict` as a user runs it: a string as input=..., a record (dict) through input_file=<jsonl>.
    Returns the prediction rows."""
    if isinstance(value, dict):
        source, target = run_dir.parent / "predict_input.jsonl", run_dir.parent / "predict_output.jsonl"
        source.write_text(json.dumps(value) + "\n")
        args = [f"input_file={source}", f"output_file={target}"]
    else:
        args = [f"input={value}"]  # free text, as typed
    r = run_hfx("predict", f"run={run_dir}", *args, *overrides, cache=cache)
    assert r.returncode == 0, f"hfx predict failed:\n{r.stderr[-4000:]}"
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert rows and all("prediction" in row for row in rows), r.stdout[-2000:]
    if isinstance(value, dict):
        assert [json.loads(line) for line in target.read_text().splitlines()] == rows
    return rows


def tree_digest(path: Path, skip: tuple[str, ...] = ()) -> str:
    """Every file under `path` (names and bytes) in one hash; top-level entries named in `skip` left out."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path)
        if f.is_file() and rel.parts[0] not in skip:
            h.update(str(rel).encode() + f.read_bytes())
    return h.hexdigest()


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    """A failed command printed exactly one `error:` line (besides datasets' progress bars) and no traceback."""
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    # datasets' own progress bars ("Generating train split: ... examples/s") also go to stderr: not ours.
    err = "\n".join(line for line in r.stderr.splitlines() if line.strip() and "examples/s" not in line)
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err[-2000:]
    for needle in needles:
        assert needle in err, err
