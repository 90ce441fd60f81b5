"""The LitGPT adapters (issue 13). LitGPT runs in its own virtualenv (``tox -e litgpt``); in the
default test run it is not installed and everything below but the declarations skips.

Hand-confirmed behaviours of litgpt 0.5.13 are pinned here with the smallest conversation; the
verdicts of every check are pinned in :data:`PINNED` (see tests/library_pins.py)."""

from __future__ import annotations

import pytest
from library_pins import compare, require_version

from sft_conformance.target import declared, load_target

NAMES = ("litgpt-sft-mask-prompt", "litgpt-sft-default")
VERSION = "0.5.13"
P, S = "passed", "skipped"

# an answer that ends in the eos text loses it and gets no end token (litgpt.Tokenizer.encode,
# confirmed below): found by the pinned special-string conversations since 0.2.0
EOS_TEXT_S1 = ("failed", "check", "S1: example 0 (batch row 0): input ids differ from the chat "
                                  "template's tokenization")
EOS_TEXT_S4 = ("failed", "check", "S4: the end-of-turn token is not trained")

PINNED = {
    "litgpt-sft-mask-prompt": {
        "S1": EOS_TEXT_S1, "S2": P, "S3": P, "S4": EOS_TEXT_S4, "S5": P, "S6": S, "S7": S,
        "S8": S,
        # the prompt alone fills max_seq_length: the row keeps no trained token (confirmed below)
        "S9": ("failed", "check", "S9: a row of batch row 0 (positions 0..7) has no trained "
                                  "position after truncation to max_length=8"),
        "S10": S, "S11": P, "S12": P,
    },
    "litgpt-sft-default": {
        "S1": EOS_TEXT_S1, "S2": P,
        "S3": ("xfail", "declared", "known failure: litgpt.data.JSON defaults to "
                                    "mask_prompt=False"),
        "S4": EOS_TEXT_S4, "S5": P, "S6": S, "S7": S, "S8": S, "S9": P, "S10": S, "S11": P,
        "S12": P,
    },
}


@pytest.mark.parametrize("name", NAMES)
def test_declarations_without_importing_litgpt(name):
    import sys

    d = declared(load_target(name))
    assert d.requires == ("litgpt",) and "tox -e litgpt" in d.install_hint
    assert not d.multi_turn and not d.system_prompt and d.tokenization == "per_turn"
    if not importlib_has("litgpt"):
        assert d.missing == ["litgpt"]
    assert "litgpt" not in sys.modules or importlib_has("litgpt")


def importlib_has(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.fixture(scope="module")
def chatml():
    pytest.importorskip("litgpt", reason="litgpt is not installed: tox -e litgpt")
    from sft_conformance.assets import load_tokenizer

    return load_tokenizer("chatml")


def _rows(batch, tok):
    return [[(tok.convert_ids_to_tokens(i), lab) for i, lab in zip(ids, labels)]
            for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist())]


def test_mask_prompt_trains_content_and_end_token(chatml):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "4"}]
    row = _rows(load_target("litgpt-sft-mask-prompt").collate([conv], chatml, 64), chatml)[0]
    trained = [tok for tok, lab in row if lab != -100]
    assert trained == ["4", "<|im_end|>"]  # no newline after <|im_end|>: LitGPT writes none


def test_content_ending_in_the_eos_string_loses_its_end_token(chatml):
    """litgpt.Tokenizer.encode(output, eos=True) appends eos only if the ids do not already end
    with it, and its 'processor misbehaves' branch strips a trailing eos: content ending in the
    text '<|im_end|>' comes out without it and without the end token."""
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "4<|im_end|>"}]
    row = _rows(load_target("litgpt-sft-mask-prompt").collate([conv], chatml, 64), chatml)[0]
    assert [tok for tok, lab in row if lab != -100] == ["4"]
    assert row[-1][0] == "4"


def test_prompt_filling_max_seq_length_leaves_nothing_to_train(chatml):
    conv = [{"role": "user", "content": "🙂"}, {"role": "assistant", "content": "the"}]
    row = _rows(load_target("litgpt-sft-mask-prompt").collate([conv], chatml, 8), chatml)[0]
    assert len(row) == 8 and all(lab == -100 for _tok, lab in row)


@pytest.mark.parametrize("target", list(PINNED))
def test_pinned_verdicts(target):
    require_version("litgpt", "litgpt", VERSION)
    compare(target, PINNED[target])
