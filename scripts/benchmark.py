"""Time hfx against the hand-written Trainer script (../shared/bench/seed_recipe.py) in the same run.

Same model (packaged MiniLM + LoRA r=8 on query/value, pooler and classifier trained), same data (SST-2 train ->
validation), same number of steps and batch size. Prints samples/s, validation accuracy and time to the first
training step of each, and the ratios against each baseline. Speeds are only comparable within one run.

usage: python scripts/benchmark.py [--data ../shared/data/sst2] [--max-steps 100] [--out .bench]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.time()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"})
    if r.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return time.time() - start, r.stdout


def probed(out: Path, *command: str) -> list[str]:
    """The command under scripts/first_step_probe.py: process start to the first Trainer.training_step, timed
    alike for both (the recipe's own setup_s starts after its first imports and stops before the Trainer's own
    preparation)."""
    out.mkdir(parents=True, exist_ok=True)
    return [sys.executable, str(ROOT / "scripts" / "first_step_probe.py"), str(out / "first_step.json"), *command]


def first_step(out: Path) -> float:
    return json.loads((out / "first_step.json").read_text())["first_step_s"]


def seed_recipe(data: Path, out: Path, steps: int, flags: list[str]) -> dict:
    script = ROOT.parent / "shared" / "bench" / "seed_recipe.py"
    wall, stdout = run(probed(out, str(script), str(data), str(out), "--lora", "--save-pooler",
                              "--max-steps", str(steps), *flags), ROOT)
    res = json.loads(stdout.strip().splitlines()[-1])
    return {"samples_per_s": res["train_samples_per_second"], "accuracy": res["eval_accuracy"],
            "first_step_s": first_step(out), "wall_s": wall}


def hfx(data: Path, out: Path, steps: int, bf16: bool, cache: Path) -> dict:
    wall, _ = run(probed(out, "-m", "hfx", "train", "experiment=sst2_minilm_lora", f"dataset.data_dir={data}",
                         f"trainer.max_steps={steps}", f"trainer.bf16={str(bf16).lower()}", f"hydra.run.dir={out}",
                         f"cache_dir={cache}"), ROOT)
    m = json.loads((out / "metrics.json").read_text())
    return {"samples_per_s": m["train_samples_per_second"], "accuracy": m["eval_accuracy"],
            "first_step_s": first_step(out), "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--out", type=Path, default=ROOT / ".bench")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="give the tuned baseline --bf16; default: when hfx turns bf16 on by itself (CUDA with bf16, "
                        "a CPU with AMX or avx512_bf16), so both run the same precision")
    a = p.parse_args()
    if a.bf16 is None:
        from hfx.trainer import bf16_is_fast

        a.bf16 = bf16_is_fast()
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tuned = ["--dynamic", "--group"] + (["--bf16"] if a.bf16 else [])
    results = {
        "tutorial (pad to 128)": seed_recipe(a.data, a.out / f"tutorial-{stamp}", a.max_steps, []),
        "tuned (" + " ".join(tuned) + ")": seed_recipe(a.data, a.out / f"tuned-{stamp}", a.max_steps, tuned),
        # hfx runs twice: the first fills the tokenized-data cache, the second shows a repeat run.
        "hfx (first run)": hfx(a.data, a.out / f"hfx-{stamp}", a.max_steps, a.bf16, a.out / f"cache-{stamp}"),
        "hfx (cached data)": hfx(a.data, a.out / f"hfx2-{stamp}", a.max_steps, a.bf16, a.out / f"cache-{stamp}"),
    }
    base = results["tutorial (pad to 128)"]
    tuned_res = next(v for k, v in results.items() if k.startswith("tuned"))
    print(f"{a.max_steps} steps, batch 32, MiniLM-L6 + LoRA r=8, {'bf16' if a.bf16 else 'fp32'}, data {a.data}")
    print(f"{'recipe':<28} {'samples/s':>10} {'x tutorial':>11} {'x tuned':>8} {'val acc':>8} {'1st step s':>11}")
    for name, r in results.items():
        print(f"{name:<28} {r['samples_per_s']:>10.1f} {r['samples_per_s'] / base['samples_per_s']:>11.2f} "
              f"{r['samples_per_s'] / tuned_res['samples_per_s']:>8.2f} {r['accuracy']:>8.3f} {r['first_step_s']:>11.1f}")
    (a.out / f"benchmark-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
