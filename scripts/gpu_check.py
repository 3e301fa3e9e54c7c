"""GPU check for maintainers (needs a CUDA GPU; about 3 minutes on one H100/H200): `hfx train` of a ~100M-parameter
Llama built from a config (no hub access) on the bundled demo text, bf16, 300 steps; prints tokens/s, peak GPU
memory and MFU (model FLOPs utilisation: 6 x parameters x tokens/s over the GPU's dense bf16 peak).

usage: python scripts/gpu_check.py [--steps 300] [--batch 32] [--block 512] [--compile] [--out gpu_check_runs]"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Dense bf16 tensor-core peak (no sparsity), by device name: the MFU denominator.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}

MODEL_100M = [
    "model=tiny_llama", "model.config.hidden_size=768", "model.config.num_hidden_layers=12",
    "model.config.num_attention_heads=12", "model.config.num_key_value_heads=12",
    "model.config.intermediate_size=2048", "model.config.max_position_embeddings=1024",
    "tokenizer=bpe", "tokenizer.vocab_size=16000", "tokenizer.min_frequency=1",
]


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--compile", action="store_true", help="trainer.torch_compile=true")
    p.add_argument("--out", type=Path, default=ROOT / "gpu_check_runs")
    p.add_argument("overrides", nargs="*", help="more hfx overrides, e.g. trainer.dataloader_num_workers=4")
    a = p.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible (torch.cuda.is_available() is False)")
    name = torch.cuda.get_device_name(0)
    print(f"gpu_check: {torch.cuda.device_count()} x {name}, torch {torch.__version__}", flush=True)

    run_dir = a.out / time.strftime("%Y%m%d-%H%M%S")
    # The bundled reviews repeated, so that an epoch holds many steps (about 1,300 blocks of 512 tokens).
    from hfx.paths import resource

    train_file = a.out / "demo_train_x20.csv"
    a.out.mkdir(parents=True, exist_ok=True)
    header, *rows = resource("demo_sentiment", "train.csv").read_text().splitlines()
    train_file.write_text("\n".join([header, *(rows * 20)]) + "\n")
    cmd = [sys.executable, "-m", "hfx", "train", "task=causal_lm", "dataset=demo_sentiment", "peft=none",
           f"dataset.data_files.train={train_file}",
           *MODEL_100M, f"task.block_size={a.block}", f"tokenizer.max_length={a.block}",
           "task.rows=documents", "task.num_samples=2", f"trainer.max_steps={a.steps}",
           f"trainer.per_device_train_batch_size={a.batch}", "trainer.per_device_eval_batch_size=32",
           "trainer.learning_rate=3e-4", "trainer.warmup_steps=0.1", "trainer.bf16=true",
           "trainer.logging_steps=10", f"trainer.torch_compile={str(a.compile).lower()}",
           "experiment_name=gpu_check", f"hydra.run.dir={run_dir}", f"cache_dir={a.out / 'cache'}", *a.overrides]
    start = time.time()
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if r.returncode != 0:
        sys.exit(f"gpu_check: hfx train failed (exit {r.returncode}): {' '.join(cmd)}")
    m = json.loads((run_dir / "metrics.json").read_text())
    params = m["parameters_total"]
    tokens_s = m["train_samples_per_second"] * a.block
    tflops = 6 * params * tokens_s / 1e12
    peak = peak_tflops(name)
    result = {
        "device": name, "parameters_m": round(params / 1e6, 1), "steps": a.steps, "batch": a.batch,
        "block": a.block, "compile": a.compile, "overrides": a.overrides, "tokens_per_s": round(tokens_s), "model_tflops": round(tflops, 1),
        "mfu": round(tflops / peak, 3) if peak else None, "peak_memory_gib": m.get("peak_memory_gib"),
        "train_runtime_s": m["train_runtime"], "wall_s": round(time.time() - start, 1),
        "eval_perplexity": m.get("eval_perplexity"),
    }
    print("gpu_check: " + json.dumps(result), flush=True)
    (run_dir / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
