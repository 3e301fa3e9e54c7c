"""Run a training script or module and record, in the same way for any of them, the seconds from process start to
the first training step (transformers' Trainer.training_step): imports, config, data and model preparation all
count. Used by scripts/benchmark.py so that hfx and the hand-written recipe are timed alike.

usage: python scripts/first_step_probe.py OUT_JSON script.py [args ...]
       python scripts/first_step_probe.py OUT_JSON -m module [args ...]"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time


def main() -> None:
    # Process start from /proc in clock ticks, as hfx's setup_s (psutil's create_time is up to 1 s early); nothing
    # of hfx imported here, so the recipe is not charged for it.
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    start = time.time() - (float(open("/proc/uptime").read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK"))
    out, *rest = sys.argv[1:]
    import transformers  # imported by either run anyway; its time counts (the clock started at process start)

    original = transformers.Trainer.training_step
    seen = []

    def training_step(self, *args, **kwargs):
        if not seen:
            seen.append(time.time() - start)
            with open(out, "w") as f:
                json.dump({"first_step_s": round(seen[0], 2)}, f)
        return original(self, *args, **kwargs)

    transformers.Trainer.training_step = training_step
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
