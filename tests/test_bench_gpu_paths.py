"""The benchmark's CUDA paths, exercised on a CPU (no GPU has ever run them).

* FlexAttention document masks: eager ``flex_attention`` on CPU (forward only: PyTorch has no
  FlexAttention backward on CPU) gives the per-token losses of the sdpa block-causal path and of
  each document run alone; the compile switch reaches the kernel and ``create_block_mask``.
* flash-attention varlen: the ``cu_seqlens`` / ``max_seqlen`` / position ids fed to
  ``flash_attention_2`` agree with the reference packer and with what transformers would infer,
  and transformers' real dispatch (``_flash_attention_forward``) run with an sdpa stand-in for
  the kernel keeps documents apart with them, and does not without them on a batch of rows.
* CUDA-event timing: the clock code runs against fake events and a fake synchronize.

What none of this proves: kernel numerics in bf16 on a GPU, the compiled kernels, and any speed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sft_conformance.bench import flex, timing
from sft_conformance.bench.models import forward_fn
from sft_conformance.bench.strategies import flatten_rows, make_batches, varlen_kwargs
from sft_conformance.reference.loss import per_token_nll
from sft_conformance.reference.packing import best_fit_decreasing, pack_examples

ATOL = 1e-5  # float32 on CPU; the observed differences are ~1e-6


@pytest.fixture(scope="module")
def examples(chatml):
    from sft_conformance.bench.data import PROFILES, generate_conversations, tokenize

    convs = generate_conversations(PROFILES["alpaca"], 12, chatml, seed=2)
    return tokenize(convs, chatml, 256).examples


@pytest.fixture()
def model(chatml):
    """A tiny Llama of this test's own (its attention implementation gets switched)."""
    from sft_conformance.assets import tiny_model

    return tiny_model(chatml)


def _batches(examples, chatml):
    """A packed batch of several rows (with padding) and a padding-free row."""
    packed = make_batches("packed", examples, pad_token_id=chatml.pad_token_id, max_length=256,
                          batch_size=4)[0]
    free = make_batches("padding_free", examples, pad_token_id=chatml.pad_token_id,
                        max_length=256, batch_size=4)[0]
    assert packed["input_ids"].shape[0] > 1 and (packed["attention_mask"] == 0).any()
    return {"packed": packed, "padding_free": free}


@torch.no_grad()
def _alone(model, batch) -> torch.Tensor:
    """Per-token NLL (aligned like ``per_token_nll``) with each document run on its own."""
    out = torch.zeros(batch["input_ids"].shape[0], batch["input_ids"].shape[1] - 1)
    for r, docs in enumerate(batch["document_ids"]):
        for d in docs.unique():
            if d < 0:
                continue
            where = (docs == d).nonzero().flatten()
            s, e = int(where[0]), int(where[-1]) + 1
            ids = batch["input_ids"][r:r + 1, s:e]
            logits = model(input_ids=ids, use_cache=False).logits
            out[r, s:e - 1] = per_token_nll(logits, batch["labels"][r:r + 1, s:e])[0]
    return out


# --- FlexAttention ---------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["packed", "padding_free"])
def test_flex_document_mask_eager_on_cpu_matches_sdpa_and_documents_alone(
        model, examples, chatml, strategy, monkeypatch):
    from sft_conformance.bench.runner import _activate

    batch = _batches(examples, chatml)[strategy]
    keep = batch["labels"][:, 1:] != -100
    with torch.no_grad():
        block_causal = per_token_nll(forward_fn("sdpa+block_causal_4d")(model, batch),
                                     batch["labels"])
    alone = _alone(model, batch)
    assert (block_causal - alone)[keep].abs().max() < ATOL  # the sdpa reference itself

    used = []
    kernel = flex.flex_kernel
    monkeypatch.setattr(flex, "flex_kernel", lambda compile: used.append(compile) or
                        kernel(compile))
    attention = {}
    backend, fwd = _activate(model, "flex_attention", attention)  # what the runner does
    assert backend == "flex_attention" and "fallback" not in attention
    assert model.config._attn_implementation == flex.ATTN_NAME
    with torch.no_grad():
        nll = per_token_nll(fwd(model, batch), batch["labels"])
    assert used and set(used) == {False}  # FlexAttention ran, eagerly (CPU default)
    assert (nll - block_causal)[keep].abs().max() < ATOL
    assert (nll - alone)[keep].abs().max() < ATOL

    # the mask is what keeps documents apart: one "document" per row leaks, visibly
    leaky = {k: v for k, v in batch.items() if k != "document_ids"}
    leaky["document_ids"] = torch.where(batch["attention_mask"].bool(), 0, -1)
    with torch.no_grad():
        leak = per_token_nll(fwd(model, leaky), batch["labels"])
    assert (leak - alone)[keep].abs().max() > 1e-2


