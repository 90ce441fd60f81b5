"""Measurements: device description, matmul ceiling, FLOPs and MFU, memory (clocks: timing.py).

FLOPs of one training step (forward + backward), counted on real tokens only, per document of
``n`` tokens: ``6 * N * n + 6 * L * d * n**2`` where ``N`` is the number of parameters that take
part in matmuls (all but the input embedding; the output projection counted once even when tied),
``L`` the layers and ``d`` the hidden size. The second term is the attention score and value
matmuls (``4 * n**2 * d`` per layer forward, times 3 for forward + backward, halved for the causal
mask). Work spent on padding or across documents is not counted: MFU measures useful work.
"""

from __future__ import annotations

import os
import platform
import resource

import torch

from .timing import summarize, time_steps  # noqa: F401  (summarize: re-exported)

FLOPS_FORMULA = ("6*N*n + 6*L*d*n^2 per document of n real tokens (N = matmul parameters: all but "
                 "the input embedding, output projection counted once; L layers; d hidden size; "
                 "attention term = 12*L*d*n^2 halved for the causal mask)")

#: Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' datasheets.
DENSE_BF16_PEAK = {
    "H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12,
    "H100 PCIe": 756e12, "H100": 756e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12,
    "A10G": 70e12, "L4": 121e12, "B200": 2250e12,
}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str) -> dict:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        name = props.name
        peak = next((v for k, v in DENSE_BF16_PEAK.items() if k in name), None)
        return {"kind": "cuda", "name": name, "memory_gb": props.total_memory / 2**30,
                "dense_bf16_peak_flops": peak, "cuda": torch.version.cuda,
                "host_cpu": cpu_name(), "cores": os.cpu_count(),
                "peak_source": "vendor datasheet, dense bf16" if peak else "unknown GPU"}
    return {"kind": "cpu", "name": cpu_name(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "dense_bf16_peak_flops": None,
            "peak_source": "no published dense bf16 peak for a CPU; MFU uses the measured "
                           "matmul ceiling only"}


def matmul_ceiling(device: str, dtype: torch.dtype, *, size: int | None = None,
                   iters: int = 10) -> dict:
    """Achieved FLOP/s of a square matmul in this run, the practical ceiling for MFU."""
    size = size or (8192 if device.startswith("cuda") else 768)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sec = time_steps(lambda: a @ b, device, repeats=iters, warmup=3)["median"]
    return {"flops": 2 * size ** 3 / sec, "size": size, "dtype": str(dtype).replace("torch.", ""),
            "median_s": sec, "iters": iters}


def step_flops(doc_lengths, shape: dict) -> float:
    N, L, d = shape["params_matmul"], shape["layers"], shape["hidden_size"]
    return float(sum(6 * N * n + 6 * L * d * n * n for n in doc_lengths))


def reset_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def allocated_mb(device: str) -> float | None:
    """Memory allocated now by tensors on a CUDA device (MB); ``None`` on a CPU."""
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated(device) / 2**20
    return None


def memory(device: str) -> dict:
    if device.startswith("cuda"):
        return {"peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20,
                "memory_note": "torch.cuda.max_memory_allocated / max_memory_reserved"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_allocated_mb": None, "peak_reserved_mb": None, "process_max_rss_mb": rss,
            "memory_note": "CPU: no allocator statistics; process max RSS is cumulative over "
                           "the run, not per strategy"}
