"""Where the time of a CUDA training step goes (reports/bench/gpu.md, "bound by the CPU").

Plain steps of the Qwen2.5-0.5B shape at three sizes, then torch.profiler over three steps at
8 x 300 tokens and over a short two-strategy benchmark. Run on a GPU machine:

    python scripts/profile_cuda_step.py > profile.log
"""

import time

import torch
from torch.profiler import ProfilerActivity, profile

from sft_conformance.assets import load_tokenizer
from sft_conformance.bench.models import build_model
from sft_conformance.bench.presets import get_preset
from sft_conformance.bench.runner import run_benchmark
from sft_conformance.reference.loss import sft_loss

ACTIVITIES = [ProfilerActivity.CPU, ProfilerActivity.CUDA]


def step(model, opt, ids):
    sft_loss(model(input_ids=ids, use_cache=False).logits, ids).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def floor_ms(model, opt, batch, length, n=10, warmup=3):
    """Wall milliseconds of one forward + backward + AdamW step on random ids."""
    ids = torch.randint(0, 4000, (batch, length), device="cuda")
    for _ in range(warmup):
        step(model, opt, ids)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step(model, opt, ids)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


def main():
    tok = load_tokenizer("chatml")
    model, _ = build_model("qwen2.5-0.5b", tok, device="cuda", dtype=torch.bfloat16, attn="sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for b, t in [(1, 2048), (8, 300), (8, 2048)]:
        print(f"floor B={b} T={t}: {floor_ms(model, opt, b, t):.1f} ms/step (fwd+bwd+adamw)",
              flush=True)
    ids = torch.randint(0, 4000, (8, 300), device="cuda")
    with profile(activities=ACTIVITIES) as p:
        for _ in range(3):
            step(model, opt, ids)
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=15))
    del model, opt
    torch.cuda.empty_cache()
    cfg = get_preset("cuda-qwen-alpaca", n_examples=64, repeats=1, warmup_steps=2,
                     strategies=("dynamic", "packed"), compare_packers=False,
                     fill_rate_lengths=1000)
    with profile(activities=ACTIVITIES) as p:
        run_benchmark(cfg, progress=False)
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
