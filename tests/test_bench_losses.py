"""The benchmark step's losses (issue 25): chunked and fused against the reference.

* ``chunked``: value and gradients equal the reference ``sft_loss`` (float32 to rounding, bf16
  within the dtype's tolerance), whatever the chunk size, and no tensor of the full
  (positions x vocabulary) size is ever created, in the forward or the backward.
* ``fused`` (Liger): without ``liger-kernel`` the command stops with one line naming the extra
  (exit 2); with it, on a CPU, it stops the same way (Liger is CUDA only); a fake Liger module
  shows the call the step makes.
* ``auto``: chunked above a 64k vocabulary, reference otherwise.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sft_conformance.bench import losses
from sft_conformance.bench.losses import StepLoss, choose_loss, chunked_loss, chunked_token_nll
from sft_conformance.reference.loss import per_token_nll, sft_loss


def _inputs(dtype, B=3, T=19, d=16, V=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, d, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(V, d, generator=g) / d ** 0.5).to(dtype).requires_grad_()
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :6] = -100       # a prompt
    labels[2, 11:] = -100      # padding
    return h, w, labels


def _grads(loss_fn, h, w, labels):
    h.grad = w.grad = None
    loss = loss_fn(h, w, labels)
    loss.backward()
    return loss.detach(), h.grad.clone(), w.grad.clone()


@pytest.mark.parametrize("chunk", [1, 7, 16, 1000])
def test_chunked_loss_and_gradients_equal_the_reference_float32(chunk):
    h, w, labels = _inputs(torch.float32)
    ref = _grads(lambda h, w, y: sft_loss(h @ w.T, y), h, w, labels)
    ours = _grads(lambda h, w, y: chunked_loss(h, w, y, chunk), h, w, labels)
    assert ours[0].dtype == torch.float32
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[2], ref[2], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(chunked_token_nll(h, w, labels, chunk),
                                   per_token_nll(h @ w.T, labels), rtol=1e-5, atol=1e-5)


def test_chunked_loss_bfloat16_within_the_dtype_tolerance():
    """bf16 as on a GPU: logits in bf16, the loss in float32, gradients back in bf16."""
    h, w, labels = _inputs(torch.bfloat16)
    ref = _grads(lambda h, w, y: sft_loss(h @ w.T, y), h, w, labels)
    ours = _grads(lambda h, w, y: chunked_loss(h, w, y, 8), h, w, labels)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-3, atol=1e-3)
    assert ours[1].dtype == ours[2].dtype == torch.bfloat16
    torch.testing.assert_close(ours[1].float(), ref[1].float(), rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(ours[2].float(), ref[2].float(), rtol=2e-2, atol=2e-3)


def test_chunked_loss_of_a_batch_with_no_trained_position_is_a_zero_with_zero_gradients():
    h, w, labels = _inputs(torch.float32)
    labels[:] = -100
    loss, gh, gw = _grads(lambda h, w, y: chunked_loss(h, w, y, 5), h, w, labels)
    assert float(loss) == 0 and not gh.any() and not gw.any()


class LargestTensor(TorchDispatchMode):
    """The most elements of any tensor an operator returned while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_chunked_loss_never_materialises_the_full_logits():
    B, T, d, V, chunk = 4, 64, 8, 500, 32
    h, w, labels = _inputs(torch.float32, B=B, T=T, d=d, V=V)
    positions = B * (T - 1)
    with LargestTensor() as seen:
        chunked_loss(h, w, labels, chunk).backward()
    assert seen.largest <= chunk * V < positions * V  # forward and backward alike
    with LargestTensor() as seen:
        sft_loss(h @ w.T, labels).backward()
    assert seen.largest >= positions * V  # the reference does: what the chunks avoid


