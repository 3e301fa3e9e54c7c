"""`hfx report`: one self-contained `report.html` for a run or a sweep, with its PNG plots written beside it in
`<dir>/report/` and embedded in the page (data URIs), so the page can be opened, copied or mailed on its own.

A run: its overrides, metrics, training and evaluation curves (log_history.jsonl), and from predictions.jsonl
per-class precision / recall / F1 and a confusion matrix (classification tasks) or a table of samples (every other
task). A sweep (summary.json): the jobs ranked by the objective (failed ones with their error line), the objective
against each swept hyperparameter, every job's curves, the best job's config against the sweep's base config, and
the best run's own section."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfx.commands.sweeps import cell, inside, swept_keys
from hfx.errors import UsageError

REPORT_DIR, REPORT_HTML = "report", "report.html"
SAMPLES = 10  # rows of predictions.jsonl shown for tasks without classes
PREVIEW = 400  # characters of one text cell
CLASSIFICATION = ("sequence_classification", "token_classification")
# Metrics of a run that are timings or sizes, left to metrics.json.
TIMINGS = ("runtime", "per_second", "preparation_time", "setup_s", "total_flos")

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f2f2f2}tr.failed td{background:#fdecea}tr.best td{background:#e8f5e9}
img{max-width:100%;display:block;margin:.6em 0}code{background:#f4f4f4;padding:1px 4px;word-break:break-all}
td.text{max-width:420px;white-space:pre-wrap}.note{color:#555;font-size:.9em}"""


# --- reading what runs and sweeps leave --------------------------------------------------------------------------

def read_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Run:
    """What one run directory holds, read once."""

    path: Path
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    failed: str = ""

    @property
    def task(self) -> str:
        task = self.config.get("task")
        return str(task.get("name", "")) if isinstance(task, dict) else ""


def read_run(path: Path) -> Run:
    metrics = path / "metrics.json"
    failed = next((path / m for m in ("FAILED", "INTERRUPTED") if (path / m).is_file()), None)
    return Run(path=path, overrides=[str(o) for o in read_yaml(path / ".hydra" / "overrides.yaml") or []],
               config=read_yaml(path / "config.yaml") or {},
               metrics=json.loads(metrics.read_text()) if metrics.is_file() else {},
               history=read_jsonl(path / "log_history.jsonl"), predictions=read_jsonl(path / "predictions.jsonl"),
               failed=failed.read_text().strip().splitlines()[0] if failed and failed.read_text().strip() else "")


def is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / ".hydra").is_dir()


