"""`hfx report [<run dir or sweep dir>]` (or `path=<dir>`): writes `<dir>/report/report.html`, one self-contained
page (its PNG plots embedded, and written beside it): for a run its curves, metrics, per-class scores and confusion
matrix or samples; for a sweep its jobs ranked by the objective, the objective against each swept hyperparameter,
every job's curves and the best job against the sweep's base config. Without a directory: the newest sweep under
multirun/ or run under runs/, whichever ended last."""

from __future__ import annotations

from pathlib import Path

from hfx.errors import UsageError

ROOTS = (("multirun", "summary.json"), ("runs", "metrics.json"))


def main(args: list[str]) -> None:
    from hfx.report import write_report

    if {"--help", "-h"} & set(args):
        print(__doc__)
        return
    if len(args) > 1:
        raise UsageError(f"hfx report takes one run or sweep directory at most, got {len(args)} arguments")
    target = Path(args[0].removeprefix("path=")) if args else newest()
    print(f"report: {write_report(target)}")


def newest() -> Path:
    """The directory of the newest summary.json under multirun/ or metrics.json under runs/."""
    found = [p for root, name in ROOTS if Path(root).is_dir() for p in Path(root).rglob(name)]
    if not found:
        raise UsageError("no sweep under multirun/ or run under runs/ here; name one: hfx report <dir>")
    return max(found, key=lambda p: p.stat().st_mtime).parent
