"""`hfx export run=<run dir> [out=<dir>] [merge=true] [dtype=float32|bfloat16|float16] [tolerance=<max logit diff>]
[rows=32] [overwrite=false]`: the run's model as a standalone folder (safetensors, tokenizer, id2label, a model card
with the run's config and metrics), written only once it passes a parity check: loaded back with the task's
transformers Auto class and with transformers.pipeline, it gives the trained model's logits on up to `rows` of the
run's evaluation rows within the tolerance (default: 1e-5 of the largest logit in float32, 1/256 in float16, 1/32
in bfloat16). A run that saved its adapter separately (peft.merge_on_save=false, prefix / prompt tuning) is merged
into the weights (merge=true; prefix and prompt tuning cannot be) or exported as that adapter with its base: base/
for a base built from scratch, else the base model's name (merge=false). Default out: <run dir>/export. Exit 1 when
the check fails (nothing is written), 2 when the request is refused."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from hfx.errors import HfxError, UsageError


@dataclass
class ExportConfig:
    run: str = MISSING
    # The folder to write (default <run dir>/export); an existing one is replaced only with overwrite=true.
    out: str | None = None
    # A run saved as an adapter: merge it into the weights (true) or export the adapter alone (false).
    merge: bool = True
    dtype: str = "float32"
    # The largest logit difference allowed (null: a share of the largest logit, by dtype).
    tolerance: float | None = None
    # Evaluation rows of the run checked.
    rows: int = 32
    overwrite: bool = False


def main(args: list[str]) -> None:
    from hfx.export import ADAPTER_FILE, check_request, export, usage
    from hfx.stages import load_run

    cfg = command_config("export", ExportConfig, args)
    try:
        run = load_run(cfg.run)
    except HfxError as e:  # not a finished run: refused
        raise UsageError(str(e)) from e
    out = Path(cfg.out).expanduser() if cfg.out else run.path / "export"
    check_request(run, out, cfg.merge, cfg.dtype, cfg.tolerance, cfg.rows, cfg.overwrite)
    parity = export(run, out, cfg.merge, cfg.dtype, cfg.tolerance, cfg.rows, cfg.overwrite)
    print(f"hfx: exported {run.path} ({run.task.name}) to {out}", f"  parity  ok: {parity.line()}",
          *(f"  load    {line}" for line in usage(run, str(out), merged=not (out / ADAPTER_FILE).is_file()) if line),
          sep="\n", flush=True)


def command_config(command: str, schema: type, args: list[str], free_text: tuple[str, ...] = ()) -> DictConfig:
    """key=value arguments of a command that runs outside Hydra (it writes no run directory of its own), read with
    Hydra's override grammar and typed by `schema`; keys in `free_text` take the text as typed. `--help` prints the
    command's docstring."""
    import sys

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    from hfx.config.compose import explain_config_error
    from hfx.errors import did_you_mean

    if {"-h", "--help"} & set(args):
        print(sys.modules[f"hfx.commands.{command}"].__doc__)
        raise SystemExit(0)
    cfg = OmegaConf.structured(schema)
    keys = [f.name for f in fields(schema)]
    parser = OverridesParser.create()
    for arg in args:
        key, eq, text = arg.partition("=")
        if not eq or not key:
            raise UsageError(f"{command}: expected key=value, got '{arg}' (keys: {', '.join(keys)})")
        if key not in keys:
            raise UsageError(f"{command}: unknown key '{key}'{did_you_mean(key, keys)}; keys: {', '.join(keys)}")
        value: Any = text
        if key not in free_text:
            try:
                value = parser.parse_override(arg).value()
            except Exception as e:  # Hydra's OverrideParseException
                raise UsageError(f"{key}: cannot read '{text}' ({str(e).strip().splitlines()[0]})") from e
        try:
            setattr(cfg, key, value)
        except OmegaConfBaseException as e:
            raise UsageError(explain_config_error(e)) from e
    for key in keys:
        try:
            getattr(cfg, key)
        except MissingMandatoryValue as e:
            raise UsageError(f"{key}: required and not given (hfx {command} {key}=...)") from e
    return cfg