def test_flex_isolation_check_of_the_runner(model, examples, chatml):
    """The runner's own isolation check (packed row vs documents alone, leak control) on flex."""
    from sft_conformance.bench.runner import _activate, isolation_check

    batch = _batches(examples, chatml)["packed"]
    _, fwd = _activate(model, "flex_attention", {})
    result = isolation_check(model, batch, fwd, forward_fn("sdpa"), atol=1e-3)
    assert result["passed"] and result["distinguishes_leak"], result
    assert result["documents_in_row"] >= 2


def test_flex_compile_switch_reaches_mask_and_kernel(model, examples, chatml, monkeypatch):
    """compile=True (the CUDA default) asks for the compiled kernel and a compiled mask build;
    both are swapped for their eager versions here, so only the plumbing is checked."""
    assert flex.default_compile("cuda") and flex.default_compile(torch.device("cuda", 0))
    assert not flex.default_compile("cpu")
    asked = {"kernel": [], "mask": []}
    kernel, create = flex.flex_kernel, flex.create_block_mask

    def fake_kernel(compile):
        asked["kernel"].append(compile)
        return kernel(False)

    def fake_create(*args, _compile=False, **kwargs):
        asked["mask"].append((_compile, str(kwargs["device"])))
        return create(*args, _compile=False, **kwargs)

    monkeypatch.setattr(flex, "flex_kernel", fake_kernel)
    monkeypatch.setattr(flex, "create_block_mask", fake_create)
    model.set_attn_implementation(flex.register())
    batch = _batches(examples, chatml)["packed"]
    with torch.no_grad():
        forward_fn("flex_attention", compile=True)(model, batch)
        forward_fn("flex_attention")(model, batch)
    layers = model.config.num_hidden_layers
    assert asked["kernel"] == [True] * layers + [False] * layers
    assert asked["mask"] == [(True, "cpu"), (False, "cpu")]


def test_flex_without_block_mask_goes_to_sdpa(model, examples, chatml):
    """A padded row under the flex implementation (2D mask) runs sdpa, not unmasked flex."""
    batch = make_batches("dynamic", examples, pad_token_id=chatml.pad_token_id, max_length=256,
                         batch_size=4)[0]
    with torch.no_grad():
        ref = forward_fn("sdpa")(model, batch)
        model.set_attn_implementation(flex.register())
        ours = forward_fn("sdpa")(model, batch)
        flexed = forward_fn("flex_attention")(model, batch)  # one document per row, BlockMask
    real = batch["attention_mask"].bool()
    assert (ours - ref)[real].abs().max() < ATOL
    assert (flexed - ref)[real].abs().max() < ATOL


# --- flash-attention varlen arguments --------------------------------------------------------

def test_varlen_arguments_match_reference_packer(examples, chatml):
    ref = pack_examples(examples, 256, chatml.pad_token_id)
    assert ref["rows"] == [sorted(b) for b in best_fit_decreasing([len(e) for e in examples],
                                                                  256)]
    batch = flatten_rows([[examples[i] for i in r] for r in ref["rows"]], chatml.pad_token_id)
    lengths = [len(examples[i]) for r in ref["rows"] for i in r]
    real = sum(lengths)
    R, W = batch["input_ids"].shape
    assert R > 1 and real < R * W  # several rows, some padding

    # the batch's cu_seqlens: real tokens only, the reference packer's layout
    cu = batch["cu_seqlens"]
    assert cu.dtype == torch.int32 and torch.equal(cu, ref["cu_seqlens"])
    assert int(cu[0]) == 0 and int(cu[-1]) == real and cu.diff().tolist() == lengths
    assert batch["max_seqlen"] == ref["max_seqlen"] == max(lengths)

    # what the kernel gets: the flattened R x W slots, padding as one-token sequences
    kw = varlen_kwargs(batch)
    kcu = kw["cu_seq_lens_q"]
    assert kcu is kw["cu_seq_lens_k"] and kcu.dtype == torch.int32
    assert int(kcu[0]) == 0 and int(kcu[-1]) == R * W
    assert kw["max_length_q"] == kw["max_length_k"] == max(lengths)
    assert isinstance(kw["max_length_q"], int)
    flat_docs = batch["document_ids"].reshape(-1)
    starts = kcu[:-1].long()
    seg_docs = flat_docs[starts]
    doc_lengths = kcu.diff()[seg_docs >= 0].tolist()
    assert doc_lengths == lengths  # same documents, same order, same boundaries
    assert (kcu.diff()[seg_docs < 0] == 1).all()  # each padding slot on its own
    # every sequence starts at position 0, every document start is a reference boundary
    assert (batch["position_ids"].reshape(-1)[starts] == 0).all()
    for r in range(R):
        row = kcu[(kcu >= r * W) & (kcu < (r + 1) * W)] - r * W
        doc_starts = [int(s) for s in row if int(batch["document_ids"][r, int(s)]) >= 0]
        row_lengths = [len(examples[i]) for i in ref["rows"][r]]
        assert doc_starts == [sum(row_lengths[:k]) for k in range(len(row_lengths))]
        assert torch.equal(ref["position_ids"][r], batch["position_ids"][r])


