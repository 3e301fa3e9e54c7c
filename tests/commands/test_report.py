"""`hfx report`: the page a real sweep of tiny models gets (ranked jobs, failed ones included, plots that decode,
every run named, the best job against the base config), a classification run's per-class scores and confusion
matrix against scikit-learn, a generation run's samples, and bad paths refused in one line."""

from __future__ import annotations

import base64
import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hfx.report import Page
from tests.conftest import TINY, assert_one_line_error, run_hfx, shared, train_ok

SMALL = [*(o for o in TINY if not o.startswith("trainer.learning_rate=")), "dataset.max_train_samples=32",
         "dataset.max_eval_samples=16", "trainer.max_steps=4", "trainer.logging_steps=1",
         "trainer.per_device_train_batch_size=8", "trainer.eval_strategy=steps", "trainer.eval_steps=2"]


class Tables(HTMLParser):
    """The tables of a page by id (rows of cell texts, header first), its images and its <code> texts by id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str]] = []
        self.code: dict[str, str] = {}
        self._table = self._cell = self._code = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(a)
        elif tag == "code":
            self._code = a.get("id", "")
            self.code[self._code] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._table[-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "code":
            self._code = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data
        if self._code is not None:
            self.code[self._code] += data


def report(*args: str, cache: Path, cwd: Path) -> tuple[Path, Tables]:
    r = run_hfx("report", *args, cache=cache, cwd=cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("report: "), r.stdout
    page = cwd / last.removeprefix("report: ")
    assert page.name == "report.html" and page.is_file()
    return page, Tables(page.read_text())


def check_images(page: Path, tables: Tables) -> set[str]:
    """Every image is a PNG embedded in the page and written beside it with the same bytes; each decodes."""
    from PIL import Image

    names = set()
    for img in tables.images:
        data = base64.b64decode(img["src"].removeprefix("data:image/png;base64,"))
        file = page.parent / img["data-file"]
        assert file.read_bytes() == data
        with Image.open(file) as im:
            im.verify()
        with Image.open(file) as im:
            assert im.format == "PNG" and im.size[0] > 0 and im.size[1] > 0
        names.add(file.name)
    assert names == {p.name for p in page.parent.glob("*.png")}
    return names


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, hfx_cache: Path) -> Path:
    """A 2x2 grid of tiny models (learning rate x warmup) and a third learning rate that fails both its jobs."""
    root = tmp_path_factory.mktemp("report")
    r = run_hfx("train", "-m", *SMALL, f"cache_dir={hfx_cache}", "trainer.learning_rate=1e-4,1e-2,-1",
                "trainer.warmup_steps=0,0.1", cache=hfx_cache, cwd=root)
    assert r.returncode == 1 and "2 of 6 sweep jobs did not finish" in r.stderr, r.stderr[-3000:]
    (sweep_dir,) = (root / "multirun" / "default").iterdir()
    return sweep_dir


@pytest.mark.slow
def test_a_sweep_report_ranks_the_jobs_plots_them_and_names_every_run(sweep: Path, hfx_cache: Path) -> None:
    root = sweep.parent.parent.parent
    page, t = report(cache=hfx_cache, cwd=root)  # `hfx report` alone: the newest sweep or run here, this sweep
    assert page == sweep / "report" / "report.html"
    summary = json.loads((sweep / "summary.json").read_text())
    jobs = {str(j["job"]): j for j in summary["jobs"]}
    assert check_images(page, t) == {"ranked.png", "objective_vs_params.png", "sweep_curves.png",
                                     "best_curves.png", "best_confusion.png"}

    header, *rows = t.tables["ranked"]
    assert header == ["rank", "job", "eval_loss", "trainer.learning_rate", "trainer.warmup_steps", "status", "error",
                      "run dir"]
    ok = sorted((j for j in summary["jobs"] if j["status"] == "ok"), key=lambda j: j["objective"])
    assert len(ok) == 4
    assert [(r[0], r[1]) for r in rows[:4]] == [(str(i), str(j["job"])) for i, j in enumerate(ok, 1)]
    assert [float(r[2]) for r in rows[:4]] == pytest.approx([j["objective"] for j in ok], rel=1e-3)
    for r in rows[4:]:  # the two jobs with learning rate -1
        job = jobs[r[1]]
        assert (r[0], r[2], r[3], r[5]) == ("-", "", "-1", "failed")
        assert r[6] == job["error"] and "Invalid learning rate" in r[6]
    for r in rows:
        assert r[3:5] == [jobs[r[1]]["overrides"][k] for k in ("trainer.learning_rate", "trainer.warmup_steps")]

    # Every run named: its run dir and its overrides (those all jobs share once, then each job's own).
    shared_overrides = t.code["shared-overrides"].split()
    _, *listed = t.tables["jobs"]
    assert sorted(r[0] for r in listed) == sorted(jobs)
    for job_no, run_dir, status, own in listed:
        job = jobs[job_no]
        assert (run_dir, status) == (Path(job["run_dir"]).name, job["status"])
        assert sorted([*shared_overrides, *own.split()]) == sorted(f"{k}={v}" for k, v in job["overrides"].items())

    # The best job against the base: exactly the swept keys, base values from the command's defaults.
    best = jobs[rows[0][1]]["overrides"]
    _, *diff = t.tables["best-config-diff"]
    assert [(k, float(b)) for k, _, b in diff] == [(k, float(best[k])) for k in ("trainer.learning_rate",
                                                                                 "trainer.warmup_steps")]
    assert [float(a) for _, a, _ in diff] == [5e-4, 0.06]  # conf/train.yaml's values, which the sweep replaced
    assert "trainer.learning_rate=1e-4,1e-2,-1" in t.code["sweep-command"]


@pytest.mark.slow
def test_a_classification_run_report_matches_scikit_learn(sweep: Path, hfx_cache: Path) -> None:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    run = sweep / "0"
    page, t = report(f"path={run}", cache=hfx_cache, cwd=sweep)
    assert page == run / "report" / "report.html"
    assert check_images(page, t) == {"run_curves.png", "run_confusion.png"}
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    refs, preds = [r["reference"] for r in rows], [r["prediction"] for r in rows]
    labels = ["negative", "positive"]
    p, r, f, n = precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
    header, *per_class = t.tables["run-per-class"]
    assert header == ["class", "precision", "recall", "f1", "support"]
    assert per_class == [[lab, f"{p[i]:.4f}", f"{r[i]:.4f}", f"{f[i]:.4f}", str(n[i])] for i, lab in enumerate(labels)]
    header, *matrix = t.tables["run-confusion"]
    assert header[1:] == labels
    assert [[int(c) for c in row[1:]] for row in matrix] == confusion_matrix(refs, preds, labels=labels).tolist()
    overrides = (run / ".hydra" / "overrides.yaml").read_text().splitlines()
    assert t.code["run-overrides"].split() == [o.removeprefix("- ") for o in overrides]


@pytest.mark.slow
def test_a_generation_run_report_shows_samples(tmp_path: Path, hfx_cache: Path) -> None:
    run = tmp_path / "lm"
    train_ok(run, "task=causal_lm", "dataset=tiny_shakespeare", f"dataset.data_dir={shared('tiny_shakespeare')}",
             "model=tiny_gpt2", "peft=none", "tokenizer=bpe", "tokenizer.vocab_size=300", "logger=none",
             "trainer.max_steps=3", "trainer.logging_steps=1", "trainer.per_device_train_batch_size=8",
             "task.block_size=32", "task.num_samples=3", "task.max_new_tokens=8", "dataset.max_train_samples=200",
             "dataset.max_eval_samples=40", cache=hfx_cache)
    page, t = report(str(run), cache=hfx_cache, cwd=tmp_path)
    assert check_images(page, t) == {"run_curves.png"}
    header, *samples = t.tables["run-samples"]
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert header == ["prompt", "reference", "generated"] and len(samples) == len(rows) == 3
    assert samples == [[r["prompt"], r["reference"], r["generated"]] for r in rows]
    assert "run-per-class" not in t.tables


def test_bad_paths_are_one_line(tmp_path: Path, hfx_cache: Path) -> None:
    r: subprocess.CompletedProcess = run_hfx("report", str(tmp_path), cache=hfx_cache, cwd=tmp_path)
    assert r.returncode == 2
    assert_one_line_error(r, f"{tmp_path}: not a run dir (config.yaml and .hydra/) or a sweep dir (summary.json)")
    r = run_hfx("report", f"path={tmp_path / 'nothing'}", cache=hfx_cache, cwd=tmp_path)
    assert r.returncode == 2
    assert_one_line_error(r, f"{tmp_path / 'nothing'}: no such directory")
    r = run_hfx("report", cache=hfx_cache, cwd=tmp_path)
    assert r.returncode == 2
    assert_one_line_error(r, "no sweep under multirun/ or run under runs/ here")


def test_text_on_the_page_is_escaped(tmp_path: Path) -> None:
    page = Page(tmp_path)
    page.add("p", "a <b>bold</b> claim & more")
    page.table(["<th>"], [["<script>alert(1)</script>"]], "t")
    text = page.write("<title>").read_text()
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a &lt;b&gt;bold&lt;/b&gt; claim &amp; more" in text
    assert Tables(text).tables["t"] == [["<th>"], ["<script>alert(1)</script>"]]
