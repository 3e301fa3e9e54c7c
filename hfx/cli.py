"""`hfx <command> [overrides]`: argv dispatch to one module per command, and the error policy: one `error:` line,
no traceback unless HYDRA_FULL_ERROR=1; exit 2 when refused before anything ran (command line, config, the inputs
they name), 1 when a run failed."""

from __future__ import annotations

import importlib
import sys

from hfx.errors import HfxError, UsageError, exit_with, full_error, one_of

USAGE = """usage: hfx <command> [key=value ...] [hydra flags]

commands:
  train        compose conf/ with your overrides and fine-tune    hfx train model=minilm peft=lora trainer.learning_rate=3e-4
  predict      serve a trained run through transformers.pipeline  hfx predict run=<run dir> input="a great film"
  evaluate     evaluate a saved run on another split or file      hfx evaluate run=<run dir> dataset.eval_split=test
               (zero-shot, no run: hfx predict model=minilm candidate_labels=[a,b] input=...;
                hfx evaluate model=minilm zero_shot=true dataset=sst2 ...)
  export       a run's model as a standalone, verified folder     hfx export run=<run dir> [dtype=bfloat16] [merge=true]
  attention    attention heatmaps per layer and head (PNG, HTML)  hfx attention run=<run dir> input="a great film" layers=[0]
  check        a dry run: rows as the model sees them, parameters  hfx check model=tiny_bert (= hfx train --dry-run ...)
  experiments  list the experiment files (hfx train experiment=<name>)
  sweeps       a sweep's jobs ranked by its objective              hfx sweeps [<sweep dir>] (default: the newest under multirun/)
  dashboard    trackio's dashboard on localhost (logger=trackio)   hfx dashboard [<sweep dir>] [port=7860]
  report       report.html with plots for a run or a sweep         hfx report [<run or sweep dir>] (default: the newest)

`hfx train --help` shows the config groups and their options; `hfx train --cfg job` prints the composed config;
`hfx train -m trainer.learning_rate=1e-4,3e-4` runs a sweep
(`-m hparams_search=sequence_classification`: an Optuna search); `hfx train resume=<run dir>|auto` continues a
run from its newest checkpoint (SIGTERM / Ctrl-C during training saves one and exits 75);
`hfx train launch=ddp launch.num_processes=2` trains on 2 processes under accelerate launch (launch=fsdp,
deepspeed_zero2/3, multi_node: docs/launch.md). Set HYDRA_FULL_ERROR=1 for tracebacks."""

# command -> the module under hfx.commands whose main(args) runs it (imported only when used).
COMMANDS = {"train": "train", "check": "check", "predict": "predict", "evaluate": "evaluate",
            "export": "export", "attention": "attention", "experiments": "experiments", "sweeps": "sweeps",
            "report": "report", "dashboard": "dashboard"}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("--version", "-V"):
        from hfx import __version__

        print(f"hfx {__version__}")
        return
    command = argv[0]
    try:
        if command not in COMMANDS:
            raise UsageError(str(one_of("command", command, COMMANDS)))
        importlib.import_module(f"hfx.commands.{COMMANDS[command]}").main(argv[1:])
    except HfxError as e:
        if full_error():
            raise
        exit_with(str(e), 2 if isinstance(e, UsageError) else 1)
    except KeyboardInterrupt:  # before or after training (during it, SIGINT saves a checkpoint and stops)
        exit_with("interrupted", 130)
    except Exception as e:  # outside a job (composition, validation): the same one-line policy
        if full_error():
            raise
        from hfx.commands.job import library_error

        exit_with(library_error(e))
