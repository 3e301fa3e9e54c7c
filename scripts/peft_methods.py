"""Compare fine-tuning methods on SST-2 with the packaged MiniLM, same data and budget, in one run.

Full fine-tuning, frozen embeddings, frozen first 3 layers, LoRA, DoRA, IA3 and prompt tuning, each `hfx train
experiment=sst2_minilm_lora` with its own `peft=` / `freeze=` and learning rate (the usual one for the method; set
with --lr name=value), 1 epoch at batch 32 unless --max-steps / --max-train-samples cut it short. Prints a markdown
table: validation accuracy, training samples/s and its ratio to full fine-tuning measured in the same run, and the
share of parameters trained. Speeds are only comparable within one run (one machine, one load).

usage: python scripts/peft_methods.py [--data ../shared/data/sst2] [--out .bench/peft_methods]
                                      [--methods full,lora,...] [--max-steps N] [--max-train-samples N]
                                      [--lr lora=1e-3 ...] [-- extra hfx overrides]"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (hfx overrides, learning rate)
METHODS = {
    "full": (["peft=none"], 1e-4),
    "frozen embeddings": (["peft=none", "freeze=embeddings"], 1e-4),
    "frozen first 3 layers": (["peft=none", "freeze=first_layers", "freeze.layers=3"], 1e-4),
    "lora": (["peft=lora"], 5e-4),
    "dora": (["peft=dora"], 5e-4),
    "ia3": (["peft=ia3"], 3e-3),
    "prompt tuning": (["peft=prompt_tuning", "peft.num_virtual_tokens=20"], 3e-2),
}


def train(name: str, overrides: list[str], lr: float, a: argparse.Namespace, out: Path) -> dict:
    run_dir = out / name.replace(" ", "_")
    cmd = [sys.executable, "-m", "hfx", "train", "experiment=sst2_minilm_lora", f"dataset.data_dir={a.data}",
           f"hydra.run.dir={run_dir}", f"cache_dir={a.out / 'cache'}", "experiment_name=peft_methods",
           f"trainer.learning_rate={lr}", "trainer.num_train_epochs=1", "trainer.per_device_train_batch_size=32",
           *overrides, *a.overrides]
    if a.max_steps:
        cmd.append(f"trainer.max_steps={a.max_steps}")
    if a.max_train_samples:
        cmd.append(f"dataset.max_train_samples={a.max_train_samples}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    start = time.time()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{name} failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    m = json.loads((run_dir / "metrics.json").read_text())
    print(f"{name}: accuracy {m['eval_accuracy']:.4f}, {m['train_samples_per_second']:.1f} samples/s "
          f"({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    return {"overrides": overrides, "learning_rate": lr, "accuracy": m["eval_accuracy"],
            "samples_per_s": m["train_samples_per_second"], "train_runtime": m["train_runtime"],
            "trainable_percent": m["parameters_trainable_percent"], "run_dir": str(run_dir)}


def table(results: dict[str, dict]) -> str:
    full = results.get("full", {}).get("samples_per_s")
    lines = ["| method | overrides | lr | trained params | val accuracy | samples/s | x full |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        ratio = f"{r['samples_per_s'] / full:.2f}" if full else "-"
        lines.append(f"| {name} | `{' '.join(r['overrides'])}` | {r['learning_rate']:g} | "
                     f"{r['trainable_percent']:.2f}% | {r['accuracy']:.3f} | {r['samples_per_s']:.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    p.add_argument("--out", type=Path, default=ROOT / ".bench" / "peft_methods")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of: {', '.join(METHODS)}")
    p.add_argument("--max-steps", type=int, default=0, help="cut each run to N steps (a quick check)")
    p.add_argument("--max-train-samples", type=int, default=0)
    p.add_argument("--lr", action="append", default=[], metavar="NAME=VALUE", help="a method's learning rate")
    p.add_argument("overrides", nargs="*", help="more hfx overrides for every run (after --)")
    a = p.parse_args()
    chosen = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from: {', '.join(METHODS)}")
    rates = {k: float(v) for k, _, v in (x.partition("=") for x in a.lr)}
    out = a.out / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results = {name: train(name, METHODS[name][0], rates.get(name, METHODS[name][1]), a, out) for name in chosen}
    budget = f"{a.max_steps} steps" if a.max_steps else "1 epoch"
    print(f"SST-2, MiniLM-L6, {budget}, batch 32"
          + (f", {a.max_train_samples} train rows" if a.max_train_samples else "") + f"; runs in {out}\n")
    print(table(results))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
