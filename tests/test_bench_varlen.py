"""PyTorch's own varlen attention for the flattened layouts (issue 25), checked on a CPU.

``torch.nn.attention.varlen.varlen_attn`` runs ``aten::_flash_attention_forward``, which has no
CPU kernel, so here:

* the selection: which attention ``auto`` picks on CUDA with and without flash-attn and torch's
  varlen kernel, and the one-line refusal of ``--attention torch_varlen`` where it cannot run;
* the dispatch and the isolation: the model under the benchmark's registered varlen attention,
  with an sdpa-per-sequence stand-in for the kernel, gets the ``cu_seqlens`` of
  :func:`bench.strategies.varlen_kwargs`, keeps documents apart (the runner's own isolation
  check, leak control included) and matches the block-causal reference; padded rows go to sdpa.

What this does not prove: the CUDA kernel's numerics and speed (a GPU session's job).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sft_conformance.bench import varlen
from sft_conformance.bench.attention import choose_attention
from sft_conformance.bench.models import forward_fn
from sft_conformance.bench.strategies import make_batches, varlen_kwargs
from sft_conformance.reference.loss import per_token_nll

ATOL = 1e-5


def test_auto_selection_on_cuda_and_cpu():
    pick = {(f, v): choose_attention("cuda", "auto", flash=f, torch_varlen=v)
            for f in (True, False) for v in (True, False)}
    assert pick[True, True]["flattened"] == pick[True, False]["flattened"] == "flash_attention_2"
    assert pick[True, True]["padded"] == "flash_attention_2"
    assert pick[False, True]["flattened"] == "torch_varlen"
    assert pick[False, True]["padded"] == "sdpa"
    assert "varlen_attn" in pick[False, True]["why"]
    assert pick[False, False]["flattened"] == "flex_attention"
    assert all(p["skips_cross_document"] for p in pick.values())
    cpu = choose_attention("cpu", "auto", flash=True, torch_varlen=True)
    assert cpu["flattened"] == "sdpa+block_causal_4d" and not cpu["skips_cross_document"]
    # detected: this CPU can run neither kernel
    assert choose_attention("cpu")["flattened"] == "sdpa+block_causal_4d"


def test_explicit_choice_and_refusals():
    assert choose_attention("cuda", "flex_attention", flash=True)["flattened"] == \
        "flex_attention"
    assert choose_attention("cuda", "torch_varlen", torch_varlen=True)["flattened"] == \
        "torch_varlen"
    with pytest.raises(ValueError, match="torch_varlen needs CUDA"):
        choose_attention("cpu", "torch_varlen")
    with pytest.raises(ValueError, match="flash_attn"):
        choose_attention("cuda", "flash_attention_2", flash=False)
    with pytest.raises(ValueError, match="unknown attention"):
        choose_attention("cuda", "xformers")


def test_the_installed_torch_has_the_kernel_but_not_for_cpu():
    fn = varlen.kernel()
    assert fn is not None  # torch 2.13 ships torch.nn.attention.varlen.varlen_attn
    assert not varlen.available("cpu")
    q = torch.randn(6, 2, 8)
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    with pytest.raises(NotImplementedError):
        fn(q, q, q, cu, cu, 4, 4, window_size=(-1, 0))  # why the CPU runs a stand-in


def test_cli_refuses_torch_varlen_on_cpu(tmp_path, capsys):
    from sft_conformance.cli import main

    assert main(["bench", "--preset", "smoke", "--attention", "torch_varlen", "--out",
                 str(tmp_path), "--no-progress", "--no-plot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch_varlen needs CUDA" in err[0]


@pytest.fixture()
def standin(monkeypatch):
    """varlen_attn's contract on (total, heads, dim) tensors, computed by sdpa per sequence."""
    calls = []

    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
               enable_gqa=False):
        calls.append({"cu": cu_q.clone(), "max": max_q, "window": window_size, "gqa": enable_gqa})
        assert torch.equal(cu_q, cu_k) and cu_q.dtype == torch.int32
        assert int(cu_q[-1]) == q.shape[0] and window_size == (-1, 0)  # causal
        cu = cu_q.tolist()
        assert max(b - a for a, b in zip(cu, cu[1:])) <= max_q
        rep = q.shape[1] // k.shape[1]
        out = []
        for a, b in zip(cu, cu[1:]):
            qs, ks, vs = (x[a:b].transpose(0, 1) for x in (q, k, v))
            ks, vs = ks.repeat_interleave(rep, 0), vs.repeat_interleave(rep, 0)
            out.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True,
                                                      scale=scale).transpose(0, 1))
        return torch.cat(out)

    monkeypatch.setattr(varlen, "_kernel", kernel)
    return calls


