"""The tinker-cookbook adapters (agentic rows). tinker-cookbook runs in its own virtualenv
(``tox -e tinker-cookbook``); in the default test run it is not installed and everything below but
the declarations skips.

Hand-confirmed behaviours of tinker-cookbook 0.5.8 (reports/tinker-cookbook/findings-agentic.md)
are pinned with the smallest conversation; the agentic verdicts of each target on its renderer's
tokenizer are pinned in :data:`PINNED`."""

from __future__ import annotations

import importlib.util

import pytest
from library_pins import compare, require_version

from sft_conformance.target import declared, load_target

NAMES = ("tinker-cookbook-qwen3", "tinker-cookbook-qwen3-last",
         "tinker-cookbook-qwen3-disable-thinking", "tinker-cookbook-qwen3-preserve-thinking",
         "tinker-cookbook-deepseekv3")
VERSION = "0.5.8"
P, S = "passed", "skipped"
HAVE = importlib.util.find_spec("tinker_cookbook") is not None

S1_SPECIAL = ("failed", "check", "S1: example 0 (batch row 0): input ids differ from the chat "
                                 "template's tokenization")
S4_ABSENT = ("failed", "check", "S4: the end-of-turn token is not trained")
S15_STRIPPED = ("failed", "check", "S15: a reasoning token is not labelled as the declared "
                                   "reasoning rule says")
# 'all_turns' is judged since 167ee26: Qwen3's template drops the reasoning of an assistant
# message before the last user query (REASONING_FOLLOW_UP), which the renderer keeps and trains
S15_ALL_TURNS = ("failed", "check", "S15: example *: the reasoning of assistant message * is not "
                                    "in the rendered text, but the declared reasoning rule is "
                                    "'all_turns'")

#: on each target's own tokenizer (qwen3, deepseek)
PINNED = {
    "tinker-cookbook-qwen3": {"S1": S1_SPECIAL, "S3": P, "S4": S4_ABSENT, "S13": P, "S14": P,
                              "S15": S15_STRIPPED},
    "tinker-cookbook-qwen3-last": {"S1": S1_SPECIAL, "S3": P, "S4": S4_ABSENT, "S13": P,
                                   "S14": P, "S15": P},
    "tinker-cookbook-qwen3-disable-thinking": {"S1": S1_SPECIAL, "S3": P, "S4": S4_ABSENT,
                                               "S13": P, "S14": P, "S15": S},
    "tinker-cookbook-qwen3-preserve-thinking": {"S1": S1_SPECIAL, "S3": P, "S4": S4_ABSENT,
                                                "S13": P, "S14": P, "S15": S15_ALL_TURNS},
    "tinker-cookbook-deepseekv3": {"S1": S1_SPECIAL, "S3": P, "S4": S4_ABSENT, "S13": P,
                                   "S14": P, "S15": P},
}
TOKENIZER = {"tinker-cookbook-deepseekv3": "deepseek"}


@pytest.mark.parametrize("name", NAMES)
def test_declarations_without_tinker_cookbook(name):
    d = declared(load_target(name))
    assert d.requires == ("tinker_cookbook",) and "tox -e tinker-cookbook" in d.install_hint
    assert d.tools and d.labels_shifted and d.overlong == "truncate"
    if not HAVE:
        assert d.missing == ["tinker_cookbook"]


@pytest.fixture(scope="module")
def qwen3():
    pytest.importorskip("tinker_cookbook", reason="tinker-cookbook is not installed: "
                                                  "tox -e tinker-cookbook")
    from sft_conformance.assets import load_tokenizer

    return load_tokenizer("qwen3")


def _text(name, conv, tok):
    b = load_target(name).collate([conv], tok, 4096)
    ids, labels = b["input_ids"][0].tolist(), b["labels"][0].tolist()
    # shifted labels: labels[t] is the target of position t, i.e. token t + 1
    trained = [labels[t] for t in range(len(ids)) if labels[t] != -100]
    return tok.decode(ids), tok.decode(trained)


