"""RunDir: what a run leaves for a person to open: config.yaml, metrics.json, predictions.jsonl, model/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hfx.files import new_dir, write_text
from hfx.redaction import redact, scrub_hydra_dir


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return redact(OmegaConf.to_container(cfg, resolve=True))


@dataclass
class RunDir:
    path: Path

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def write_config(self, cfg: DictConfig) -> dict[str, Any]:
        resolved = resolved_config(cfg)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.path / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
        # Hydra's own copies (the RedactSecrets callback scrubs them already; again here for any other entry path).
        scrub_hydra_dir(self.path)
        return resolved

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        return write_text(self.path / name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def write_jsonl(self, name: str, rows: list[dict[str, Any]]) -> Path:
        lines = (json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
        return write_text(self.path / name, "".join(lines))

    def save_model(self, model: Any, tokenizer: Any, extra_files: dict[str, Any] | None = None) -> Path:
        """Written beside model/ and moved into place: a failed save never leaves a half model."""
        with new_dir(self.model_dir, replace=True) as tmp:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            for name, data in (extra_files or {}).items():
                (tmp / name).write_text(json.dumps(data, indent=2) + "\n")
        return self.model_dir

    def mark_failed(self, message: str) -> None:
        self.mark("FAILED", message)

    def mark(self, name: str, message: str) -> None:
        """FAILED (the one-line reason) or INTERRUPTED (stopped with a checkpoint: resume it)."""
        if self.path.is_dir():
            write_text(self.path / name, message + "\n")

    def clear_marks(self) -> None:
        for name in ("FAILED", "INTERRUPTED"):
            (self.path / name).unlink(missing_ok=True)


def print_summary(title: str, path: Path, metrics: dict[str, Any], extra_keys: tuple[str, ...] = ()) -> None:
    """The few numbers a person looks for first, printed at the end of a command."""
    shown = {k: v for k, v in metrics.items()
             if k.startswith("eval_") and not any(s in k for s in ("runtime", "per_second", "preparation_time"))}
    shown.update({k: metrics[k] for k in extra_keys if k in metrics})
    width = max(map(len, shown)) if shown else 0
    lines = [title]
    lines += [f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in shown.items()]
    lines.append(f"  run dir  {path}")
    print("\n".join(lines), flush=True)
