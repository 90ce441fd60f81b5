"""GPU-busy fraction of a strategy's training steps, and the "CPU-bound" label.

The busy fraction is the time the GPU spent in kernels over the wall time of the same steps:
``torch.profiler`` (CUDA activity) over a few extra training steps after the timed epochs, the
kernels' self device time summed, divided by the host wall time of those steps (a synchronize
before and after). Below :data:`CPU_BOUND_BELOW` the GPU waited on the host (kernel launches,
Python, the optimizer's many small kernels) for more than 30% of the time: the run is labelled
CPU-bound, with the advice to raise the batch or compile. Profiling adds a little host time, so
the fraction it gives is, if anything, low. Kernels on several streams may overlap, so the sum
can exceed the wall time; the fraction is reported as measured.

On a CPU there is no device to be busy: the fraction is ``None`` ("not measured"), never a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

CPU_BOUND_BELOW = 0.7
PROFILED_STEPS = 5
ADVICE = "raise the batch (examples per step) or run with --compile"


def busy_fraction(device_s: float | None, wall_s: float | None) -> float | None:
    """Device (kernel) seconds over wall seconds; ``None`` when either was not measured."""
    if device_s is None or wall_s is None or wall_s <= 0:
        return None
    return device_s / wall_s


def bound_label(fraction: float | None) -> str:
    """``CPU-bound (...advice...)``, ``GPU-bound`` or ``not measured``."""
    if fraction is None:
        return "not measured (no GPU)"
    if fraction < CPU_BOUND_BELOW:
        return f"CPU-bound: {ADVICE}"
    return "GPU-bound"


def device_seconds(prof) -> float:
    """Self device time of every CUDA event of a ``torch.profiler.profile``, in seconds."""
    from torch.autograd import DeviceType

    total_us = 0.0
    for e in prof.key_averages():
        if getattr(e, "device_type", None) == DeviceType.CUDA:
            total_us += getattr(e, "self_device_time_total", 0.0)
    return total_us / 1e6


def measure(step: Callable[[dict], None], batches: Sequence[dict], device: str,
            steps: int = PROFILED_STEPS) -> dict:
    """Profile ``steps`` calls of ``step`` (one training step each) on CUDA; ``None`` elsewhere."""
    if torch.device(device).type != "cuda":
        return {"fraction": None, "label": bound_label(None), "device_s": None, "wall_s": None,
                "steps": 0, "method": "not measured: CPU run (no device to be busy)"}
    from torch.profiler import ProfilerActivity, profile

    chosen = [batches[i % len(batches)] for i in range(steps)]
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for b in chosen:
            step(b)
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    dev = device_seconds(prof)
    frac = busy_fraction(dev, wall)
    return {"fraction": frac, "label": bound_label(frac), "device_s": dev, "wall_s": wall,
            "steps": steps, "method": "torch.profiler: CUDA kernels' self time / host wall time "
                                      f"of {steps} extra training steps after the timed epochs"}