def test_reasoning_of_the_tool_call_turn_is_stripped(qwen3):
    """Qwen3's template keeps the reasoning of the tool-call turn after the last real user
    query; the qwen3 renderer strips it (every assistant message but the last)."""
    from sft_conformance.checks.agentic import REASONING

    text, trained = _text("tinker-cookbook-qwen3", REASONING, qwen3)
    assert "I need the weather tool." not in text
    assert "Answer now." in trained
    assert trained.startswith('<tool_call>\n{"name": "get_weather"')


def test_consecutive_tool_results_are_two_user_turns(qwen3):
    from sft_conformance.checks.agentic import PARALLEL

    text, trained = _text("tinker-cookbook-qwen3", PARALLEL, qwen3)
    assert "18C\n</tool_response><|im_end|>\n<|im_start|>user\n<tool_response>\n21C" in text
    assert "<tool_response>" not in trained and trained.count("<|im_end|>") == 3


def test_deepseek_tool_call_turn_without_content_has_no_end_token():
    pytest.importorskip("tinker_cookbook", reason="tinker-cookbook is not installed")
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.checks.agentic import WEATHER

    tok = load_tokenizer("deepseek")
    text, trained = _text("tinker-cookbook-deepseekv3", WEATHER, tok)
    assert "<｜tool▁calls▁end｜><｜tool▁output▁begin｜>" in text
    assert trained.count("<｜end▁of▁sentence｜>") == 1  # the final answer's only


def test_reasoning_call_turn_without_text_gets_three_newlines(qwen3):
    from sft_conformance.checks.agentic import REASONING

    text, trained = _text("tinker-cookbook-qwen3-preserve-thinking", REASONING, qwen3)
    assert "I need the weather tool.\n</think>\n\n\n<tool_call>" in text
    assert trained.startswith("<think>\nI need the weather tool.")


def test_preserve_thinking_keeps_reasoning_the_template_drops(qwen3):
    """REASONING_FOLLOW_UP: Qwen3's template drops the reasoning of the answer before the last
    user query; Qwen3Renderer(strip_thinking_from_history=False) keeps and trains it."""
    from sft_conformance.checks.agentic import REASONING_FOLLOW_UP

    rendered = qwen3.apply_chat_template(REASONING_FOLLOW_UP["messages"],
                                         tools=REASONING_FOLLOW_UP["tools"], tokenize=False)
    assert "Recall the weather." not in rendered and "Assume the same." in rendered
    text, trained = _text("tinker-cookbook-qwen3-preserve-thinking", REASONING_FOLLOW_UP, qwen3)
    assert "<think>\nRecall the weather.\n</think>\n\nYes, 18C.<|im_end|>" in trained


def test_consecutive_assistant_messages_keep_the_last_reasoning(qwen3):
    """CONSECUTIVE_REASONING (S15's own batch, OpenRLHF#1080 shape): the renderers put the last
    message's reasoning in full; -preserve-thinking also gives the earlier message an empty
    think block that the template does not render."""
    from sft_conformance.checks.agentic import CONSECUTIVE_REASONING

    last = "<think>\nRecall the weather.\n</think>\n\nYes, 18C.<|im_end|>"
    text, trained = _text("tinker-cookbook-qwen3", CONSECUTIVE_REASONING, qwen3)
    assert trained == "Let me think.<|im_end|>" + last
    text, trained = _text("tinker-cookbook-qwen3-preserve-thinking", CONSECUTIVE_REASONING,
                          qwen3)
    assert trained == "<think>\n\n</think>\n\nLet me think.<|im_end|>" + last


def test_special_strings_in_content_are_split(qwen3):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "it is<|im_end|>"}]
    b = load_target("tinker-cookbook-qwen3").collate([conv], qwen3, 4096)
    ids = b["input_ids"][0].tolist()
    end = qwen3.convert_tokens_to_ids("<|im_end|>")
    assert ids.count(end) == 2  # the user's and the assistant's own; the text one is split


@pytest.mark.parametrize("target", list(PINNED))
def test_pinned_verdicts(target):
    require_version("tinker-cookbook", "tinker_cookbook", VERSION)
    compare(target, PINNED[target], tokenizer=TOKENIZER.get(target, "qwen3"))
