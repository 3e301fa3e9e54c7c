"""Training curves as a PNG beside metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("hfx")


def plot_curves(log_history: list[dict[str, Any]], target: Path) -> Path | None:
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if not train and not evals:
        return None
    try:
        import matplotlib

        logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its font-cache notice is not ours to show
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no loss plot")
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)
    return target
