"""The hand-written reference for scripts/gpu_check.py: the same ~85M Llama config trained with a plain PyTorch
loop (bf16 autocast, fused AdamW, random tokens already on the GPU), so its tokens/s is what the hardware gives
this model with no data pipeline at all. Run both in one session and compare the ratio.

usage: python scripts/gpu_reference.py [--steps 300] [--batch 32] [--block 512] [--vocab 5040]"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--vocab", type=int, default=5040, help="the vocabulary gpu_check's trained tokenizer reaches")
    a = p.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=a.vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         num_key_value_heads=12, intermediate_size=2048, max_position_embeddings=1024,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config).cuda()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    data = torch.randint(0, a.vocab, (64, a.batch, a.block), device="cuda")
    warmup = 10
    for step in range(a.steps + warmup):
        if step == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        batch = data[step % len(data)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    tokens_s = a.steps * a.batch * a.block / (time.perf_counter() - start)
    print("gpu_reference: " + json.dumps({"parameters_m": round(params / 1e6, 1), "tokens_per_s": round(tokens_s),
                                          "model_tflops": round(6 * params * tokens_s / 1e12, 1),
                                          "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}))


if __name__ == "__main__":
    main()
