"""`hfx train resume=<run dir>|auto`: the run's own overrides again, in its own directory, from its newest complete
checkpoint. Overrides that would change the result are refused; safe ones (logging, evaluation cadence, more
steps) are allowed and named in the log."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any

from hfx.errors import UsageError

log = logging.getLogger("hfx")

# Keys a resumed run may change: they do not change what is trained (glob patterns on dotted keys).
SAFE_TO_CHANGE = (
    "resume", "experiment_name", "cache_dir", "num_predictions", "logger", "logger.*",
    "launch.main_process_ip", "launch.main_process_port", "launch.machine_rank", "launch.print_only",
    "trainer.logging_*", "trainer.eval_strategy", "trainer.eval_steps", "trainer.eval_on_start",
    "trainer.per_device_eval_batch_size", "trainer.eval_accumulation_steps", "trainer.save_*",
    "trainer.max_steps", "trainer.num_train_epochs", "trainer.disable_tqdm", "trainer.dataloader_num_workers",
    "task.max_new_tokens", "task.num_samples",
)
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"


def resume_value(args: list[str]) -> str | None:
    values = [a.partition("=")[2] for a in args if a.lstrip("+").startswith("resume=")]
    return values[-1] if values else None


def saved_config(path: Path) -> dict[str, Any]:
    """A run's saved config.yaml typed by this version's schemas: keys an earlier hfx did not save (a new
    section, a new field) read as their defaults, so they do not count as changes."""
    from omegaconf import OmegaConf

    from hfx.config.store import typed_train_config

    return OmegaConf.to_container(typed_train_config(OmegaConf.load(path), str(path)), resolve=True)


def resume_args(args: list[str]) -> list[str]:
    """The arguments that resume the run `resume=` names: its saved overrides, then the user's, in its directory.
    Raises UsageError (nothing written) when the run cannot be resumed or an override changes the result."""

    from hfx.config.compose import compose, user_overrides

    value = resume_value(args)
    others = [a for a in args if not a.lstrip("+").startswith("resume=")]
    if value is None:
        return args
    if {"-m", "--multirun"} & set(args):
        raise UsageError("resume: resumes one run; it cannot be combined with -m")
    if any(a.startswith("hydra.run.dir=") for a in others):
        raise UsageError("resume: a resumed run continues in its own directory; drop hydra.run.dir")
    path = newest_unfinished(others) if value == "auto" else Path(value).expanduser()
    given = {a.partition("=")[0].lstrip("+~") for a in others}
    saved = saved_overrides(path, value, given)
    new_args = [*saved, *others, f"resume={path}", f"hydra.run.dir={path}"]
    old = saved_config(path / "config.yaml")
    from hfx.rundir import resolved_config

    new = resolved_config(compose("train", user_overrides(new_args)))
    refused = {k: v for k, v in changes(old, new).items() if not safe(k)}
    if refused:
        shown = "; ".join(f"{k}: {was!r} -> {now!r}" for k, (was, now) in refused.items())
        raise UsageError(f"resume={value}: these overrides change the result of the run in {path}, so it cannot "
                         f"continue with them: {shown} (start a new run instead, or drop them)")
    return new_args


def saved_overrides(path: Path, value: str, given: set[str]) -> list[str]:
    from omegaconf import OmegaConf

    if not path.is_dir():
        raise UsageError(f"resume={value}: no such directory (expected a run directory written by `hfx train`)")
    if not (path / "config.yaml").is_file() or not (path / OVERRIDES_FILE).is_file():
        raise UsageError(f"resume={value}: not an hfx run directory (expected config.yaml and {OVERRIDES_FILE} "
                         "in it, written when `hfx train` starts)")
    from hfx.redaction import REDACTED

    overrides = [str(o) for o in OmegaConf.load(path / OVERRIDES_FILE)
                 if not str(o).lstrip("+").startswith(("resume=", "hydra."))]
    redacted = [o.partition("=")[0] for o in overrides if REDACTED in o]
    overrides = [o for o in overrides if o.partition("=")[0].lstrip("+~") not in given or REDACTED not in o]
    redacted = [k for k in redacted if k.lstrip("+~") not in given]
    if redacted:  # a secret typed on the command line was not saved: it has to be given again
        raise UsageError(f"resume={value}: {', '.join(redacted)} held a secret, which the run did not save; "
                         "give it again after resume= (or from an environment variable: ${oc.env:NAME})")
    return overrides


def newest_unfinished(args: list[str]) -> Path:
    """`resume=auto`: the newest run of this experiment under runs/<experiment_name>/ that has no model yet."""
    from hfx.config.compose import compose, user_overrides

    name = compose("train", user_overrides(args)).experiment_name
    root = Path("runs") / name
    runs = sorted((p for p in root.glob("*") if (p / "config.yaml").is_file() and (p / OVERRIDES_FILE).is_file()
                   and not (p / "model" / "hfx_task.json").is_file()), key=lambda p: p.name)
    if not runs:
        raise UsageError(f"resume=auto: no unfinished run of experiment '{name}' under {root}/ (give the run "
                         "directory: resume=<run dir>)")
    return runs[-1]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (old value, new value) for every key whose value differs, sorted by key."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return list(changes(old, new))


def safe(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in SAFE_TO_CHANGE)


def log_changes(old_config: Path, new: dict[str, Any]) -> None:
    """Name in the log what a resumed run changed (only safe keys get this far)."""

    if not old_config.is_file():
        return
    old = saved_config(old_config)
    changed = {k: v for k, v in changes(old, new).items() if k != "resume"}
    if changed:
        log.info("resuming with changed settings: %s",
                 ", ".join(f"{k}={now!r} (was {was!r})" for k, (was, now) in changed.items()))
