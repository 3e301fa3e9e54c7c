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


# --- `hfx report` ----------------------------------------------------------------------------------------------

# Logged values that are timings or counters, not curves worth a plot.
NOT_CURVES = ("runtime", "per_second", "epoch", "step", "total_flos", "learning_rate", "grad_norm",
              "preparation_time", "target_tokens", "gen_len")


def _pyplot() -> Any:
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, target: Path) -> Path:
    fig.tight_layout()
    fig.savefig(target)
    _pyplot().close(fig)
    return target


def eval_curves(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Each evaluation metric of a run's log (eval_loss, eval_accuracy, ...) as (step, value) points."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for h in log_history:
        for k, v in h.items():
            if k.startswith("eval_") and isinstance(v, (int, float)) and not any(s in k for s in NOT_CURVES):
                curves.setdefault(k, []).append((h.get("step", 0), v))
    return curves


def plot_run_curves(log_history: list[dict[str, Any]], target: Path, title: str) -> Path | None:
    """Training loss and eval loss (left) and the other evaluation metrics (right) of one run, by step."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    curves = eval_curves(log_history)
    others = {k: v for k, v in curves.items() if k != "eval_loss"}
    if not train and not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(10 if others else 6, 3.5), dpi=100, squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if "eval_loss" in curves:
        ax.plot(*zip(*curves["eval_loss"], strict=True), marker="o", label="eval loss")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    if others:
        ax = axes[0][1]
        for k, points in others.items():
            ax.plot(*zip(*points, strict=True), marker="o", label=k)
        ax.set(xlabel="step", ylabel="evaluation metric", title="evaluation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, target)


def plot_sweep_curves(runs: list[tuple[str, list[dict[str, Any]]]], objective: str, target: Path,
                      best: str | None = None) -> Path | None:
    """Training loss (left) and the objective at each evaluation (right) of every job, one line per job; the
    best job drawn thick."""
    if not any(history for _, history in runs):
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for label, history in runs:
        width = 2.6 if label == best else 1.0
        train = [(h["step"], h["loss"]) for h in history if "loss" in h]
        evals = eval_curves(history).get(objective, [])
        color = None
        if train:
            (line,) = left.plot(*zip(*train, strict=True), linewidth=width, label=label)
            color = line.get_color()
        if evals:
            right.plot(*zip(*evals, strict=True), marker="o", linewidth=width, color=color, label=label)
    left.set(xlabel="step", ylabel="train loss", title="training loss per job")
    right.set(xlabel="step", ylabel=objective, title=f"{objective} per job")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    if len(runs) <= 12:
        right.legend(fontsize="small")
    return _save(fig, target)


def spans_decades(values: list[float]) -> bool:
    """Positive values whose largest is at least 10x the smallest: a log axis shows them evenly."""
    return bool(values) and min(values) > 0 and max(values) >= 10 * min(values)


def plot_objective_vs_params(points: dict[str, list[tuple[Any, float]]], objective: str,
                             target: Path) -> Path | None:
    """One scatter per swept hyperparameter: the objective of each finished job against its value (a log x axis
    where the values span decades; categories side by side where they are not numbers)."""
    if not points:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 3.5), dpi=100, squeeze=False)
    for ax, (key, pairs) in zip(axes[0], points.items(), strict=True):
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        if all(isinstance(x, (int, float)) for x in xs):
            ax.scatter(xs, ys)
            if spans_decades(xs):
                ax.set_xscale("log")
        else:
            names = list(dict.fromkeys(str(x) for x in xs))
            ax.scatter([names.index(str(x)) for x in xs], ys)
            ax.set_xticks(range(len(names)), names)
        ax.set(xlabel=key, ylabel=objective)
        ax.grid(alpha=0.3)
    return _save(fig, target)


def plot_ranked(labels: list[str], values: list[float], objective: str, target: Path) -> Path | None:
    """Horizontal bars of the objective, best job at the top."""
    if not values:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.35 * len(values)), dpi=100)
    ax.barh(range(len(values)), values, color=["tab:green"] + ["tab:blue"] * (len(values) - 1))
    ax.set_yticks(range(len(values)), labels, fontsize="small")
    lo, hi = min(values), max(values)
    span = (hi - lo) or abs(hi) or 1.0
    if lo > 0 and span < lo:  # close values: an axis from zero would hide the differences
        ax.set_xlim(lo - 0.5 * span, hi + 0.3 * span)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.4g}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize="small")
    ax.invert_yaxis()
    ax.set(xlabel=objective, title=f"jobs ranked by {objective}")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, target)


def plot_confusion(matrix: list[list[int]], labels: list[str], target: Path) -> Path:
    """A confusion matrix: rows the reference class, columns the predicted one, each cell its count."""
    plt = _pyplot()
    size = 2.5 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="reference", title="confusion matrix")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    fig.colorbar(image, ax=ax)
    return _save(fig, target)


# --- `hfx attention` -------------------------------------------------------------------------------------------

ATTENTION_DPI = 100
ATTENTION_COLUMNS = 4  # heads per row of a layer's grid
ATTENTION_TITLE_INCHES = 0.5


def attention_panel_inches(n_tokens: int) -> float:
    """The side of one head's heatmap: a quarter inch per token plus room for the token labels, 3 to 14 inches
    (whole quarter inches, so the image's pixel size is exact at 100 dpi)."""
    return min(14.0, max(3.0, 1.5 + 0.25 * n_tokens))


def attention_grid_pixels(n_heads: int, n_tokens: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that plot_attention_grid writes for one layer."""
    side = attention_panel_inches(n_tokens)
    columns = min(n_heads, ATTENTION_COLUMNS)
    rows = -(-n_heads // columns)
    return round(columns * side * ATTENTION_DPI), round((rows * side + ATTENTION_TITLE_INCHES) * ATTENTION_DPI)


def plot_attention_grid(weights: Any, heads: list[int], tokens: list[str], special: list[bool], title: str,
                        target: Path) -> tuple[int, int]:
    """One layer's attention weights [heads, queries, keys] as a grid of heatmaps, one per head: queries down (the
    last of `tokens`), keys across (all of `tokens`), special tokens in bold red. Returns the image's size."""
    plt = _pyplot()
    width, height = attention_grid_pixels(len(heads), len(tokens))
    columns = min(len(heads), ATTENTION_COLUMNS)
    rows = -(-len(heads) // columns)
    fig = plt.figure(figsize=(width / ATTENTION_DPI, height / ATTENTION_DPI), dpi=ATTENTION_DPI, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    labels = [t.replace("$", r"\$") for t in tokens]  # a `$` would start matplotlib's mathtext
    first_query = len(tokens) - weights.shape[1]
    fontsize = 8 if len(tokens) <= 24 else 6
    image = None
    top = max(float(weights.max()), 1e-6)  # one colour scale for the layer's heads
    for ax, head, w in zip(axes, heads, weights, strict=False):
        image = ax.imshow(w, vmin=0.0, vmax=top, cmap="viridis")
        ax.set_xticks(range(len(tokens)), labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(len(tokens) - first_query), labels[first_query:], fontsize=fontsize)
        for tick_labels, marks in ((ax.get_xticklabels(), special), (ax.get_yticklabels(), special[first_query:])):
            for label, is_special in zip(tick_labels, marks, strict=True):
                if is_special:
                    label.set_color("tab:red")
                    label.set_fontweight("bold")
        ax.set_title(f"head {head}", fontsize=10)
    axes[0].set(xlabel="attended to (key)", ylabel="attending (query)")
    for ax in axes[len(heads):]:
        ax.set_axis_off()
    fig.suptitle(title)
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(heads)]), shrink=0.8, label="attention weight")
    fig.savefig(target, dpi=ATTENTION_DPI)
    plt.close(fig)
    return width, height
