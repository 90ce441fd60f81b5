"""The benchmark's CUDA paths, exercised on a CPU (no GPU has ever run them).

* CUDA-event timing: the clock code runs against fake events and a fake synchronize.
"""

from __future__ import annotations

import pytest
import torch
from sft_conformance.bench import timing

# --- CUDA-event timing -----------------------------------------------------------------------

class FakeGPU:
    """A device clock in milliseconds, events recorded on it, and a synchronize."""

    def __init__(self):
        self.now = 0.0
        self.pending = []  # events recorded since the last synchronize
        self.syncs = []    # device time of each synchronize
        test = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing, "events without enable_timing cannot be timed"
                self.t = None

            def record(self, stream=None):
                self.t = test.now
                test.pending.append(self)

            def elapsed_time(self, end):
                if self in test.pending or end in test.pending:
                    raise RuntimeError("event read before synchronize")
                return end.t - self.t

        self.Event = Event

    def synchronize(self, device=None):
        assert torch.device(device if device is not None else "cuda").type == "cuda"
        self.syncs.append(self.now)
        self.pending.clear()

    def work(self, ms):
        def fn():
            self.now += ms.pop(0)
        return fn


@pytest.fixture()
def gpu(monkeypatch):
    fake = FakeGPU()
    monkeypatch.setattr(torch.cuda, "Event", fake.Event)
    monkeypatch.setattr(torch.cuda, "synchronize", fake.synchronize)
    return fake


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 0)])
def test_time_steps_cuda_branch_with_fake_events(gpu, device):
    # two warm-up calls of 1 s (a compile, say), then 10, 40 and 20 ms
    result = timing.time_steps(gpu.work([1000.0, 1000.0, 10.0, 40.0, 20.0]), device, repeats=3,
                               warmup=2)
    assert result["times"] == pytest.approx([0.010, 0.040, 0.020])  # warm-up excluded
    assert result["median"] == pytest.approx(0.020)
    assert (result["min"], result["max"]) == pytest.approx((0.010, 0.040))
    assert result["spread_pct"] == pytest.approx(150.0) and result["n"] == 3
    assert result["clock"].startswith("cuda events")
    assert gpu.syncs[0] == 2000.0  # after the warm-up, before the first event
    assert gpu.syncs[-1] == 2070.0 and not gpu.pending  # before the events were read


def test_marks_read_only_after_synchronize(gpu):
    marks = timing.Marks("cuda")
    work = gpu.work([5.0, 1.0, 7.0, 2.0])
    for _ in range(2):  # (fwd+bwd, optimizer) per step, as train_epochs does
        marks.mark()
        work()
        marks.mark()
        work()
    marks.mark()
    with pytest.raises(RuntimeError, match="before synchronize"):
        marks.points[0].elapsed_time(marks.points[1])  # what an unsynchronized read would do
    assert marks.intervals() == pytest.approx([0.005, 0.001, 0.007, 0.002])
    assert len(gpu.syncs) == 1


def test_time_steps_cpu_branch(monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 1.2, 2.0, 2.3])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append(a))
    result = timing.time_steps(lambda: None, "cpu", repeats=3, warmup=1)
    assert result["times"] == pytest.approx([0.5, 0.2, 0.3])
    assert result["median"] == pytest.approx(0.3) and result["clock"] == "time.perf_counter"
    assert not calls


def test_matmul_ceiling_uses_the_clock():
    from sft_conformance.bench.metrics import matmul_ceiling

    out = matmul_ceiling("cpu", torch.float32, size=32, iters=3)
    assert out["flops"] > 0 and out["iters"] == 3
