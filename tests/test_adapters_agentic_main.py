"""Agentic rows of the libraries of the main environment: TRL's ``SFTTrainer`` on a ``messages`` +
``tools`` dataset (``trl-sft-tools``, ``trl-sft-tools-assistant-only``) and transformers'
``apply_chat_template(tools=..., return_assistant_tokens_mask=True)``
(``transformers-assistant-mask-tools``).

Their agentic verdicts on qwen2.5 are pinned (reports/agentic-main/agentic-qwen2.5.md; failures
confirmed by hand in reports/agentic-main/findings-agentic.md). The TRL pins build trainers
(minutes on CPU): marked ``trainer`` (tox -e trainers)."""

from __future__ import annotations

import importlib.util

import pytest
from library_pins import compare

from sft_conformance.target import declared, load_target

P, S = "passed", "skipped"
HAVE_TRL = importlib.util.find_spec("trl") is not None
AGENTIC = ("S1", "S3", "S4", "S13", "S14", "S15")

PINNED = {
    "trl-sft-tools": {
        "S1": P, "S3": ("xfail", "declared", "known failure: assistant_only_loss=False"),
        "S4": P, "S13": ("failed", "check", "S13: a token of a tool result is trained"),
        "S14": P, "S15": P},
    "trl-sft-tools-assistant-only": {
        "S1": P, "S3": ("failed", "check", "S3: a token outside the assistant's turns is trained"),
        "S4": P, "S13": P, "S14": P,
        # 'all_turns' is judged since 167ee26; Qwen2.5's template renders no reasoning, so the
        # declaration fails (findings-agentic.md 6: the declaration, not TRL)
        "S15": ("failed", "check", "S15: example *: the reasoning of assistant message * is not "
                                   "in the rendered text, but the declared reasoning rule is "
                                   "'all_turns'")},
    "transformers-assistant-mask-tools": {c: P for c in AGENTIC},
}


@pytest.mark.parametrize("name", list(PINNED))
def test_declarations(name):
    d = declared(load_target(name))
    assert d.tools
    assert d.reasoning == ("all_turns" if name == "trl-sft-tools-assistant-only" else "template")


def _trained(batch, tok):
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    return tok.decode([t for t, lab in zip(ids, labels) if lab != -100])


def test_transformers_mask_trains_calls_not_results():
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.checks.agentic import PARALLEL

    tok = load_tokenizer("qwen2.5-generation")
    b = load_target("transformers-assistant-mask-tools").collate([PARALLEL], tok, 2048)
    trained = _trained(b, tok)
    assert trained.startswith("Let me check both.\n<tool_call>\n")
    assert "<tool_response>" not in trained and trained.count("<|im_end|>") == 3


@pytest.mark.trainer
def test_trl_default_trains_the_tool_result():
    pytest.importorskip("trl")
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.checks.agentic import WEATHER

    tok = load_tokenizer("qwen2.5")
    b = load_target("trl-sft-tools").collate([WEATHER], tok, 2048)
    assert "<tool_response>\n18C sunny\n</tool_response>" in _trained(b, tok)


@pytest.mark.trainer
def test_trl_training_template_trains_the_header_newline():
    """qwen2_5_training.jinja opens {% generation %} right after '<|im_start|>assistant'."""
    pytest.importorskip("trl")
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.checks.agentic import WEATHER

    tok = load_tokenizer("qwen2.5")
    b = load_target("trl-sft-tools-assistant-only").collate([WEATHER], tok, 2048)
    trained = _trained(b, tok)
    assert trained.startswith("\n<tool_call>\n") and "18C sunny" not in trained
    assert trained.endswith("\nIt is 18C and sunny in Paris.<|im_end|>\n")


def test_transformers_pinned_verdicts():
    compare("transformers-assistant-mask-tools", PINNED["transformers-assistant-mask-tools"],
            tokenizer="qwen2.5")


@pytest.mark.trainer
@pytest.mark.parametrize("target", ["trl-sft-tools", "trl-sft-tools-assistant-only"])
def test_trl_pinned_verdicts(target):
    pytest.importorskip("trl")
    compare(target, PINNED[target], tokenizer="qwen2.5")
