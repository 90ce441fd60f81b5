"""Bad input gets a clear error naming the example index and the field."""

from __future__ import annotations

import pytest

from sft_conformance.reference import (
    ConversationError,
    NoTrainedPositionError,
    OverlongError,
    TokenizerError,
    build_example,
    collate,
)
from sft_conformance.reference.collate import DroppedExampleWarning

OK = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.mark.parametrize("conv, field, words", [
    ([{"role": "bot", "content": "x"}, OK[1]], "messages[0].role", "unknown role 'bot'"),
    ([OK[0], {"role": "assistant", "content": 3}], "messages[1].content", "must be a string"),
    ([OK[0], {"role": "assistant", "content": None}], "messages[1].content",
     "only an assistant message with tool_calls may have no content"),
    ([], "conversation", "empty"),
    ([OK[0]], "conversation", "no assistant turn"),
    ([OK[0], {"role": "assistant"}], "messages[1]", "missing key 'content'"),
    ("hello", "conversation", "list of messages"),
    ([OK[0], "assistant: hi"], "messages[1]", "mapping"),
])
def test_bad_conversation_names_example_and_field(chatml, conv, field, words):
    with pytest.raises(ConversationError) as info:
        collate([OK, OK, conv], chatml, 64)
    err = info.value
    assert err.example == 2 and err.field == field
    assert str(err).startswith(f"example 2: {field}: ") and words in str(err)


def test_tokenizer_without_chat_template(chatml):
    import copy

    tok = copy.deepcopy(chatml)
    tok.chat_template = None
    with pytest.raises(TokenizerError, match="has no chat template"):
        build_example(OK, tok)


def test_slow_tokenizer_is_refused(chatml):
    class Slow:
        chat_template = chatml.chat_template
        is_fast = False
        name_or_path = "my-slow-tokenizer"

    with pytest.raises(TokenizerError, match="slow .*use_fast=True"):
        build_example(OK, Slow())


def test_overlong_policies(chatml):
    long = [OK[0], {"role": "assistant", "content": "the answer is " * 40}]
    with pytest.raises(OverlongError, match=r"example 1: input_ids: \d+ tokens exceed"):
        collate([OK, long], chatml, 32, overlong="raise")
    with pytest.warns(DroppedExampleWarning, match=r"dropped example\(s\) \[1\]"):
        batch = collate([OK, long], chatml, 32, overlong="drop")
    assert batch["input_ids"].shape[0] == 1
    batch = collate([long], chatml, 32, overlong="truncate_response")
    assert batch["input_ids"].shape[1] == 32
    assert batch["labels"][0, -1].item() == chatml.eos_token_id  # the model still learns to stop


def test_truncation_that_leaves_nothing_trained_is_never_kept(chatml):
    long_prompt = [{"role": "user", "content": "word " * 60}, OK[1]]
    with pytest.warns(DroppedExampleWarning), pytest.raises(NoTrainedPositionError):
        collate([long_prompt], chatml, 16, overlong="truncate_response")
