"""Where hfx finds its config groups, experiments and bundled data, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _first_dir(*candidates: Path) -> Path:
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"none of these directories exists: {', '.join(map(str, candidates))}")


def conf_dir() -> Path:
    """`conf/` beside the package in a checkout; `hfx/_conf` inside an installed wheel."""
    return _first_dir(PACKAGE_DIR / "_conf", PACKAGE_DIR.parent / "conf")


def experiments_dir() -> Path:
    return _first_dir(PACKAGE_DIR / "_experiments", PACKAGE_DIR.parent / "experiments")


def resource(*parts: str) -> Path:
    """A file shipped inside the package (e.g. the default demo dataset)."""
    return PACKAGE_DIR.joinpath("resources", *parts)
