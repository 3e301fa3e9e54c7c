"""Writing files so that a kill mid-write leaves the previous complete version: write beside, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def write_text(target: Path, text: str) -> Path:
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(target)
    return target


@contextlib.contextmanager
def new_dir(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yields a temporary folder beside `target` to fill; on success it becomes `target`. An existing `target` is
    replaced (replace=True) or kept (a cache another process filled first); on failure nothing changes."""
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists() and replace:
        old = target.with_name(f"{target.name}.old{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
