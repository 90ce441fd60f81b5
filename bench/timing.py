"""The benchmark's clocks: the only code that touches CUDA events.

:class:`Marks` records points in time: ``time.perf_counter`` on a CPU; on CUDA a
``torch.cuda.Event(enable_timing=True)`` recorded on the current stream, read only after one
``torch.cuda.synchronize`` (reading an event before its work has finished is an error, and timing
the host instead of the device measures kernel launches, not kernels). :func:`time_steps` is
built on it: ``warmup`` untimed calls, then ``repeats`` timed ones, summarised as median and
spread. ``device`` is anything ``torch.device`` accepts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


class Marks:
    """Points in time (e.g. start, after backward, after the optimizer) without syncing."""

    def __init__(self, device):
        self.device = device
        self.cuda = is_cuda(device)
        self.points = []

    def mark(self) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.points.append(e)
        else:
            self.points.append(time.perf_counter())

    def intervals(self) -> list[float]:
        """Seconds between consecutive marks; synchronizes once, before reading, on CUDA."""
        if self.cuda:
            synchronize(self.device)
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.points, self.points[1:])]
        return [b - a for a, b in zip(self.points, self.points[1:])]


def summarize(values) -> dict:
    """Median, min, max, spread (max - min, in % of the median) and count."""
    xs = sorted(values)
    med = statistics.median(xs)
    return {"median": med, "min": xs[0], "max": xs[-1],
            "spread_pct": 100 * (xs[-1] - xs[0]) / med if med else 0.0, "n": len(xs)}


def time_steps(fn: Callable[[], object], device, *, repeats: int, warmup: int = 1) -> dict:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, on ``device``'s clock.

    On CUDA the device is synchronized after the warm-up (its work is not counted) and once more
    before the events are read. Returns :func:`summarize` of the per-call seconds, plus
    ``times`` (in call order) and ``clock``.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    marks = Marks(device)
    for _ in range(repeats):
        marks.mark()
        fn()
        marks.mark()
    times = marks.intervals()[0::2]  # start -> end of each call; skip the gaps between calls
    clock = "cuda events, read after synchronize" if marks.cuda else "time.perf_counter"
    return {**summarize(times), "times": times, "clock": clock}
