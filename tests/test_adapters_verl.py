"""The verl adapters (issue 13). verl runs in its own virtualenv (``tox -e verl``); in the default
test run it is not installed and everything below but the declarations skips.

Hand-confirmed behaviours of verl 0.9.1 are pinned here with the smallest conversation; the
verdicts of every check are pinned in :data:`PINNED` (see tests/library_pins.py)."""

from __future__ import annotations

import importlib.util

import pytest
from library_pins import compare, require_version

from sft_conformance.target import declared, load_target

NAMES = ("verl-multiturn-sft", "verl-multiturn-sft-right")
VERSION = "0.9.1"
P, S = "passed", "skipped"
HAVE_VERL = importlib.util.find_spec("verl") is not None
# the bundled BPE merges 'assistant\n' with the first word; verl masks len(generation prompt) ids
S2_MERGE = ("failed", "check", "S2: an assistant token is not trained (or is trained with the "
                               "wrong label)")

PINNED = {
    "verl-multiturn-sft": {"S1": P, "S2": S2_MERGE, "S3": P, "S4": P, "S5": P, "S6": S, "S7": S,
                           "S8": P, "S9": P, "S10": P, "S11": P, "S12": P},
    "verl-multiturn-sft-right": {"S1": P, "S2": S2_MERGE, "S3": P, "S4": P, "S5": P, "S6": S,
                                 "S7": S, "S8": S, "S9": P, "S10": P, "S11": P, "S12": P},
}


@pytest.mark.parametrize("name", NAMES)
def test_declarations_without_verl(name):
    d = declared(load_target(name))
    assert "verl" in d.requires and "tox -e verl" in d.install_hint
    assert d.trains_after_eot and d.overlong == "raise" and d.tokenization == "whole"
    if not HAVE_VERL:
        assert "verl" in d.missing


@pytest.fixture(scope="module")
def chatml():
    pytest.importorskip("verl", reason="verl is not installed: tox -e verl")
    from sft_conformance.assets import load_tokenizer

    return load_tokenizer("chatml")


def _trained(batch, tok, row=0):
    ids, labels = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
    return [tok.decode([i]) for i, lab in zip(ids, labels) if lab != -100]


@pytest.mark.parametrize("name", NAMES)
def test_trains_content_end_token_and_the_newline_after_it(chatml, name):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "4"},
            {"role": "user", "content": "3"}, {"role": "assistant", "content": "6"}]
    batch = load_target(name).collate([conv], chatml, 64)
    assert _trained(batch, chatml) == ["4", "<|im_end|>", "\n", "6", "<|im_end|>", "\n"]


def test_generation_prompt_masked_by_its_token_length(chatml):
    """verl masks the first len(tokenize('<|im_start|>assistant\\n')) = 2 ids of an assistant
    message; the bundled BPE merges 'assistant\\n' with 'the ' into one token, so the second
    masked id is the first content token (a real tokenizer such as Qwen2.5's does not merge)."""
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer"}]
    batch = load_target("verl-multiturn-sft").collate([conv], chatml, 512)
    assert _trained(batch, chatml) == ["answer", "<|im_end|>", "\n"]


def test_overlong_raises(chatml):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer"}]
    with pytest.raises(ValueError, match="is larger than"):
        load_target("verl-multiturn-sft").collate([conv], chatml, 8)


@pytest.mark.parametrize("target", list(PINNED))
def test_pinned_verdicts(target):
    require_version("verl", "verl", VERSION)
    compare(target, PINNED[target])


# -- tool conversations (issue 23): the agentic rows on Qwen2.5 ----------------------------------
# Hand-confirmed in reports/verl/findings-agentic.md (re-run 2026-12-03, one argument type per
# drawn batch). verl renders every message alone; two consecutive tool messages become two user
# turns (slime#2263's pattern), which its sanity_check refuses by default and trains under
# ignore_input_ids_mismatch (S1, S4: PARALLEL); pyarrow pads dict arguments and tool schemas with
# the other keys as null (the text differs: "missing from the batch", S13-S15, on batches of two
# dict-argument conversations); a row without tools beside rows with tools gets tools=pd.NA and
# is refused (S3).
F = "failed"
REFUSED = "the target refused a batch that has tokens to train"
AGENTIC_PINNED = {
    "verl-multiturn-sft-tools": {c: (F, "check", f"{c}: {REFUSED}")
                                 for c in ("S1", "S3", "S4", "S13", "S14", "S15")},
    "verl-multiturn-sft-tools-ignore-mismatch": {
        "S1": (F, "check", "S1: example 0 (batch row 0): input ids differ from the chat "
                           "template's tokenization"),
        "S3": (F, "check", f"S3: {REFUSED}"),
        # since the draws are seeded by each check's own test function (d071f87): S4 draws a
        # batch with a row without tools (pd.NA, refused as S3), S13 and S15 no batch of two
        # dict-argument conversations, S14 a PARALLEL-like split of a tool-call turn
        "S4": (F, "check", f"S4: {REFUSED}"),
        "S13": "passed",
        "S14": (F, "check", "S14: a token of a tool-call turn is not trained"),
        "S15": "passed",
    },
}


@pytest.fixture(scope="module")
def qwen25():
    pytest.importorskip("verl", reason="verl is not installed: tox -e verl")
    from sft_conformance.assets import load_tokenizer

    return load_tokenizer("qwen2.5")


def test_tools_reach_the_first_message_and_tool_results_are_masked(qwen25):
    from sft_conformance.checks.agentic import WEATHER

    batch = load_target("verl-multiturn-sft-tools").collate([WEATHER], qwen25, 1024)
    text = qwen25.decode(batch["input_ids"][0].tolist())
    assert "# Tools" in text and '"name": "get_weather"' in text.split("<tool_call>")[0]
    trained = "".join(_trained(batch, qwen25))
    assert "18C sunny" not in trained
    assert trained.startswith("<tool_call>\n{\"name\": \"get_weather\"")
    assert trained.endswith("</tool_call><|im_end|>\nIt is 18C and sunny in Paris.<|im_end|>\n")


def test_consecutive_tool_messages_are_refused_or_split(qwen25):
    from sft_conformance.checks.agentic import PARALLEL

    with pytest.raises(AssertionError, match="apply_chat_template to each turn separately"):
        load_target("verl-multiturn-sft-tools").collate([PARALLEL], qwen25, 1024)
    batch = load_target("verl-multiturn-sft-tools-ignore-mismatch").collate(
        [PARALLEL], qwen25, 1024)
    text = qwen25.decode(batch["input_ids"][0].tolist())
    assert "18C\n</tool_response><|im_end|>\n<|im_start|>user\n<tool_response>\n21C" in text


@pytest.mark.parametrize("target", list(AGENTIC_PINNED))
def test_agentic_pinned_verdicts_qwen25(target):
    require_version("verl", "verl", VERSION)
    compare(target, AGENTIC_PINNED[target], tokenizer="qwen2.5")
