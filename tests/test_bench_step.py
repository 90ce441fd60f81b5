"""The benchmark's training step (issue 25): --compile, the optimizer, the GPU-busy fraction.

* ``--compile``: the runner hands the model's forward, its decoder and the loss to
  ``torch.compile`` and the training steps call the compiled ones (wiring, with a recording
  stand-in for ``torch.compile``: fast); ``slow``: a real ``torch.compile`` (backend ``eager``)
  of the tiny model gives the eager numbers, and the whole smoke preset runs under inductor
  (about 5 minutes on this 2-core machine).
* the optimizer: AdamW fused on CUDA, foreach on a CPU.
* the busy fraction: arithmetic, the CPU-bound label and the report's wording on synthetic
  numbers, the profiler reading on a fake profile; on a CPU it is "not measured", never a number.
"""

from __future__ import annotations

import json
import types

import pytest
import torch

from sft_conformance.bench import busy, compiling
from sft_conformance.bench.presets import get_preset


def _small(**kw):
    return get_preset("smoke", **{"n_examples": 8, "repeats": 1, "warmup_steps": 1,
                                  "strategies": ("dynamic", "packed"), **kw})


@pytest.fixture(scope="module")
def smoke_results():
    """A small CPU run of the smoke preset (two strategies, eight examples)."""
    from sft_conformance.bench.runner import run_benchmark

    return run_benchmark(_small(), progress=False)


def test_compile_wiring_reaches_model_decoder_and_loss(monkeypatch):
    from sft_conformance.bench.runner import run_benchmark

    compiled, called = [], []

    def fake_compile(obj, backend="inductor", dynamic=None, **kw):
        compiled.append((type(obj).__name__, backend))

        def run(*a, **k):
            called.append(type(obj).__name__)
            return obj(*a, **k)
        return run

    monkeypatch.setattr(compiling.torch, "compile", fake_compile)
    results = run_benchmark(_small(compile=True, compile_backend="aot_eager"), progress=False)
    names = {n for n, _ in compiled}
    assert {"LlamaForCausalLM", "LlamaModel", "StepLoss"} <= names
    assert {b for _, b in compiled} == {"aot_eager"}
    # the smoke preset's chunked loss needs hidden states: the compiled decoder and loss ran
    assert "LlamaModel" in called and "StepLoss" in called
    assert results["compile"] == {"enabled": True, "backend": "aot_eager",
                                  "what": "torch.compile of the model (forward and decoder) "
                                          "and of the loss"}
    assert results["summary"]["all_parity_passed"] and results["summary"]["all_isolation_passed"]


def test_no_compile_by_default(monkeypatch):
    monkeypatch.setattr(compiling.torch, "compile",
                        lambda *a, **k: pytest.fail("compiled without --compile"))
    from sft_conformance.bench.runner import run_benchmark

    results = run_benchmark(_small(strategies=("dynamic",)), progress=False)
    assert results["compile"]["enabled"] is False


@pytest.mark.slow
def test_compiled_model_gives_the_eager_numbers(chatml):
    """A real torch.compile (backend eager: dynamo tracing, no code generation; ~10 s)."""
    from sft_conformance.assets import tiny_model
    from sft_conformance.bench.losses import StepLoss

    model = tiny_model(chatml)
    net = compiling.CompiledModel(model, backend="eager")
    ids = torch.randint(5, 200, (2, 24))
    labels = ids.clone()
    labels[:, :4] = -100
    w = model.get_output_embeddings().weight
    eager = StepLoss("chunked", 16)(model.get_decoder()(input_ids=ids).last_hidden_state,
                                    labels, w)
    loss = compiling.compile_loss(StepLoss("chunked", 16), backend="eager")
    ours = loss(net.get_decoder()(input_ids=ids).last_hidden_state, labels, w)
    torch.testing.assert_close(ours, eager)
    ours.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    torch.testing.assert_close(net(input_ids=ids).logits, model(input_ids=ids).logits)
    assert net.config is model.config and list(net.parameters()) == list(model.parameters())


@pytest.mark.slow
def test_smoke_preset_compiled_with_inductor_on_cpu(tmp_path):
    """`bench --preset smoke --compile` end to end (inductor on a CPU: a minute or more)."""
    from sft_conformance.cli import main

    code = main(["bench", "--preset", "smoke", "--compile", "--out", str(tmp_path),
                 "--name", "compiled", "--no-progress", "--no-plot"])
    assert code == 0
    results = json.loads((tmp_path / "compiled.json").read_text())
    assert results["compile"]["enabled"] and results["compile"]["backend"] == "inductor"
    assert results["summary"]["all_parity_passed"]