def job_dir(sweep_dir: Path, summary: dict[str, Any], run_dir: str) -> Path:
    """A job's run dir: summary.json names it as seen from where the sweep ran; found again inside the sweep dir."""
    rel = Path(inside(run_dir, summary.get("sweep_dir")))
    return rel if rel.is_absolute() and rel.is_dir() else sweep_dir / (rel.name if rel.is_absolute() else rel)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def config_diff(base: dict[str, Any], config: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, base value, value) for every dotted key whose value differs; a key one side lacks shows as None."""
    a, b = flatten({k: v for k, v in base.items() if k != "hydra"}), flatten(config)
    return [(k, a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]


def class_scores(references: list[str], predictions: list[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, and the confusion matrix (rows: reference), by scikit-learn."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = sorted(set(references) | set(predictions))
    p, r, f, n = precision_recall_fscore_support(references, predictions, labels=labels, zero_division=0)
    rows = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i])}
            for i, lab in enumerate(labels)}
    return {"labels": labels, "per_class": rows,
            "confusion": confusion_matrix(references, predictions, labels=labels).tolist()}


def labelled_pairs(run: Run) -> tuple[list[str], list[str]]:
    """(references, predictions) of a classification run: one per example, or one per word for token tags."""
    refs, preds = [], []
    for row in run.predictions:
        ref, pred = row.get("reference"), row.get("prediction")
        if isinstance(ref, list) and isinstance(pred, list) and len(ref) == len(pred):
            refs += map(str, ref)
            preds += map(str, pred)
        elif ref is not None and pred is not None and not isinstance(ref, list):
            refs.append(str(ref))
            preds.append(str(pred))
    return refs, preds


def number(value: str) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


# --- the page ----------------------------------------------------------------------------------------------------

def esc(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str))


class Page:
    """The report being written: HTML parts (every text escaped) and the PNGs saved beside it and embedded."""

    def __init__(self, out: Path) -> None:
        self.out, self.parts, self.images = out, [], []

    def add(self, tag: str, text: str, **attrs: str) -> None:
        extra = "".join(f' {k}="{html.escape(v)}"' for k, v in attrs.items())
        self.parts.append(f"<{tag}{extra}>{html.escape(text)}</{tag}>")

    def table(self, header: list[str], rows: list[list[Any]], table_id: str, classes: list[str] | None = None,
              text_columns: tuple[int, ...] = ()) -> None:
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = []
        for i, row in enumerate(rows):
            cls = f' class="{classes[i]}"' if classes and classes[i] else ""
            cells = "".join(f'<td{" class=text" if j in text_columns else ""}>{esc(v)}</td>'
                            for j, v in enumerate(row))
            body.append(f"<tr{cls}>{cells}</tr>")
        self.parts.append(f'<table id="{table_id}"><tr>{head}</tr>{"".join(body)}</table>')

    def image(self, path: Path | None, alt: str) -> None:
        if path is None:
            return
        self.images.append(path)
        data = base64.b64encode(path.read_bytes()).decode()
        self.parts.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
                          f'data-file="{html.escape(path.name)}">')

    def write(self, title: str) -> Path:
        from hfx.files import write_text

        page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f"<style>{STYLE}</style></head><body>\n" + "\n".join(self.parts) + "\n</body></html>\n")
        return write_text(self.out / REPORT_HTML, page)


def text_cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "..."


# --- a run -------------------------------------------------------------------------------------------------------

def run_section(page: Page, run: Run, name: str, prefix: str = "run") -> None:
    """A run's overrides, metrics, curves, and per-class scores or samples; PNG names start with `prefix`."""
    from hfx.plots import plot_confusion, plot_run_curves

    page.add("p", f"run dir {run.path.name} ({run.task or 'unknown task'}); overrides:")
    page.add("code", " ".join(run.overrides) or "(none)", id=f"{prefix}-overrides")
    if run.failed:
        page.add("p", f"did not finish: {run.failed}", **{"class": "note"})
    shown = {k: v for k, v in run.metrics.items() if not any(t in k for t in TIMINGS)}
    if shown:
        page.add("h3", "metrics")
        page.table(["metric", "value"], [[k, cell(v)] for k, v in shown.items()], f"{prefix}-metrics")
    page.image(plot_run_curves(run.history, page.out / f"{prefix}_curves.png", f"run {name}"), f"curves of {name}")
    if not run.predictions:
        return
    if run.task in CLASSIFICATION:
        refs, preds = labelled_pairs(run)
        if not refs:
            return
        scores = class_scores(refs, preds)
        unit = "words" if run.task == "token_classification" else "examples"
        page.add("h3", f"per-class scores ({len(refs)} {unit} of predictions.jsonl)")
        page.table(["class", "precision", "recall", "f1", "support"],
                   [[lab, f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}", str(s["support"])]
                    for lab, s in scores["per_class"].items()], f"{prefix}-per-class")
        page.add("h3", "confusion matrix (rows: reference, columns: predicted)")
        page.table(["reference \\ predicted", *scores["labels"]],
                   [[lab, *map(str, row)] for lab, row in zip(scores["labels"], scores["confusion"], strict=True)],
                   f"{prefix}-confusion")
        page.image(plot_confusion(scores["confusion"], scores["labels"], page.out / f"{prefix}_confusion.png"),
                   f"confusion matrix of {name}")
    else:
        rows = run.predictions[:SAMPLES]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        page.add("h3", f"samples (the first {len(rows)} of {len(run.predictions)} rows of predictions.jsonl)")
        page.table(columns, [[text_cell(row.get(c, "")) for c in columns] for row in rows], f"{prefix}-samples",
                   text_columns=tuple(range(len(columns))))


def run_report(run_dir: Path, out: Path) -> Path:
    run = read_run(run_dir)
    page = Page(out)
    page.add("h1", f"hfx report: run {run_dir.name}")
    run_section(page, run, run_dir.name)
    return page.write(f"hfx report: {run_dir.name}")


# --- a sweep -----------------------------------------------------------------------------------------------------

def job_label(job: dict[str, Any], swept: list[str]) -> str:
    values = " ".join(f"{k.rsplit('.', 1)[-1]}={job['overrides'].get(k, '')}" for k in swept)
    return f"job {job['job']}" + (f": {values}" if values else "")


