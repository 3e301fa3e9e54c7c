"""Running a command as a Hydra job: config composed from conf/, errors inside the job kept to one line, and a
run directory that failed marked so nobody mistakes it for a finished run."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def single_run(config_name: str, args: list[str]) -> Iterator[Any]:
    """One run (no sweep, no Hydra flag) composed once, `hydra` node included, as Hydra's run mode composes it
    (hydra.main would compose it twice more: once to read hydra.mode, once to run). Yields that config, or None when
    the config asks for a sweep itself (hydra.mode=MULTIRUN: an hparams_search), which Hydra's main runs. Hydra stays
    initialised for the run, as under hydra.main; composition errors are one-line UsageErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from hfx.config.compose import refuse_instantiate_overrides, usage_errors
    from hfx.config.store import register_configs
    from hfx.paths import conf_dir

    with usage_errors():
        refuse_instantiate_overrides(args)
        register_configs()
    GlobalHydra.instance().clear()
    sys.argv = [f"hfx {config_name}", *args]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=config_name):
        with usage_errors():
            cfg = compose(config_name, overrides=args, return_hydra_config=True)
        if cfg.hydra.mode == RunMode.MULTIRUN:
            yield None
            return
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves while the job's config is checked
        yield cfg


def job_config(cfg: Any) -> Any:
    """The config a job receives: without the `hydra` node, as Hydra's run_job hands it over."""
    import copy

    from omegaconf import open_dict, read_write

    job = copy.deepcopy(cfg)
    with read_write(job), open_dict(job):
        del job["hydra"]
    return job


def run_composed(config_name: str, cfg: Any, job: Job) -> None:
    """job(cfg, output_dir) on a config from single_run, as Hydra's run mode runs it (Hydra.run): Hydra's logging,
    the callbacks, then hydra.core.utils.run_job (run dir, .hydra/*.yaml, job logging), without composing again."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import configure_log
    from hydra.core.utils import run_job as run_hydra_job
    from hydra.types import HydraContext, RunMode
    from omegaconf import read_write

    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.RUN
        cfg.hydra.overrides.hydra.append("hydra.mode=RUN")  # as Hydra's main records a run whose mode it set
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    # The objects alive now (modules, classes, the config; about 400k, with a few dozen garbage ones measured) live
    # as long as the job: kept out of its full collections, such as accelerate's before the first training step
    # (0.24 s -> 0.03 s). Unfrozen when it ends, so a caller running another job in this process loses nothing.
    gc.freeze()
    try:
        callbacks = Callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name=config_name)
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=callbacks)
        ret = run_hydra_job(hydra_context=context, task_function=_guarded(job), config=cfg,
                            job_dir_key="hydra.run.dir", job_subdir_key=None)
        callbacks.on_run_end(config=cfg, config_name=config_name, job_return=ret)
        _ = ret.return_value  # the job's exception, if it raised one (HYDRA_FULL_ERROR=1)
    finally:
        gc.unfreeze()


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
