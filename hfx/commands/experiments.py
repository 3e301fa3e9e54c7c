"""`hfx experiments`: the experiment files with the command and figure on each one's first line."""

from __future__ import annotations


def main(args: list[str]) -> None:
    from hfx.paths import experiments_dir

    for path in sorted(experiments_dir().glob("*.yaml")):
        text = path.read_text()
        first = text.splitlines()[0] if text else ""
        print(f"{path.stem:<28} {first.lstrip('# ').strip()}")
