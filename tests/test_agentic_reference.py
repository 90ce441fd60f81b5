"""Agentic conversations in the reference (issue 23): the conversation shape, where each turn
of a tool conversation sits, and what is trained: every rendered byte of a tool call and its
turn's end token, never a tool result, reasoning where the template renders it."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from samples import need_tokenizer  # noqa: E402

from sft_conformance.checks.agentic import PARALLEL, REASONING, WEATHER, renders_tools
from sft_conformance.reference import ConversationError, build_example, validate_conversation
from sft_conformance.reference.conversation import is_agentic, split
from sft_conformance.strategies import agentic_conversations

#: the tool-rendering templates: bundled first, then the real families (tokenizers extra)
TEMPLATES = ["chatml-tools", "llama3.1", "qwen2.5", "qwen3", "deepseek", "mistral"]


def _tok(name):
    tok = need_tokenizer(name)
    if renders_tools(tok):
        pytest.skip(f"{name}: {renders_tools(tok)}")
    return tok


def _trained_text(tok, ex):
    return [tok.decode(ex.input_ids[s.start:s.stop]) for s in ex.turns]


def _for(name, conv):
    """The fixture as the template accepts it (Mistral: 9-character call ids)."""
    conv = copy.deepcopy(conv)
    if name == "mistral":
        for k, m in enumerate(conv["messages"]):
            for n, call in enumerate(m.get("tool_calls") or []):
                call["id"] = f"call{k}{n}abcd"[:9]
            if m["role"] == "tool":
                m["tool_call_id"] = "call10abc"[:9]
    return conv


# -- the shape -------------------------------------------------------------------------------


def test_plain_lists_and_tool_conversations_are_both_valid():
    validate_conversation([{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "yes"}])
    validate_conversation(WEATHER)
    assert is_agentic(WEATHER) and not is_agentic([{"role": "user", "content": "x"}])
    messages, tools = split(WEATHER)
    assert tools and messages[1]["content"] is None


@pytest.mark.parametrize("bad, field", [
    ({"messages": [{"role": "user", "content": None},
                   {"role": "assistant", "content": "x"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": "", "tool_calls": [
                       {"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "tools": "get_weather"}, "tools"),
    ({"messages": [{"role": "tool", "content": "x", "tool_calls": []},
                   {"role": "assistant", "content": "a"}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": "a", "reasoning_content": 3}]},
     "messages[1].reasoning_content"),
])
def test_malformed_tool_messages_name_the_example_and_field(bad, field):
    with pytest.raises(ConversationError) as info:
        validate_conversation(bad, index=7)
    assert f"example 7: {field}" in str(info.value)


# -- the labels --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEMPLATES)
def test_tool_call_trained_and_tool_result_never(name):
    tok = _tok(name)
    conv = _for(name, WEATHER)
    ex = build_example(conv, tok)
    calls, answer = _trained_text(tok, ex)
    assert "get_weather" in calls and "Paris" in calls  # the call, arguments included
    assert "18C sunny" not in "".join(_trained_text(tok, ex))  # the tool result never
    end = tok.convert_ids_to_tokens(ex.input_ids[ex.turns[0].end_token])
    assert calls.endswith(tok.decode([ex.input_ids[ex.turns[0].end_token]])), (calls, end)
    assert "18C and sunny in Paris" in answer
    # the result's tokens are in the ids and untrained
    result = ex.regions[2]
    assert ex.positions(result) and not any(ex.trained[t] for t in ex.positions(result))


@pytest.mark.parametrize("name", TEMPLATES)
def test_parallel_calls_and_consecutive_results(name):
    tok = _tok(name)
    if name == "llama3.1":
        pytest.skip("Llama 3.1's template raises on parallel calls (one call at a time)")
    ex = build_example(_for(name, PARALLEL), tok)
    first = _trained_text(tok, ex)[0]
    assert first.count("get_weather") == 2 and "Lyon" in first
    for k in (2, 3):
        assert not any(ex.trained[t] for t in ex.positions(ex.regions[k]))
    assert len(ex.turns) == 3


def test_reasoning_is_trained_where_qwen3_renders_it():
    tok = _tok("qwen3")
    ex = build_example(REASONING, tok)
    trained = "".join(_trained_text(tok, ex))
    assert "I need the weather tool." in trained and "Answer now." in trained
    assert ex.reasoning and all(all(ex.trained[t] for t in ex.positions(r))
                                for r in ex.reasoning.values())


def test_a_field_the_template_does_not_render_is_reported():
    tok = _tok("chatml-tools")
    ex = build_example(REASONING, tok)
    assert (1, "reasoning_content") in ex.unrendered


@pytest.mark.parametrize("name", ["chatml-tools", "qwen2.5", "qwen3", "mistral"])
def test_drawn_tool_conversations(name):
    """Every drawn agentic conversation: tool results untrained, every assistant turn trained
    through the template's end token, the same labels whole and per turn."""
    tok = _tok(name)
    from sft_conformance.reference.masks import end_of_turn_id

    end = end_of_turn_id(tok)

    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(agentic_conversations(system=False if name == "mistral" else None))
    def prop(conv):
        if name == "mistral":
            conv = _mistral_ids(conv)
        try:
            ex = build_example(conv, tok)
        except Exception as exc:  # the template's own refusal (Mistral's alternation)
            if "raise" in type(exc).__name__.lower() or "template failed" in str(exc):
                return
            raise
        for k, region in ex.regions.items():
            if ex.roles[k] == "tool":
                assert not any(ex.trained[t] for t in ex.positions(region))
        assert len(ex.turns) == sum(1 for r in ex.roles.values() if r == "assistant")
        for span in ex.turns:
            assert span.end_token is not None and ex.input_ids[span.end_token] == end

    prop()


def _mistral_ids(conv):
    conv = copy.deepcopy(conv)
    for k, m in enumerate(conv["messages"]):
        for n, call in enumerate(m.get("tool_calls") or []):
            call["id"] = f"c{k:03d}{n:04d}"[:9]
    return conv


def test_snapshot_records_a_tool_conversation(tmp_path):
    """The issue's first try: `snapshot reference --corpus tools.jsonl --tokenizer qwen2.5`
    records the call trained and the tool result untrained (it exited 2 on role 'tool')."""
    import json

    from sft_conformance.cli import main

    tok = _tok("qwen2.5")
    record = {"name": "weather", "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18C sunny", "name": "get_weather"},
        {"role": "assistant", "content": "It is 18C and sunny in Paris."}],
        "tools": WEATHER["tools"]}
    corpus = tmp_path / "tools.jsonl"
    corpus.write_text(json.dumps(record) + "\n")
    out = tmp_path / "masks.json"
    assert main(["snapshot", "reference", "--corpus", str(corpus), "--tokenizer", "qwen2.5",
                 "--out", str(out)]) == 0
    (ex,) = json.loads(out.read_text())["examples"]
    trained = tok.decode([i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100])
    assert "get_weather" in trained and "Paris" in trained and "<|im_end|>" in trained
    assert "18C sunny" not in trained and "It is 18C and sunny in Paris." in trained
    assert "get_weather" in tok.decode(ex["input_ids"][:80])  # the schema reached the template
