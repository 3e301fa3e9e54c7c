"""`hfx export`: a tiny classification run exported, checked for parity and loaded with pipeline(); an export
whose check fails (bfloat16 under a tolerance it cannot meet) exits 1 in one line and leaves nothing; refused
requests exit 2 and touch nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY, assert_one_line_error, run_hfx, train_ok, tree_digest

# Every test here works on a run trained through the CLI.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, hfx_cache: Path) -> Path:
    """One tiny sequence-classification run (the bundled demo reviews), shared by the tests of this file."""
    path = tmp_path_factory.mktemp("export") / "run"
    train_ok(path, *TINY, "trainer.max_steps=6", "dataset.max_train_samples=120", "dataset.max_eval_samples=24",
             "trainer.save_strategy=no", cache=hfx_cache)
    return path


def test_export_passes_parity_and_loads_with_pipeline(run: Path, cache: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, pipeline

    out = tmp_path / "exported"
    r = run_hfx("export", f"run={run}", f"out={out}", cache=cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "parity  ok: max abs logit difference" in r.stdout and ", tolerance " in r.stdout, r.stdout
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert not list(tmp_path.glob("exported.tmp*"))

    report = json.loads((out / "hfx_export.json").read_text())
    assert report["rows"] == 24 and report["dtype"] == "float32" and report["merged"]
    # float32: the folder reproduces the trained model to 1e-5 of its largest logit (at least 1e-5 absolute)
    assert report["max_abs_diff"] <= report["tolerance"] == pytest.approx(1e-5 * max(1.0, report["largest_logit"]))
    assert report["loaders"] == ["AutoModelForSequenceClassification", "pipeline('text-classification')"]

    labels = json.loads((run / "model" / "hfx_task.json").read_text())["labels"]
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert [model.config.id2label[i] for i in range(len(labels))] == labels == ["negative", "positive"]

    card = (out / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert (run / "config.yaml").read_text().strip() in card  # the run's resolved config (secrets redacted)
    assert f"| eval_accuracy | {metrics['eval_accuracy']:.4f} |" in card
    assert "| 0 | negative |" in card and "max abs logit difference" in card

    (prediction,) = pipeline("text-classification", model=str(out))(["a quietly moving film"])
    assert prediction["label"] in labels


def test_a_failed_parity_check_exits_1_in_one_line_and_writes_nothing(run: Path, cache: Path,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    r = run_hfx("export", f"run={run}", f"out={out}", "dtype=bfloat16", "tolerance=1e-9", cache=cache)
    assert r.returncode == 1, r.stderr[-3000:]
    assert_one_line_error(r, "export: parity check failed: max abs logit difference", "tolerance 1e-09",
                          "bfloat16")
    assert not list(tmp_path.iterdir())  # neither the folder nor its temporary sibling


def test_refused_requests_exit_2_and_leave_an_existing_export_alone(run: Path, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = tree_digest(tmp_path)
    for args, needle in (([f"out={out}"], f"out={out}: already exists"),
                         ([f"out={tmp_path / 'x'}", "dtype=float64"], "dtype: expected one of float32, bfloat16"),
                         ([f"out={tmp_path / 'x'}", "tolerance=-1"], "tolerance: expected a non-negative number"),
                         ([f"out={tmp_path / 'x'}", "merg=false"], "unknown key 'merg' (did you mean 'merge'?)")):
        r = run_hfx("export", f"run={run}", *args, cache=cache)
        assert r.returncode == 2, (args, r.stderr[-2000:])
        assert_one_line_error(r, needle)
    r = run_hfx("export", f"run={tmp_path / 'nope'}", cache=cache)
    assert r.returncode == 2
    assert_one_line_error(r, "no such directory")
    assert tree_digest(tmp_path) == before
