"""Secrets kept out of everything a run writes: values under secret-looking key names (`token`, `hub_token`,
`api_key`, `password`, ... in any case), values of secret-looking environment variables wherever they appear, and
`key=value` overrides naming such keys. `RedactSecrets` does the same to the files Hydra writes itself."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

# Environment variables whose values are secrets (WANDB_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, ...).
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|PRIVATE)", re.I)
# Config keys that hold secrets: the whole name or its ending (hub_token, WANDB_API_KEY, db-password, apiKey).
SECRET_KEY = re.compile(r"(token|api[_-]?key|secret([_-]?key)?|password|passwd|credentials?|private[_-]?key|"
                        r"access[_-]?key|auth)$", re.I)
# A tokenizer's special tokens end in `token` too and hold no secret.
SPECIAL_TOKEN = re.compile(r"^(pad|bos|eos|unk|sep|cls|mask|decoder_start|additional_special)_token$", re.I)
# `key=value` as an override (`+trainer.extra.hub_token=...`) or in Hydra's override_dirname (`a=1,b=2`).
ASSIGNMENT = re.compile(r"(?<![\w.-])([+~]*(?:[\w-]+\.)*([\w-]+))=(\$\{[^}]*\}|[^,\s]*)")
REDACTED = "***redacted***"
# A bare reference such as ${oc.env:HF_TOKEN} holds no secret (its resolved value is redacted where it appears) and
# is kept, so that the record still says where the secret came from and a resumed run finds it again.
REFERENCE = re.compile(r"^\$\{[\w.:/-]+\}$")
MIN_SECRET_LENGTH = 6  # shorter values (`1`, `true`) would match too much


def is_secret_key(key: Any) -> bool:
    name = str(key).rsplit(".", 1)[-1]
    return bool(SECRET_KEY.search(name)) and not SPECIAL_TOKEN.match(name)


def secret_values() -> list[str]:
    """Values of environment variables whose names look secret, longest first."""
    values = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """Secret values replaced wherever they occur, and the values of `secret_key=value` assignments."""
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    head, sep, value = text.partition("=")
    if sep and "," not in head and not any(c.isspace() for c in head) and is_secret_key(head.lstrip("+~")):
        # One override: all of its value, commas included (a sweep).
        return text if REFERENCE.match(value) else f"{head}={REDACTED}"
    return ASSIGNMENT.sub(lambda m: f"{m.group(1)}={REDACTED}" if is_secret_key(m.group(2))
                          and not REFERENCE.match(m.group(3)) else m.group(0), text)


def redact(value: Any, key: str = "") -> Any:
    """A plain container (dicts, lists, strings) with secrets replaced at any depth."""
    secrets = secret_values()

    def walk(x: Any, key: str) -> Any:
        if isinstance(x, dict):
            return {k: walk(v, str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, key) for v in x]
        if is_secret_key(key) and x not in (None, "", [], {}) and not (isinstance(x, str) and REFERENCE.match(x)):
            return REDACTED
        if isinstance(x, str):
            return redact_text(x, secrets)
        return x

    return walk(value, key)


def scrub_yaml(path: Path) -> None:
    """Rewrite a YAML file Hydra wrote (interpolations kept as written) with its secrets redacted."""
    from omegaconf import OmegaConf

    from hfx.files import write_text

    if not path.is_file():
        return
    import yaml

    # Read with PyYAML's C loader to find out whether there is anything to redact (OmegaConf's loader takes 10x
    # as long, several times per run); OmegaConf reads it again, the way it wrote it, only to rewrite it.
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if redact(data) == data:
            return
    except yaml.YAMLError:
        pass
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    write_text(path, OmegaConf.to_yaml(OmegaConf.create(redact(data))))


def scrub_hydra_dir(run_dir: Path) -> None:
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        scrub_yaml(run_dir / ".hydra" / name)


class RedactedRecords(logging.Filter):
    """A log handler's filter: records printed or written with their secrets redacted."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = secret_values()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


# Hydra's launchers log each sweep job's overrides as typed (`#0 : ... hub_token=...`).
LAUNCHER_LOGGERS = ("hydra._internal.core_plugins.basic_launcher", "hydra_plugins.hydra_joblib_launcher._core",
                    "hydra_plugins.hydra_optuna_sweeper._impl")


def redact_log_records() -> None:
    """Records redacted by the root logger's handlers (console, the job's train.log) and by Hydra's own loggers
    (Hydra replaces the root's handlers between jobs; a logger's own filter stays)."""
    hydra_loggers = [n for n in logging.root.manager.loggerDict if n.startswith(("hydra.", "hydra_plugins."))]
    targets = [*logging.getLogger().handlers, *map(logging.getLogger, {*LAUNCHER_LOGGERS, *hydra_loggers})]
    for target in targets:
        if not any(isinstance(f, RedactedRecords) for f in target.filters):
            target.addFilter(RedactedRecords())


class RedactSecrets(Callback):
    """Hydra callback (conf/train.yaml): Hydra writes `.hydra/*.yaml` of each job, and `multirun.yaml` at a sweep's
    root, with the overrides as typed; this rewrites them without secrets as soon as a job starts, on every rank and
    under every launcher, and the sweep root's files again when the sweep ends."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        redact_log_records()

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        redact_log_records()  # the job's own logging: console and train.log
        output = Path(config.hydra.runtime.output_dir)
        if config.hydra.output_subdir is not None:
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
                scrub_yaml(output / config.hydra.output_subdir / name)
        if config.hydra.mode is not None and config.hydra.mode.name == "MULTIRUN":
            # The sweep root is an ancestor of the job's directory (hydra.sweep.subdir may be nested).
            root = next((p for p in output.parents if (p / "multirun.yaml").is_file()), None)
            if root is not None:
                scrub_yaml(root / "multirun.yaml")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        for path in root.glob("*.yaml") if root.is_dir() else []:
            scrub_yaml(path)
