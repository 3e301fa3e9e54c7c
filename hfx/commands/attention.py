"""`hfx attention run=<run dir> input="..." [layers=[0,1]] [heads=[0]] [out=<dir>] [overwrite=false]`: the
attention weights of the run's model on one input (an encoder, a decoder, or an encoder-decoder's encoder), as one
PNG grid per layer (a heatmap per head, tokens on both axes, special tokens in red), attention.npz (the weights),
attention.json and an index.html that shows them. hfx loads the model with eager attention, the kernel that returns
weights. layers / heads: an index or a list (default: all). input: free text, or a JSON object with the task's
fields (e.g. '{"question": "...", "context": "..."}'). Default out: <run dir>/attention/<timestamp>."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from hfx.errors import HfxError, UsageError


@dataclass
class AttentionConfig:
    run: str = MISSING
    input: str = MISSING
    # Layer / head indexes (one, or a list); null = all.
    layers: Any = None
    heads: Any = None
    # The folder to write (default <run dir>/attention/<timestamp>); an existing one only with overwrite=true.
    out: str | None = None
    overwrite: bool = False


def main(args: list[str]) -> None:
    from hfx.attention import compute, eager_model, selected, write
    from hfx.commands.export import command_config
    from hfx.config.store import run_stamp
    from hfx.files import new_dir
    from hfx.stages import load_run

    cfg = command_config("attention", AttentionConfig, args, free_text=("input",))
    if not cfg.input.strip():
        raise UsageError('input: expected some text, got an empty one (input="a great film")')
    for key in ("layers", "heads"):
        value = getattr(cfg, key)
        items = [value] if not OmegaConf.is_list(value) else list(value)
        if value is not None and not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise UsageError(f"{key}: expected an index or a list of indexes, e.g. {key}=[0,1], got {value}")
    try:
        run = load_run(cfg.run)
    except HfxError as e:  # not a finished run: refused
        raise UsageError(str(e)) from e
    out = Path(cfg.out).expanduser() if cfg.out else run.path / "attention" / run_stamp()
    if out.exists() and not cfg.overwrite:
        raise UsageError(f"out={out}: already exists; choose another out=<dir>, or overwrite=true to replace it")
    layers, heads = selected(run, _plain(cfg.layers), _plain(cfg.heads))
    model = eager_model(run)
    maps = compute(run, model, cfg.input, layers, heads)
    title = f"{run.path.name} ({run.task.name}, {type(model).__name__})"
    with new_dir(out, replace=cfg.overwrite) as tmp:
        tmp.mkdir()
        write(maps, tmp, title, cfg.input)
    print(f"hfx: attention of {len(maps.tokens)} tokens, layers {_listed(maps.layers)}, heads {_listed(maps.heads)}"
          f"\n  open  {out / 'index.html'}", flush=True)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _listed(indexes: list[int]) -> str:
    return ", ".join(map(str, indexes))
