"""Micro-benchmarks (pytest-benchmark): ours against the library code we mirror, side by side.

Not collected by the default test run (``testpaths = tests``). Run::

    pytest bench/test_micro.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,ops,rounds --benchmark-json=reports/bench/micro.json

Groups: ``collate-padded`` (ours vs TRL's ``DataCollatorForLanguageModeling``),
``collate-flattened`` (ours vs transformers' ``DataCollatorWithFlattening`` and TRL's
padding-free collator), ``packer`` (our best-fit-decreasing vs TRL's ``pack_dataset(...,
strategy="bfd")`` on 100k lengths; fill rates in ``extra_info``) and ``loss`` (our loss, plain
``F.cross_entropy`` on materialised logits and a chunked loss; peak memory in ``extra_info`` on
CUDA, at a 151,936 vocabulary and 4,096 tokens). Targets (ours at least as fast, at least the same
fill rate) are measured here, not asserted: timings on a shared machine are not a pass/fail gate.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from sft_conformance.reference.collate import pad_examples
from sft_conformance.reference.loss import sft_loss
from sft_conformance.reference.packing import best_fit_decreasing

from .data import PROFILES, generate_conversations, tokenize
from .micro import chunked_loss, token_dicts, trl_length_dataset, trl_pack
from .strategies import flatten_rows

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
N_LENGTHS = int(os.environ.get("SFT_BENCH_LENGTHS", 100_000))
BATCH = 8


@pytest.fixture(scope="module")
def examples():
    from sft_conformance.assets import load_tokenizer

    tok = load_tokenizer("chatml")
    convs = generate_conversations(PROFILES["alpaca"], 256, tok, seed=0)
    return tok, tokenize(convs, tok, 2048).examples


def _batches(items):
    return [items[i:i + BATCH] for i in range(0, len(items), BATCH)]


# --- collators: padded ----------------------------------------------------------------------

@pytest.mark.benchmark(group="collate-padded")
def test_collate_padded_ours(benchmark, examples):
    tok, exs = examples
    batches = _batches(exs)
    benchmark.extra_info["examples_per_call"] = len(exs)
    out = benchmark(lambda: [pad_examples(b, tok.pad_token_id) for b in batches])
    assert out[0]["input_ids"].shape[0] == BATCH


@pytest.mark.benchmark(group="collate-padded")
def test_collate_padded_trl(benchmark, examples):
    trl_sft = pytest.importorskip("trl.trainer.sft_trainer")
    tok, exs = examples
    collator = trl_sft.DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)
    batches = _batches(token_dicts(exs))
    benchmark.extra_info["examples_per_call"] = len(exs)
    out = benchmark(lambda: [collator(b) for b in batches])
    assert out[0]["input_ids"].shape[0] == BATCH


# --- collators: flattened (padding-free) ----------------------------------------------------

@pytest.mark.benchmark(group="collate-flattened")
def test_collate_flattened_ours(benchmark, examples):
    tok, exs = examples
    batches = _batches(exs)
    benchmark.extra_info["examples_per_call"] = len(exs)
    out = benchmark(lambda: [flatten_rows([b], tok.pad_token_id) for b in batches])
    assert out[0]["input_ids"].shape[0] == 1


@pytest.mark.benchmark(group="collate-flattened")
def test_collate_flattened_transformers(benchmark, examples):
    from transformers import DataCollatorWithFlattening

    tok, exs = examples
    collator = DataCollatorWithFlattening(return_tensors="pt")
    batches = _batches(token_dicts(exs))
    benchmark.extra_info["examples_per_call"] = len(exs)
    out = benchmark(lambda: [collator(b) for b in batches])
    assert out[0]["input_ids"].shape[0] == 1


@pytest.mark.benchmark(group="collate-flattened")
def test_collate_flattened_trl(benchmark, examples):
    trl_sft = pytest.importorskip("trl.trainer.sft_trainer")
    tok, exs = examples
    collator = trl_sft.DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id,
                                                        padding_free=True,
                                                        return_position_ids=True)
    batches = _batches(token_dicts(exs))
    benchmark.extra_info["examples_per_call"] = len(exs)
    out = benchmark(lambda: [collator(b) for b in batches])
    assert out[0]["input_ids"].shape[0] == 1


# --- packers --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lengths():
    return [min(2048, n) for n in PROFILES["alpaca"].sample_lengths(N_LENGTHS, seed=0)]


def _fill(lengths, rows, capacity=2048):
    return sum(lengths) / (rows * capacity)


@pytest.mark.benchmark(group="packer")
def test_packer_ours(benchmark, lengths):
    bins = benchmark.pedantic(best_fit_decreasing, args=(lengths, 2048), rounds=3, iterations=1)
    benchmark.extra_info.update(items=len(lengths), rows=len(bins),
                                fill_rate=_fill(lengths, len(bins)))


@pytest.mark.parametrize("one_batch", [False, True], ids=["default-map", "one-map-batch"])
@pytest.mark.benchmark(group="packer")
def test_packer_trl(benchmark, lengths, one_batch):
    pytest.importorskip("trl.data_utils")
    pytest.importorskip("datasets")
    dataset = trl_length_dataset(lengths)
    packed = benchmark.pedantic(trl_pack, args=(dataset, 2048), kwargs={"one_batch": one_batch},
                                rounds=3, iterations=1)
    benchmark.extra_info.update(items=len(lengths), rows=len(packed),
                                fill_rate=_fill(lengths, len(packed)))


# --- losses ---------------------------------------------------------------------------------

VOCAB, TOKENS, HIDDEN = (151_936, 4096, 896) if CUDA else (32_768, 1024, 256)
DTYPE = torch.bfloat16 if CUDA else torch.float32


@pytest.fixture(scope="module")
def loss_inputs():
    g = torch.Generator().manual_seed(0)
    hidden = (torch.randn(1, TOKENS, HIDDEN, generator=g) * 0.5).to(DEVICE, DTYPE)
    weight = (torch.randn(VOCAB, HIDDEN, generator=g) * 0.02).to(DEVICE, DTYPE)
    labels = torch.randint(0, VOCAB, (1, TOKENS), generator=g)
    labels[:, : TOKENS // 3] = -100  # a prompt
    return hidden, weight, labels.to(DEVICE)


def _run_loss(kind, hidden, weight, labels):
    h = hidden.detach().requires_grad_(True)
    w = weight.detach().requires_grad_(True)
    if kind == "chunked":
        loss = chunked_loss(h, w, labels)
    else:
        logits = h @ w.T
        if kind == "ours":
            loss = sft_loss(logits, labels)
        else:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB).float(),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
    loss.backward()
    if CUDA:
        torch.cuda.synchronize()
    return loss.detach()


@pytest.mark.parametrize("kind", ["ours", "cross_entropy", "chunked"])
@pytest.mark.benchmark(group="loss")
def test_loss(benchmark, loss_inputs, kind):
    hidden, weight, labels = loss_inputs
    ref = _run_loss("cross_entropy", hidden, weight, labels)
    if CUDA:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    value = benchmark.pedantic(_run_loss, args=(kind, hidden, weight, labels), rounds=5,
                               iterations=1, warmup_rounds=1)
    info = {"vocab": VOCAB, "tokens": TOKENS, "hidden": HIDDEN, "dtype": str(DTYPE),
            "device": DEVICE,
            "full_logits_mb": TOKENS * VOCAB * torch.finfo(DTYPE).bits / 8 / 2**20}
    if CUDA:
        info["peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        info["device_name"] = torch.cuda.get_device_name()
    else:
        info["peak_memory"] = "not measured on CPU (no allocator statistics)"
    benchmark.extra_info.update(info)
    torch.testing.assert_close(value.float(), ref.float(), rtol=2e-2 if CUDA else 1e-4, atol=0)
