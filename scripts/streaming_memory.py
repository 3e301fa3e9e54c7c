"""Peak memory of `hfx train` as the training file grows, with and without `dataset.streaming=true`.

Writes SST-2's train.csv repeated 1x, 10x and 100x into a temporary folder, runs the tiny classifier on each in a
subprocess (fixed trainer.max_steps, the same validation file) and prints the peak resident memory of that process
(resource.getrusage(RUSAGE_CHILDREN).ru_maxrss, read in a wrapper process of its own per run). Streaming runs on 1x,
10x and 100x; the materialised path on 1x and 10x (and 100x with --materialised-100x) for contrast. `--full-pass`
adds a streamed run that reads every row of the 100x file (a filter keeps the 0.5% of rows with 250+ characters, so
300 steps of 16 pass through all of it).

    .venv/bin/python scripts/streaming_memory.py [--data ../shared/data/sst2] [--full-pass] [--materialised-100x]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model=tiny_bert", "tokenizer=wordpiece", "tokenizer.vocab_size=2000", "peft=none", "logger=none",
        "trainer.learning_rate=1e-3", "trainer.logging_steps=10", "trainer.save_strategy=no"]
# Runs one command and prints the peak RSS (KiB on Linux) of its process (and any it waited for) as JSON.
WRAPPER = ("import json, resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
           "stderr=subprocess.DEVNULL).returncode; print(json.dumps({'rc': rc, 'maxrss_kib': "
           "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


def repeat(source: Path, times: int, target: Path) -> int:
    """source (a CSV with a header) with its rows written `times` times; returns the row count."""
    header, *rows = source.read_text().splitlines(keepends=True)
    with target.open("w") as f:
        f.write(header)
        for _ in range(times):
            f.writelines(rows)
    return len(rows) * times


def peak_rss(args: list[str], folder: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one `hfx train` run."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(folder / "datasets-cache")}
    cmd = [sys.executable, "-m", "hfx", "train", *args]
    start = time.time()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"failed ({result['rc']}): {' '.join(cmd)}")
    return result["maxrss_kib"] / 1024, time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--full-pass", action="store_true")
    parser.add_argument("--materialised-100x", action="store_true", help="also the materialised run on 100x (minutes)")
    opts = parser.parse_args()
    data = Path(opts.data)
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plan = [(1, True), (10, True), (100, True), (1, False), (10, False)]
        plan += [(100, False)] if opts.materialised_100x else []
        files = {}
        for times in sorted({t for t, _ in plan}):
            path = folder / f"train_x{times}.csv"
            files[times] = (path, repeat(data / "train.csv", times, path))
        for times, streaming in plan + ([(100, "full")] if opts.full_pass else []):
            path, n = files[times]
            args = [*TINY, "dataset=sst2", "dataset.path=csv", f"dataset.data_files.train={path}",
                    f"dataset.data_files.validation={data / 'validation.csv'}", "dataset.max_eval_samples=200",
                    f"trainer.max_steps={opts.steps}", "trainer.per_device_train_batch_size=32",
                    f"hydra.run.dir={folder / f'run-{times}-{streaming}'}", f"cache_dir={folder / 'cache'}"]
            if streaming:
                args.append("dataset.streaming=true")
            if streaming == "full":
                args += ["dataset.filter.min_chars=250", "trainer.max_steps=300",
                         "trainer.per_device_train_batch_size=16", "dataset.stream_head=500",
                         "dataset.shuffle_buffer=0"]
            mib, seconds = peak_rss(args, folder)
            what = {True: "streaming", False: "materialised", "full": "streaming, every row read"}[streaming]
            rows_out.append((f"{times}x", f"{path.stat().st_size / 2**20:.1f}", n, what, f"{mib:.0f}", f"{seconds:.0f}"))
            print(f"{rows_out[-1]}", file=sys.stderr, flush=True)
    print("| training file | MiB | rows | mode | peak RSS (MiB) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows_out:
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