def sweep_report(sweep_dir: Path, out: Path) -> Path:
    from hfx.plots import plot_objective_vs_params, plot_ranked, plot_sweep_curves
    from hfx.sweeps import ranked, read_summary

    summary = read_summary(sweep_dir)
    jobs, objective = ranked(summary), summary.get("objective") or "objective"
    swept = swept_keys(jobs)
    scored = [j for j in jobs if isinstance(j.get("objective"), (int, float))]
    runs = {j["job"]: read_run(job_dir(sweep_dir, summary, j["run_dir"])) for j in jobs}
    base = read_yaml(sweep_dir / "multirun.yaml") or {}
    better = "higher" if summary.get("direction") == "maximize" else "lower"
    page = Page(out)

    page.add("h1", f"hfx report: sweep {sweep_dir.name}")
    counts = {s: sum(j["status"] == s for j in jobs) for s in dict.fromkeys(j["status"] for j in jobs)}
    page.add("p", f"{len(jobs)} jobs ({', '.join(f'{n} {s}' for s, n in counts.items())}), ranked by "
                  f"{objective} ({better} is better); swept: {', '.join(swept) or 'nothing'}")
    command = ((base.get("hydra") or {}).get("overrides") or {}).get("task")
    if command:
        page.add("code", "hfx train -m " + " ".join(map(str, command)), id="sweep-command")

    page.add("h2", f"jobs ranked by {objective}")
    rows, classes, errors = [], [], any(j.get("error") for j in jobs)
    for rank, j in enumerate(jobs, 1):
        ok = j in scored
        rows.append([str(rank) if ok else "-", str(j["job"]), cell(j.get("objective")) if ok else "",
                     *(j["overrides"].get(k, "") for k in swept), j["status"],
                     *([j.get("error") or ""] if errors else []), runs[j["job"]].path.name])
        classes.append("best" if ok and rank == 1 else "" if ok else "failed")
    page.table(["rank", "job", objective, *swept, "status", *(["error"] if errors else []), "run dir"], rows, "ranked",
               classes)
    labels = [job_label(j, swept) for j in scored]
    page.image(plot_ranked(labels, [j["objective"] for j in scored], objective, out / "ranked.png"),
               f"jobs ranked by {objective}")

    points = {k: [(number(j["overrides"][k]), j["objective"]) for j in scored if k in j["overrides"]]
              for k in swept}
    if any(points.values()):
        page.add("h2", f"{objective} against each swept hyperparameter")
        page.image(plot_objective_vs_params({k: v for k, v in points.items() if v}, objective,
                                            out / "objective_vs_params.png"), f"{objective} per hyperparameter")

    page.add("h2", "curves of every job")
    best_label = labels[0] if labels else None
    page.image(plot_sweep_curves([(job_label(j, swept), runs[j["job"]].history) for j in jobs], objective,
                                 out / "sweep_curves.png", best_label), "curves of every job")

    if scored:
        best = runs[scored[0]["job"]]
        page.add("h2", f"best job {scored[0]['job']}: run dir {best.path.name}, {objective} "
                       f"{cell(scored[0]['objective'])}")
        page.add("p", "Its config against the sweep's base config: multirun.yaml is what Hydra composed from the "
                      "sweep's command with the swept values left out, and the job's .hydra/config.yaml is the same "
                      "composition with its own values; both as written, before interpolations are resolved.",
                 **{"class": "note"})
        job_config = read_yaml(best.path / ".hydra" / "config.yaml")
        if base and job_config:
            page.table(["key", "base (multirun.yaml)", "best job"],
                       [[k, "" if a is None else a, "" if b is None else b]
                        for k, a, b in config_diff(base, job_config)], "best-config-diff")
        else:
            page.add("p", "(no multirun.yaml or no .hydra/config.yaml here: nothing to compare)")
        run_section(page, best, best.path.name, prefix="best")

    page.add("h2", "every job")
    shared = {k: v for k, v in jobs[0]["overrides"].items() if all(j["overrides"].get(k) == v for j in jobs)}
    page.add("p", "overrides of every job:")
    page.add("code", " ".join(f"{k}={v}" for k, v in shared.items()) or "(none)", id="shared-overrides")
    page.table(["job", "run dir", "status", "its own overrides"],
               [[str(j["job"]), runs[j["job"]].path.name, j["status"],
                 " ".join(f"{k}={v}" for k, v in j["overrides"].items() if k not in shared)]
                for j in sorted(jobs, key=lambda j: j["job"])], "jobs", text_columns=(3,))
    return page.write(f"hfx report: sweep {sweep_dir.name}")


# --- the entry point -----------------------------------------------------------------------------------------------

def write_report(path: Path) -> Path:
    """Writes `<path>/report/report.html` (and its PNGs) for a sweep dir or a run dir; returns the page's path."""
    from hfx.sweeps import SUMMARY_JSON

    if path.is_file() and path.name in (SUMMARY_JSON, "metrics.json"):
        path = path.parent
    if not path.is_dir():
        raise UsageError(f"{path}: no such directory (expected a run dir or a sweep dir)")
    sweep = (path / SUMMARY_JSON).is_file()
    if not sweep and not is_run(path):
        raise UsageError(f"{path}: not a run dir (config.yaml and .hydra/) or a sweep dir ({SUMMARY_JSON})")
    out = path / REPORT_DIR
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):  # a report written again: no plot of the earlier one left beside it
        old.unlink()
    return sweep_report(path, out) if sweep else run_report(path, out)
