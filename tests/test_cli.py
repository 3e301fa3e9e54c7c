"""The command line as a user meets it: help, config printing, experiments, run directories (every kind of bad
input, and the one line each gets, is the table in test_bad_inputs.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY, hfx_env, run_hfx


def test_help_lists_commands(cache) -> None:
    r = run_hfx("--help", cache=cache)
    assert r.returncode == 0
    for cmd in ("train", "predict", "evaluate", "experiments"):
        assert cmd in r.stdout


def test_help_and_cfg_job_do_not_import_heavy_libraries(cache) -> None:
    code = (
        "import sys\n"
        "from hfx.cli import main\n"
        "for argv in (['--help'], ['train', '--cfg', 'job'], ['train', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('peft', 'wandb', 'torch', 'transformers', 'datasets') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=hfx_env(cache), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "learning_rate" in r.stdout  # --cfg job printed the config
    assert "HEAVY=\n" in r.stdout or r.stdout.rstrip().endswith("HEAVY="), r.stdout[-300:]


def test_train_help_lists_the_groups_a_user_picks(cache) -> None:
    r = run_hfx("train", "--help", cache=cache)
    assert r.returncode == 0, r.stderr
    for group, option in (("task", "sft"), ("model", "tiny_llama"), ("peft", "lora"), ("logger", "wandb"),
                          ("dataset", "sst2")):
        assert f"  {group} [" in r.stdout and f"    {option} " in r.stdout
    assert "schema/" not in r.stdout  # the per-entry schemas are Hydra plumbing, not choices
    assert "sst2_minilm_lora" in r.stdout  # experiments too


def test_cfg_job_shows_cli_overrides(cache) -> None:
    r = run_hfx("train", "trainer.learning_rate=0.00123", "peft.r=4", "--cfg", "job", cache=cache)
    assert r.returncode == 0, r.stderr
    assert "learning_rate: 0.00123" in r.stdout and "r: 4" in r.stdout


def test_experiments_lists_files(cache) -> None:
    r = run_hfx("experiments", cache=cache)
    assert r.returncode == 0 and "sst2_minilm_lora" in r.stdout


@pytest.mark.slow
def test_two_runs_started_together_get_two_directories(cache, tmp_path) -> None:
    import subprocess

    args = [sys.executable, "-m", "hfx", "train", *TINY, "dataset.max_train_samples=16",
            "dataset.max_eval_samples=8", "trainer.max_steps=1", f"cache_dir={cache}"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=hfx_env(cache), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-2000:]
    runs = sorted((tmp_path / "runs" / "default").iterdir())
    assert len(runs) == 2 and all((r / "metrics.json").is_file() for r in runs), runs


def test_a_users_train_file_replaces_the_default_datasets_files(cache, tmp_path) -> None:
    # The README's own example: the bundled demo option's validation file must not come along.
    rows = "".join(f"review {i} was {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
    (tmp_path / "mine.csv").write_text("review,stars\n" + rows)
    from hfx.config.compose import check_composed, validate

    cfg = validate("train", ["dataset.path=csv", f"dataset.data_files.train={tmp_path / 'mine.csv'}",
                             "dataset.validation_split=0.1", "dataset.columns.text=review",
                             "dataset.columns.label=stars"], check_composed)
    assert list(cfg.dataset.data_files) == ["train"]
    # ... and the job itself (composed again by Hydra) trains on it, carving validation from it.
    run = tmp_path / "run"
    r = run_hfx("train", *TINY, f"hydra.run.dir={run}", "dataset.path=csv",
                f"dataset.data_files.train={tmp_path / 'mine.csv'}", "dataset.validation_split=0.1",
                "dataset.columns.text=review", "dataset.columns.label=stars", "trainer.max_steps=1",
                f"cache_dir={cache}", cache=cache, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    saved = (run / "config.yaml").read_text()
    assert "mine.csv" in saved and "demo_sentiment" not in saved