def test_varlen_arguments_equal_transformers_inference(examples, chatml):
    """transformers infers the same arguments from the position ids of one flattened row, and
    only for one row: a batch of several packed rows needs them passed explicitly."""
    fau = pytest.importorskip("transformers.modeling_flash_attention_utils")
    for strategy, batch in _batches(examples, chatml).items():
        kw = varlen_kwargs(batch)
        flat = batch["position_ids"].reshape(1, -1)
        (cu_q, cu_k), (max_q, _) = fau.prepare_fa_kwargs_from_position_ids(flat)
        assert torch.equal(kw["cu_seq_lens_q"], cu_q), strategy
        assert kw["max_length_q"] == int(max_q), strategy
        if strategy == "padding_free":  # one row, no padding: the batch's own cu_seqlens
            assert torch.equal(kw["cu_seq_lens_q"], batch["cu_seqlens"])
            assert kw["max_length_q"] == batch["max_seqlen"]
    rows = _batches(examples, chatml)["packed"]["position_ids"]
    assert fau._is_packed_sequence(rows[:1], batch_size=1)
    assert not fau._is_packed_sequence(rows, batch_size=rows.shape[0])


def _sdpa_segment(q, k, v, causal, scale):
    """(T, H, D) attention of one sequence; the stand-in for a flash-attention kernel."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                         is_causal=causal, scale=scale)
    return out.transpose(0, 1)


STANDIN = "flash_attention_sdpa_standin"  # "flash" in the name: transformers treats it as one


@pytest.fixture()
def fake_flash(monkeypatch):
    """transformers' flash-attention dispatch with sdpa stand-ins for the flash_attn kernels."""
    import transformers.modeling_flash_attention_utils as fau
    from transformers import AttentionInterface, modeling_utils
    from transformers.integrations.flash_attention import flash_attention_forward

    calls = []

    def flash_fn(q, k, v, causal=True, softmax_scale=None, **kw):  # (B, T, H, D), no varlen
        calls.append({"kind": "dense"})
        return torch.stack([_sdpa_segment(q[b], k[b], v[b], causal, softmax_scale)
                            for b in range(q.shape[0])])

    def varlen_fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                  causal=True, softmax_scale=None, **kw):
        calls.append({"kind": "varlen", "cu": cu_seqlens_q, "max": max_seqlen_q})
        assert torch.equal(cu_seqlens_q, cu_seqlens_k) and cu_seqlens_q.dtype == torch.int32
        assert int(cu_seqlens_q[-1]) == q.shape[0]
        cu = cu_seqlens_q.tolist()
        assert max(b - a for a, b in zip(cu, cu[1:])) <= int(max_seqlen_q)
        return torch.cat([_sdpa_segment(q[a:b], k[a:b], v[a:b], causal, softmax_scale)
                          for a, b in zip(cu, cu[1:])])

    def process(**kw):
        return {"causal": kw["is_causal"], "softmax_scale": kw.get("softmax_scale"),
                "max_seqlen_q": kw.get("max_seqlen_q"), "max_seqlen_k": kw.get("max_seqlen_k")}

    def lazy_import(*args, **kwargs):
        return (flash_fn, varlen_fn, None, None, None), (process, None)

    for module in (fau, modeling_utils):  # the dispatch and set_attn_implementation's preload
        monkeypatch.setattr(module, "lazy_import_flash_attention", lazy_import)
    monkeypatch.setitem(AttentionInterface._global_mapping, STANDIN, flash_attention_forward)
    return calls


def test_flash_varlen_feed_keeps_documents_apart(model, examples, chatml, fake_flash):
    batch = _batches(examples, chatml)["packed"]
    keep = batch["labels"][:, 1:] != -100
    alone = _alone(model, batch)
    model.set_attn_implementation(STANDIN)
    with torch.no_grad():
        nll = per_token_nll(forward_fn("flash_attention_2")(model, batch), batch["labels"])
        assert {c["kind"] for c in fake_flash} == {"varlen"}
        kw = varlen_kwargs(batch)
        assert all(torch.equal(c["cu"], kw["cu_seq_lens_q"]) for c in fake_flash)
        assert all(c["max"] == max(batch["meta"]["doc_lengths"]) for c in fake_flash)
        assert (nll - alone)[keep].abs().max() < ATOL
        # the feed before the fix: position ids only, several rows -> the dense causal kernel
        fake_flash.clear()
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       use_cache=False).logits
        assert {c["kind"] for c in fake_flash} == {"dense"}
        assert (per_token_nll(logits, batch["labels"]) - alone)[keep].abs().max() > 1e-2


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
