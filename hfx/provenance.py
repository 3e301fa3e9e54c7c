"""What a run was made from, written to environment.json: package versions, the project's git commit, a content
hash of each data file, the machine. With config.yaml it is what reproducing the run needs."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

PACKAGES = ("hfx", "torch", "transformers", "tokenizers", "datasets", "accelerate", "peft", "hydra-core",
            "omegaconf", "numpy", "safetensors", "scikit-learn", "seqeval", "sacrebleu", "rouge-score", "wandb")


def environment(cfg: DictConfig) -> dict[str, Any]:
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_state(Path.cwd()),
        "data": data_hashes(cfg.dataset),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
    }


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(where: Path) -> dict[str, Any] | None:
    """The commit of the git checkout hfx runs in, and whether it has uncommitted changes; None outside one."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_hashes(dcfg: DictConfig) -> dict[str, Any]:
    """split -> {file: sha256} for local files; the dataset id and revision for a hub dataset."""
    from hfx.data import local_data_files

    _, files = local_data_files(dcfg)
    if not files:
        return {"hub_dataset": dcfg.path, "name": dcfg.name, "revision": dcfg.revision}
    return {split: {f: f"sha256:{file_sha256(f)}" for f in paths} for split, paths in files.items()}
