"""Running a command as a Hydra job: config composed from conf/, errors inside the job kept to one line, and a
run directory that failed marked so nobody mistakes it for a finished run."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hfx.errors import HfxError, Stopped, exit_with, full_error

Job = Callable[[Any, Path], Any]


def run_job(config_name: str, args: list[str], job: Job) -> None:
    """`hfx <config_name> args...` as a Hydra app: job(cfg, output_dir) runs once, or once per sweep point."""
    import hydra

    from hfx.config.store import register_configs
    from hfx.paths import conf_dir

    register_configs()
    sys.argv = [f"hfx {config_name}", *args]
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(_guarded(job))()


def _guarded(job: Job) -> Callable[[Any], Any]:
    def hydra_job(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf.errors import OmegaConfBaseException

        from hfx.config.compose import explain_config_error
        from hfx.rundir import RunDir

        run_path = Path(HydraConfig.get().runtime.output_dir)
        try:
            return job(cfg, run_path)
        except KeyboardInterrupt:  # Ctrl-C outside training (in it, SIGINT saves a checkpoint: Stopped)
            RunDir(run_path).mark_failed("interrupted (SIGINT) outside training")
            raise
        except Stopped as e:  # a checkpoint was written: not a failure, the run resumes
            RunDir(run_path).mark("INTERRUPTED", str(e))
            if HydraConfig.get().mode.name == "MULTIRUN":
                return failed_in_sweep(str(e))
            exit_with(str(e), Stopped.exit_code)
        except Exception as e:  # hfx's, a config error, or a library's own: one line either way
            if isinstance(e, HfxError):
                message = str(e)
            elif isinstance(e, OmegaConfBaseException):
                message = explain_config_error(e)
            else:
                message = library_error(e)
            discard_or_mark(run_path, message)
            if full_error():
                raise
            if HydraConfig.get().mode.name == "MULTIRUN":
                return failed_in_sweep(message)
            exit_with(message)

    hydra_job.__name__ = getattr(job, "__name__", "job")
    hydra_job.__module__ = getattr(job, "__module__", __name__)
    return hydra_job


def failed_in_sweep(message: str) -> None:
    """A sweep's job that failed: its run dir says why (FAILED / INTERRUPTED) and the sweep summary records it. It
    returns None rather than raising, so the sweep goes on to its other jobs without a traceback (Optuna counts
    the trial as failed: no objective), and `hfx train -m` ends with one line naming the failures."""
    import logging

    logging.getLogger("hfx").error("job failed: %s", message)
    return None


def discard_or_mark(run_path: Path, message: str) -> None:
    """A failed job's folder gets FAILED; a folder that `hfx predict` / `hfx evaluate` made inside a finished run
    is removed instead, so that a failure leaves that run as it was."""
    import shutil

    from hfx.rundir import RunDir
    from hfx.stages import TASK_FILE

    if (run_path.parent.parent / "model" / TASK_FILE).is_file():
        shutil.rmtree(run_path, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_path.parent.rmdir()  # evaluate/ or predict/, when this was its only entry
        return
    RunDir(run_path).mark_failed(message)


def library_error(e: BaseException) -> str:
    """One line for an unexpected exception: its type and first line, and how to see the traceback."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text} (HYDRA_FULL_ERROR=1 shows the traceback)"