def test_optimizer_is_fused_on_cuda_and_foreach_on_cpu():
    model = torch.nn.Linear(3, 3)
    opt, name = compiling.make_optimizer(model, 1e-3, "cpu")
    assert opt.defaults["foreach"] is True and not opt.defaults.get("fused")
    assert name == "AdamW (foreach=True)"
    opt, name = compiling.make_optimizer(model, 1e-3, "cuda")  # built, never stepped here
    assert opt.defaults["fused"] is True and name == "AdamW (fused=True)"


def test_busy_fraction_and_cpu_bound_label_on_synthetic_numbers():
    assert busy.busy_fraction(0.35, 0.5) == pytest.approx(0.7)
    assert busy.busy_fraction(None, 1.0) is None and busy.busy_fraction(1.0, 0) is None
    assert busy.bound_label(0.69).startswith("CPU-bound") and "--compile" in busy.bound_label(0.5)
    assert busy.bound_label(0.7) == "GPU-bound" and busy.bound_label(0.95) == "GPU-bound"
    assert busy.bound_label(None).startswith("not measured")


def test_profiler_reading_sums_the_cuda_kernels_only():
    from torch.autograd import DeviceType

    events = [types.SimpleNamespace(device_type=DeviceType.CUDA, self_device_time_total=300.0),
              types.SimpleNamespace(device_type=DeviceType.CPU, self_device_time_total=0.0,
                                    self_cpu_time_total=900.0),
              types.SimpleNamespace(device_type=DeviceType.CUDA, self_device_time_total=200.0)]
    prof = types.SimpleNamespace(key_averages=lambda: events)
    assert busy.device_seconds(prof) == pytest.approx(500e-6)


def test_busy_not_measured_on_cpu():
    out = busy.measure(lambda b: pytest.fail("stepped on a CPU"), [{}], "cpu")
    assert out["fraction"] is None and out["steps"] == 0 and "not measured" in out["method"]


def _with_busy(smoke_like: dict, fractions: dict) -> dict:
    from sft_conformance.bench.runner import _summarize

    results = json.loads(json.dumps(smoke_like))
    results["device"] = {**results["device"], "kind": "cuda", "name": "Fake GPU",
                         "memory_gb": 80.0, "cuda": "13.0", "dense_bf16_peak_flops": 989e12,
                         "peak_source": "test"}
    for s, f in fractions.items():
        results["strategies"][s]["busy"] = {
            "fraction": f, "label": busy.bound_label(f), "device_s": f * 0.1, "wall_s": 0.1,
            "steps": 5, "method": "torch.profiler: synthetic"}
    results["summary"] = _summarize(results["strategies"], results["dtype"])
    return results


def test_report_labels_cpu_bound_runs(smoke_results):
    from sft_conformance.bench.report import markdown, strategy_table

    results = _with_busy(smoke_results, {"dynamic": 0.42, "packed": 0.91})
    assert results["summary"]["cpu_bound"] == ["dynamic"]
    table = strategy_table(results)
    assert "42% CPU-bound" in table and "91%" in table and "91% CPU-bound" not in table
    text = markdown(results, None)
    assert "**CPU-bound:** dynamic" in text and busy.ADVICE in text
    assert "| dynamic | 42.0% |" in text.replace("  ", " ").replace("  ", " ")


def test_report_says_not_measured_on_cpu(smoke_results):
    from sft_conformance.bench.report import markdown, strategy_table

    assert smoke_results["summary"]["cpu_bound"] == []
    assert "not measured" in strategy_table(smoke_results)
    text = markdown(smoke_results, None)
    assert "GPU-busy fraction: **not measured**" in text and "CPU-bound:**" not in text


def test_stored_h100_results_render_without_the_new_fields(tmp_path):
    """Results stored before issue 25 (the H100 runs) still render: no busy fraction is made up
    for them, the loss is the reference one they ran, the memory table has their peaks."""
    from pathlib import Path

    from sft_conformance.cli import main

    stored = Path(__file__).resolve().parents[1] / "reports/bench/cuda-qwen-alpaca-h100.json"
    assert main(["bench", "--results", str(stored), "--render", "--out", str(tmp_path),
                 "--no-plot"]) == 0
    text = (tmp_path / "cuda-qwen-alpaca-h100.md").read_text()
    assert "GPU-busy fraction: **not recorded**" in text and "CPU-bound:**" not in text
    assert "Loss: `reference`" in text and "| packed       | 10,529" in text