@pytest.fixture()
def model(chatml):
    from sft_conformance.assets import tiny_model

    return tiny_model(chatml)


@pytest.fixture(scope="module")
def examples(chatml):
    from sft_conformance.bench.data import PROFILES, generate_conversations, tokenize

    return tokenize(generate_conversations(PROFILES["alpaca"], 12, chatml, seed=2), chatml,
                    256).examples


@pytest.mark.parametrize("strategy", ["packed", "padding_free"])
def test_varlen_dispatch_keeps_documents_apart(model, examples, chatml, standin, strategy):
    from sft_conformance.bench.runner import _activate, isolation_check

    batch = make_batches(strategy, examples, pad_token_id=chatml.pad_token_id, max_length=256,
                         batch_size=4)[0]
    keep = batch["labels"][:, 1:] != -100
    with torch.no_grad():
        ref = per_token_nll(forward_fn("sdpa+block_causal_4d")(model, batch), batch["labels"])
    attention = {}
    backend, fwd = _activate(model, "torch_varlen", attention)  # what the runner does
    assert backend == "torch_varlen" and "fallback" not in attention
    assert model.config._attn_implementation == varlen.ATTN_NAME
    with torch.no_grad():
        nll = per_token_nll(fwd(model, batch), batch["labels"])
    layers = model.config.num_hidden_layers
    assert len(standin) == layers  # the kernel ran in every layer, with the batch's boundaries
    kw = varlen_kwargs(batch)
    assert all(torch.equal(c["cu"], kw["cu_seq_lens_q"]) for c in standin)
    assert all(c["max"] == max(batch["meta"]["doc_lengths"]) for c in standin)
    assert all(c["gqa"] == (model.config.num_attention_heads !=
                            model.config.num_key_value_heads) for c in standin)
    assert (nll - ref)[keep].abs().max() < ATOL

    standin.clear()
    result = isolation_check(model, batch, fwd, forward_fn("sdpa"), atol=1e-3)
    assert result["passed"] and result["distinguishes_leak"], result
    assert result["documents_in_row"] >= 2 and standin  # the packed row ran the kernel


def test_older_kernel_signature_is_called_with_is_causal_and_repeated_heads(monkeypatch):
    """A varlen_attn without window_size/enable_gqa (an older torch) gets is_causal=True and
    key/value heads repeated to the query's."""
    seen = {}

    def old_kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, is_causal=False, scale=None):
        seen.update(is_causal=is_causal, heads=(q.shape[1], k.shape[1], v.shape[1]))
        return q

    monkeypatch.setattr(varlen, "_kernel", old_kernel)
    q, kv = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
    cu = torch.tensor([0, 6], dtype=torch.int32)
    out, _ = varlen.attention(None, q, kv, kv, None, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                              max_length_q=6, max_length_k=6)
    assert seen == {"is_causal": True, "heads": (4, 4, 4)} and out.shape == (1, 6, 4, 8)


def test_varlen_hidden_feed_for_the_chunked_loss(model, examples, chatml, standin):
    from sft_conformance.bench.runner import _activate

    batch = make_batches("packed", examples, pad_token_id=chatml.pad_token_id, max_length=256,
                         batch_size=4)[0]
    _activate(model, "torch_varlen", {})
    with torch.no_grad():
        hidden = forward_fn("torch_varlen", hidden=True)(model, batch)
        logits = forward_fn("torch_varlen")(model, batch)
    assert hidden.shape[-1] == model.config.hidden_size
    torch.testing.assert_close(model.get_output_embeddings()(hidden), logits)


def test_padded_rows_under_varlen_go_to_sdpa(model, examples, chatml, standin):
    batch = make_batches("dynamic", examples, pad_token_id=chatml.pad_token_id, max_length=256,
                         batch_size=4)[0]
    with torch.no_grad():
        ref = forward_fn("sdpa")(model, batch)
        model.set_attn_implementation(varlen.register())
        ours = forward_fn("torch_varlen")(model, batch)
    assert not standin  # no cu_seqlens: the kernel was not asked
    real = batch["attention_mask"].bool()
    assert (ours - ref)[real].abs().max() < ATOL
