"""The command line as a user meets it: help, config printing, and one clear line for each kind of bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, assert_one_line_error, hfx_env, run_hfx, shared


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


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


def test_unknown_command_suggests(cache) -> None:
    r = run_hfx("trian", cache=cache)
    assert r.returncode != 0 and "did you mean 'train'" in r.stderr


def _bad(cache: Path, tmp_path: Path, *args: str) -> str:
    """Run a bad `hfx train` in tmp_path; it must fail with one `error:` line, no traceback, and leave an
    earlier run (and the cache) untouched."""
    earlier = tmp_path / "runs" / "default" / "2020-01-01_00-00-00"
    earlier.mkdir(parents=True, exist_ok=True)
    (earlier / "metrics.json").write_text('{"eval_accuracy": 0.9}\n')
    (earlier / "config.yaml").write_text("experiment_name: default\n")
    before = _tree_digest(earlier)
    r = run_hfx("train", f"cache_dir={cache}", *args, cache=cache, cwd=tmp_path)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), r.stderr[-2000:]
    assert _tree_digest(earlier) == before
    return last


def test_unknown_group_option(cache, tmp_path) -> None:
    line = _bad(cache, tmp_path, "model=bert_larg")
    assert "bert_larg" in line and "minilm" in line and "tiny_bert" in line


def test_unknown_key_did_you_mean(cache, tmp_path) -> None:
    line = _bad(cache, tmp_path, "trainer.learning_rat=1e-3")
    assert "trainer.learning_rat" in line and "did you mean 'learning_rate'" in line


def test_wrong_type(cache, tmp_path) -> None:
    line = _bad(cache, tmp_path, "trainer.learning_rate=fast")
    assert "trainer.learning_rate" in line and "float" in line and "fast" in line


def test_missing_data_file(cache, tmp_path) -> None:
    line = _bad(cache, tmp_path, "dataset.data_files.train=no_such_file.csv")
    assert "dataset.data_files.train" in line and "no_such_file.csv" in line and "does not exist" in line


def test_missing_data_file_creates_no_run_dir(cache, tmp_path) -> None:
    _bad(cache, tmp_path, "dataset.data_files.train=no_such_file.csv")
    assert [p.name for p in (tmp_path / "runs" / "default").iterdir()] == ["2020-01-01_00-00-00"]


def test_text_column_not_in_data(cache, tmp_path) -> None:
    line = _bad(cache, tmp_path, "dataset=sst2", f"dataset.data_dir={shared('sst2')}", "dataset.columns.text=txt")
    assert "dataset.columns.text" in line and "'txt'" in line and "sentence, label" in line


def test_label_column_not_in_data(cache, tmp_path) -> None:
    line = _bad(cache, tmp_path, "dataset=sst2", f"dataset.data_dir={shared('sst2')}", "dataset.columns.label=y")
    assert "dataset.columns.label" in line and "'y'" in line and "sentence" in line


def test_empty_training_split(cache, tmp_path) -> None:
    line = _bad(cache, tmp_path, "dataset.max_train_samples=0")
    assert "training split is empty" in line and "max_train_samples" in line


def test_validation_labels_unseen_in_training(cache, tmp_path) -> None:
    (tmp_path / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\n")
    (tmp_path / "validation.csv").write_text("text,label\nfine film,neutral\n")
    line = _bad(cache, tmp_path, f"dataset.data_files.train={tmp_path / 'train.csv'}",
                f"dataset.data_files.validation={tmp_path / 'validation.csv'}")
    assert "never seen in training" in line and "neutral" in line


def test_lora_target_module_missing(cache, tmp_path) -> None:
    line = _bad(cache, tmp_path, "peft.target_modules=[qkv_proj]", "dataset.max_train_samples=8",
                "dataset.max_eval_samples=8")
    assert "peft.target_modules" in line and "qkv_proj" in line and "query" in line


def test_unknown_registry_name_in_a_value(cache, tmp_path) -> None:
    line = _bad(cache, tmp_path, "tokenizer.kind=wordpeice")
    assert "wordpeice" in line and "did you mean 'wordpiece'" in line


def test_full_error_shows_traceback(cache, tmp_path) -> None:
    r = run_hfx("train", "dataset.max_train_samples=0", f"cache_dir={cache}", cache=cache, cwd=tmp_path,
                env={"HYDRA_FULL_ERROR": "1"})
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_failed_job_marks_its_run_dir(cache, tmp_path) -> None:
    run = tmp_path / "bad"
    r = run_hfx("train", f"hydra.run.dir={run}", f"cache_dir={cache}", "dataset.max_train_samples=0", cache=cache,
                cwd=tmp_path)
    assert r.returncode != 0
    assert "training split is empty" in (run / "FAILED").read_text()
    assert not (run / "metrics.json").exists()


def test_predict_on_a_directory_that_is_not_a_run(cache, tmp_path) -> None:
    r = run_hfx("predict", f"run={tmp_path}", "input=hello", cache=cache)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: run=") and "not a finished hfx run" in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written into the user's folder


def test_experiments_lists_files(cache) -> None:
    r = run_hfx("experiments", cache=cache)
    assert r.returncode == 0 and "sst2_minilm_lora" in r.stdout


@pytest.mark.slow
def test_multirun_sweeps_a_grid(cache, tmp_path) -> None:
    r = run_hfx("train", "-m", *TINY, "dataset.max_train_samples=32", "dataset.max_eval_samples=16",
                "trainer.max_steps=2", "trainer.learning_rate=1e-3,2e-3", f"cache_dir={cache}",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cache=cache, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for i in (0, 1):
        assert (tmp_path / "sweep" / str(i) / "metrics.json").is_file()
    assert "learning_rate: 0.002" in (tmp_path / "sweep" / "1" / "config.yaml").read_text()


BAD_CSV = 'text,label\ngood film,pos\nbad "film,neg\nok,pos,extra\n'


@pytest.mark.parametrize(("args", "needles"), [
    (["model=tiny_bert", "tokenizer=wordpiece", "peft=none", "model.config.hidden_size=65",
      "dataset.max_train_samples=16", "dataset.max_eval_samples=8"],
     ["ValueError", "hidden size (65)", "HYDRA_FULL_ERROR=1"]),  # a library's own error, inside the job
    (["tokenizer.max_length=0"], ["tokenizer.max_length", "positive"]),
    (["trainer.per_device_train_batch_size=0"], ["trainer.per_device_train_batch_size", "positive"]),
    (["trainer.fp16=true"], ["trainer.fp16", "CUDA"]),
], ids=["library-error", "max-length-0", "batch-size-0", "fp16-on-cpu"])
def test_more_bad_inputs_are_one_line(cache, tmp_path, args, needles) -> None:
    line = _bad(cache, tmp_path, *args)
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(("content", "needles"), [
    (BAD_CSV.encode(), ["bad.csv", "ParserError", "Expected 2 fields in line 4"]),
    (b"text,label\n\xff\xfe bad bytes,pos\n", ["bad.csv", "Invalid UTF8"]),
], ids=["wrong-field-count", "not-utf8"])
def test_unreadable_data_names_the_file_and_the_cause(cache, tmp_path, content, needles) -> None:
    (tmp_path / "bad.csv").write_bytes(content)
    line = _bad(cache, tmp_path, "dataset.path=csv", f"dataset.data_files.train={tmp_path / 'bad.csv'}",
                f"dataset.data_files.validation={tmp_path / 'bad.csv'}")
    for needle in needles:
        assert needle in line, line


def test_missing_logger_package_is_one_line_with_the_install_command(cache, tmp_path) -> None:
    shadow = tmp_path / "shadow" / "wandb"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'wandb'\")\n")
    earlier = tmp_path / "runs"
    r = run_hfx("train", "logger=wandb", f"cache_dir={cache}", cache=cache, cwd=tmp_path,
                env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert_one_line_error(r, "logger", "pip install wandb")
    assert not earlier.exists()  # refused before any run directory


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


def test_a_validation_file_and_a_carved_split_conflict(cache, tmp_path) -> None:
    (tmp_path / "train.csv").write_text("text,label\n" + "good,pos\nbad,neg\n" * 10)
    line = _bad(cache, tmp_path, f"dataset.data_files.train={tmp_path / 'train.csv'}",
                f"dataset.data_files.validation={tmp_path / 'train.csv'}", "dataset.validation_split=0.1")
    assert "dataset.validation_split" in line and "conflict" in line


def test_exit_codes_tell_refused_from_failed(cache, tmp_path) -> None:
    # 2: refused before anything ran (command line, config, inputs it names); 1: a run that failed.
    assert run_hfx("trian", cache=cache).returncode == 2
    assert run_hfx("train", "trainer.learning_rat=1e-3", cache=cache, cwd=tmp_path).returncode == 2
    assert run_hfx("train", "dataset.data_files.train=missing.csv", cache=cache, cwd=tmp_path).returncode == 2
    failed = run_hfx("train", "dataset.max_train_samples=0", f"cache_dir={cache}", cache=cache, cwd=tmp_path)
    assert failed.returncode == 1 and "training split is empty" in failed.stderr
