"""`hfx sweeps [<sweep dir>]`: the jobs of a sweep ranked by its objective, read from the `summary.json` that every
sweep directory gets (hfx.sweeps.SweepSummary); without a directory, the newest sweep under multirun/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hfx.errors import UsageError

MULTIRUN = Path("multirun")
# Metrics shown beside the objective (timings and counts stay in summary.csv).
HIDDEN = ("runtime", "per_second", "preparation_time", "target_tokens")


def main(args: list[str]) -> None:
    from hfx.sweeps import SUMMARY_JSON, read_summary

    if {"--help", "-h"} & set(args):
        print(__doc__)
        return
    if len(args) > 1:
        raise UsageError(f"hfx sweeps takes one sweep directory at most, got {len(args)} arguments")
    sweep_dir = Path(args[0]) if args else newest_sweep()
    if sweep_dir.name == SUMMARY_JSON:
        sweep_dir = sweep_dir.parent
    if not (sweep_dir / SUMMARY_JSON).is_file():
        what = "no such directory" if not sweep_dir.is_dir() else f"no {SUMMARY_JSON} (no job of a sweep ended there)"
        raise UsageError(f"{sweep_dir}: {what}")
    print(format_table(sweep_dir, read_summary(sweep_dir)))


def newest_sweep() -> Path:
    from hfx.sweeps import SUMMARY_JSON

    found = sorted(MULTIRUN.rglob(SUMMARY_JSON), key=lambda p: p.stat().st_mtime) if MULTIRUN.is_dir() else []
    if not found:
        raise UsageError(f"no sweep with a {SUMMARY_JSON} under {MULTIRUN}/ here; run `hfx train -m ...` or name "
                         "a sweep directory: hfx sweeps <dir>")
    return found[-1].parent


def format_table(sweep_dir: Path, summary: dict[str, Any]) -> str:
    from hfx.sweeps import ranked

    jobs, objective = ranked(summary), summary.get("objective") or "objective"
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    better = "higher" if summary.get("direction") == "maximize" else "lower"
    title = (f"sweep {sweep_dir}: {len(jobs)} jobs ({', '.join(f'{n} {s}' for s, n in counts.items())}), "
             f"ranked by {objective} ({better} is better)")
    swept = swept_keys(jobs)
    metrics = [k for k in dict.fromkeys(k for j in jobs for k in j["metrics"])
               if k != objective and (k.startswith("eval_") or k == "train_loss") and not any(h in k for h in HIDDEN)]
    header = ["rank", "job", objective, *swept, *metrics, "wall_s", "status", "run dir"]
    rows = []
    for rank, j in enumerate(jobs, 1):
        scored = isinstance(j.get("objective"), (int, float))
        rows.append([str(rank) if scored else "-", str(j["job"]), cell(j.get("objective")),
                     *(cell(j["overrides"].get(k)) for k in swept), *(cell(j["metrics"].get(k)) for k in metrics),
                     cell(j.get("wall_s")), j["status"], inside(j["run_dir"], summary.get("sweep_dir"))])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title, "", *("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])]
    errors = [f"  job {j['job']} {j['status']}: {j['error']}" for j in jobs if j.get("error")]
    return "\n".join(lines + ([""] + errors if errors else []))


def inside(run_dir: str, sweep_dir: str | None) -> str:
    """A job's run dir relative to its sweep dir (named in the title line)."""
    prefix = f"{sweep_dir.rstrip('/')}/" if sweep_dir else None
    return run_dir.removeprefix(prefix) if prefix else run_dir


def swept_keys(jobs: list[dict[str, Any]]) -> list[str]:
    """The overrides whose values differ between jobs: what the sweep varied."""
    keys = dict.fromkeys(k for j in jobs for k in j["overrides"])
    return [k for k in keys if len({j["overrides"].get(k) for j in jobs}) > 1]


def cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
        return str(value)
    return f"{number:.4g}"
