"""`hfx dashboard [<dir>] [port=7860] [project=<name>]`: trackio's dashboard on localhost for runs logged with
`logger=trackio`, read from their local store: a sweep directory (<sweep dir>/trackio), an experiment's run folder
(runs/<experiment>/trackio) or the store itself. Without a directory: the newest store under multirun/ or runs/.
Nothing leaves the machine; Ctrl-C stops it."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hfx.errors import UsageError

log = logging.getLogger("hfx")
ROOTS = (Path("multirun"), Path("runs"))
DB = ".db"


def main(args: list[str]) -> None:
    if {"--help", "-h"} & set(args):
        print(__doc__)
        return
    options = dict(a.split("=", 1) for a in args if "=" in a)
    paths = [a for a in args if "=" not in a]
    unknown = set(options) - {"port", "project", "host"}
    if unknown:
        raise UsageError(f"hfx dashboard: unknown option '{sorted(unknown)[0]}'; valid: port, project, host")
    if len(paths) > 1:
        raise UsageError(f"hfx dashboard takes one directory at most, got {len(paths)}")
    store = trackio_store(Path(paths[0])) if paths else newest_store()
    projects = sorted(p.stem for p in store.glob(f"*{DB}"))
    project = options.get("project") or (projects[0] if len(projects) == 1 else None)
    if project is not None and project not in projects:
        raise UsageError(f"project={project}: no such trackio project in {store}; there: {', '.join(projects)}")
    try:
        port = int(options.get("port", 7860))
    except ValueError:
        raise UsageError(f"port: expected a number, got '{options['port']}'") from None
    host = options.get("host", "127.0.0.1")
    serve(store, project, host, port)


def trackio_store(path: Path) -> Path:
    """The trackio store a directory names: itself, or its trackio/ folder."""
    if not path.is_dir():
        raise UsageError(f"{path}: no such directory")
    for candidate in (path / "trackio", path):
        if any(candidate.glob(f"*{DB}")):
            return candidate.resolve()
    raise UsageError(f"{path}: no trackio store there (runs logged with logger=trackio keep one in "
                     "<sweep dir>/trackio or runs/<experiment>/trackio)")


def newest_store() -> Path:
    found = [db.parent for root in ROOTS if root.is_dir() for db in root.glob(f"**/trackio/*{DB}")]
    if not found:
        raise UsageError("no trackio store under multirun/ or runs/ here; train with logger=trackio, or name a "
                         "directory: hfx dashboard <dir>")
    return max(found, key=lambda p: max(db.stat().st_mtime for db in p.glob(f"*{DB}"))).resolve()


def serve(store: Path, project: str | None, host: str, port: int) -> None:
    # trackio reads its store location once, when it is imported.
    os.environ["TRACKIO_DIR"] = str(store)
    import trackio

    print(f"hfx dashboard: trackio store {store}" + (f", project {project}" if project else ""), flush=True)
    sys.stdout.flush()
    trackio.show(project=project, open_browser=False, host=host, server_port=port, block_thread=True,
                 footer=False)