def test_step_loss_parity_sum_and_description():
    h, w, labels = _inputs(torch.float32)
    with torch.no_grad():
        logits = h @ w.T
        ref = StepLoss("reference").nll_sum(logits, labels, w)
        ours = StepLoss("chunked", 5).nll_sum(h, labels, w)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert not StepLoss("reference").needs_hidden and StepLoss("chunked").needs_hidden
    assert "5 positions" in StepLoss("chunked", 5).describe()
    with pytest.raises(ValueError, match="at least one token"):
        StepLoss("chunked", 0)


def test_auto_loss_is_chunked_above_a_64k_vocabulary():
    assert choose_loss("auto", 151_936) == "chunked"        # Qwen2.5
    assert choose_loss(None, 128_256) == "chunked"          # Llama 3
    assert choose_loss("auto", 65_536) == "reference"
    assert choose_loss("auto", 4_096) == "reference"        # the bundled BPE
    assert choose_loss("reference", 151_936) == "reference"
    with pytest.raises(ValueError, match="unknown loss"):
        choose_loss("liger", 10)


def test_fused_without_liger_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # import fails, as when absent
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", None)
    with pytest.raises(losses.LossUnavailable) as err:
        losses.check_available("fused", "cuda")
    message = str(err.value)
    assert "\n" not in message and "liger-kernel" in message
    assert losses.FUSED_EXTRA in message and "--loss chunked" in message


def _fake_liger(monkeypatch, calls):
    class FakeFLCE:
        """Liger's call signature: (lin_weight, _input, target); a plain CE inside."""

        def __init__(self, ignore_index=-100, reduction="mean"):
            assert (ignore_index, reduction) == (-100, "mean")

        def __call__(self, lin_weight, _input, target, bias=None):
            calls.append((tuple(lin_weight.shape), tuple(_input.shape), tuple(target.shape)))
            return F.cross_entropy((_input @ lin_weight.T).float(), target, ignore_index=-100)

    pkg = types.ModuleType("liger_kernel")
    sub = types.ModuleType("liger_kernel.transformers")
    sub.LigerFusedLinearCrossEntropyLoss = FakeFLCE
    pkg.transformers = sub
    monkeypatch.setitem(sys.modules, "liger_kernel", pkg)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", sub)


def test_fused_calls_liger_with_the_aligned_positions(monkeypatch):
    calls = []
    _fake_liger(monkeypatch, calls)
    h, w, labels = _inputs(torch.float32)
    loss = StepLoss("fused")(h, labels, w)
    B, T, d = h.shape
    assert calls == [((w.shape[0], d), (B * (T - 1), d), (B * (T - 1),))]
    assert float(loss.detach()) == pytest.approx(float(sft_loss(h @ w.T, labels).detach()),
                                                 rel=1e-6)
    with pytest.raises(losses.LossUnavailable, match="CUDA only"):
        losses.check_available("fused", "cpu")  # Liger installed, but this is a CPU
    losses.check_available("fused", "cuda")


def _cli(tmp_path, *extra):
    from sft_conformance.cli import main

    return main(["bench", "--preset", "smoke", "--n-examples", "8", "--repeats", "1",
                 "--strategies", "dynamic,packed", "--out", str(tmp_path), "--no-progress",
                 "--no-plot", *extra])


def test_cli_loss_fused_exit_2_without_liger(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", None)
    assert _cli(tmp_path, "--loss", "fused") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "liger-kernel" in err[0] and losses.FUSED_EXTRA in err[0]


def test_cli_loss_fused_exit_2_on_a_cpu_even_with_liger(tmp_path, capsys, monkeypatch):
    _fake_liger(monkeypatch, [])
    assert _cli(tmp_path, "--loss", "fused") == 2
    assert "CUDA only" in capsys.readouterr().err


def test_head_with_a_bias_is_refused():
    model = types.SimpleNamespace(get_output_embeddings=lambda: torch.nn.Linear(4, 9),
                                  config=types.SimpleNamespace())
    with pytest.raises(ValueError, match="bias"):
        losses.check_head(model)
