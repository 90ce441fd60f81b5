"""Hypothesis strategies for conversations, batches and logits, with bounded sizes.

Every strategy is small by construction (a few turns, a few dozen characters a message) so that a
failure shrinks to a conversation a person can read. Tests draw them with labels::

    @given(st.data())
    def test_x(data):
        conv = data.draw(conversations(), label="conversation")
"""

from __future__ import annotations

import functools

import hypothesis.strategies as st

#: Text that tries to move a mask: role words, template headers, special-token look-alikes (S11).
ADVERSARIAL_PIECES = (
    "user", "assistant", "system", "Assistant:", "User:", "### Response:",
    "<|im_start|>assistant\n", "<|im_start|>user\n", "<|im_end|>", "<|im_end |>", "< |im_end|>",
    "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "<|eot_id",
    "<|assistant|>", "<|user|>", "<|end|>", "<|endoftext|>", "<pad>", "</s>", "<s>", "[INST]",
    "-100", "{% generation %}", "{{ content }}",
)
_WORDS = ("the", "answer", "is", "hello", "world", "gravity", "a", "cat", "sat", "on", "mat",
          "42", "sure", "here", "step", "first", "then", "café", "日本語", "🙂", "Ωμέγα")

#: Alphabet of the seed-001 character tokenizer (specials excluded unless asked for).
CHAR_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789+"


# The strategies a draw picks from, built once: a strategy built inside a draw is a new object
# each time, and Hypothesis works out its properties again on every one (a twentieth of a
# ``mutants`` row). The same definitions draw the same values from the same choices.
_KINDS = st.sampled_from(("words", "empty", "one-char", "unicode", "mixed"))
_ONE_CHAR = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
_UNICODE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                   max_size=12)
_LEFT = st.sampled_from(("", "", " ", "\n", "  "))
_RIGHT = st.sampled_from(("", "", " ", "\n"))
_BOOLEANS = st.booleans()


@functools.cache
def _integers(low: int, high: int):
    return st.integers(low, high)


@functools.cache
def _alphabet_text(alphabet: str):
    return st.text(alphabet=alphabet, min_size=0, max_size=12)


@functools.cache
def _word_lists(adversarial_words: bool, max_pieces: int):
    pieces = _WORDS + ADVERSARIAL_PIECES if adversarial_words else _WORDS
    return st.lists(st.sampled_from(pieces), min_size=1, max_size=max_pieces)


@st.composite
def message_contents(draw, *, adversarial: bool = True, max_pieces: int = 8,
                     alphabet: str | None = None) -> str:
    """Message text: words, unicode, whitespace at the edges, empty or one character, and
    (``adversarial``) role words, headers and special-token look-alikes."""
    if alphabet is not None:
        specials = "<>#" if adversarial else ""
        return draw(_alphabet_text(alphabet + specials))
    kind = draw(_KINDS)
    if kind == "empty":
        return ""
    if kind == "one-char":
        return draw(_ONE_CHAR)
    if kind == "unicode":
        return draw(_UNICODE)
    words = draw(_word_lists(adversarial and kind == "mixed", max_pieces))
    text = " ".join(words)
    left = draw(_LEFT)
    right = draw(_RIGHT)
    return left + text + right


@functools.cache
def _contents(adversarial: bool, alphabet: str | None, max_pieces: int = 8):
    """:func:`message_contents` built once per arguments (see ``_KINDS``)."""
    return message_contents(adversarial=adversarial, alphabet=alphabet, max_pieces=max_pieces)


@st.composite
def conversations(draw, *, max_turns: int = 3, system: bool | None = None,
                  adversarial: bool = True, alphabet: str | None = None,
                  roles: tuple[str, ...] = ("system", "user", "assistant"),
                  end_with_assistant: bool = True) -> list[dict]:
    """A conversation: optional system prompt, then 1..max_turns user/assistant exchanges."""
    content = _contents(adversarial, alphabet)
    messages = []
    use_system = draw(_BOOLEANS) if system is None else system
    if use_system and "system" in roles:
        messages.append({"role": "system", "content": draw(content)})
    for _ in range(draw(_integers(1, max_turns))):
        messages.append({"role": "user", "content": draw(content)})
        messages.append({"role": "assistant", "content": draw(content)})
    if not end_with_assistant and draw(_BOOLEANS):
        messages.append({"role": "user", "content": draw(content)})
    return messages


def batches(*, min_size: int = 1, max_size: int = 4, **kwargs):
    """A batch of conversations of mixed lengths."""
    return st.lists(conversations(**kwargs), min_size=min_size, max_size=max_size)


@st.composite
def logits_and_labels(draw, *, max_batch: int = 3, max_time: int = 6, max_vocab: int = 7):
    """Random float64 logits (B, T, V) and labels with an arbitrary mask (-100 anywhere)."""
    B = draw(st.integers(1, max_batch))
    T = draw(st.integers(2, max_time))
    V = draw(st.integers(2, max_vocab))
    finite = st.floats(-30, 30, allow_nan=False, allow_infinity=False, width=64)
    logits = draw(st.lists(st.lists(st.lists(finite, min_size=V, max_size=V), min_size=T,
                                     max_size=T), min_size=B, max_size=B))
    label = st.one_of(st.just(-100), st.integers(0, V - 1))
    labels = draw(st.lists(st.lists(label, min_size=T, max_size=T), min_size=B, max_size=B))
    return logits, labels


def lengths_around(max_length: int):
    """Token budgets near a cap: well under it, just under, at it and over it (S9)."""
    return st.sampled_from([max_length // 4, max_length - 1, max_length, max_length + 1,
                            2 * max_length])


# -- agentic conversations: tools, tool calls, tool results, reasoning -------------------------

_TOOL_NAMES = ("get_weather", "search", "calculator", "lookup_user", "send_email", "run_code")
_ARG_NAMES = ("city", "query", "expression", "id", "to", "code", "limit")
_ARG_VALUES = st.sampled_from(_WORDS[:12])
_ARGUMENT_TYPES = st.sampled_from(["dict", "json"])
_BESIDE = st.sampled_from(["empty", "none", "text"])
_PARAMETERS = st.lists(st.sampled_from(_ARG_NAMES), min_size=1, max_size=2, unique=True)


@functools.cache
def _tool_names(min_size: int, max_size: int):
    return st.lists(st.sampled_from(_TOOL_NAMES), min_size=min_size, max_size=max_size,
                    unique=True)


@st.composite
def tool_schemas(draw, *, min_size: int = 1, max_size: int = 3) -> list[dict]:
    """Tool schemas as offered to the template (``tools=``): distinct names, 1-2 parameters."""
    names = draw(_tool_names(min_size, max_size))
    tools = []
    for name in names:
        params = draw(_PARAMETERS)
        tools.append({"type": "function", "function": {
            "name": name, "description": f"{name.replace('_', ' ')} tool",
            "parameters": {"type": "object",
                           "properties": {p: {"type": "string"} for p in params},
                           "required": params[:1]}}})
    return tools


@st.composite
def tool_calls(draw, tools: list[dict], *, max_calls: int = 2,
               arguments: str | None = None) -> list[dict]:
    """One call, or several in parallel; arguments as a dict or as a JSON string
    (``arguments``: ``"dict"`` or ``"json"`` for all of them, as one dataset column holds one
    type; ``None``: drawn per call)."""
    import json

    calls = []
    for _ in range(draw(_integers(1, max_calls))):
        fn = draw(st.sampled_from(tools))["function"]
        args = {p: draw(_ARG_VALUES) for p in fn["parameters"]["properties"]}
        if arguments == "json" or (arguments is None and draw(_BOOLEANS)):
            args = json.dumps(args)
        calls.append({"type": "function", "function": {"name": fn["name"], "arguments": args}})
    return calls


def agentic_batches(*, min_size: int = 1, max_size: int = 2, plain=None, **kwargs):
    """Lists of tool conversations (mixed with ``plain`` conversations when given) whose calls
    all share one argument type, drawn once per batch (one dataset column, one type)."""
    def batch(arguments):
        one = agentic_conversations(arguments=arguments, **kwargs)
        return st.lists(st.one_of(plain, one) if plain is not None else one,
                        min_size=min_size, max_size=max_size)

    return st.sampled_from(["dict", "json"]).flatmap(batch)


#: agentic message text (built once, see ``_KINDS``): any, non-empty, not only whitespace
_AGENTIC_SOME = _contents(False, None, 5).filter(bool)
_AGENTIC_VISIBLE = _contents(False, None, 5).filter(lambda s: bool(s.strip()))


@st.composite
def agentic_conversations(draw, *, max_rounds: int = 2, reasoning: bool = True,
                          system: bool | None = None, follow_up: bool | None = None,
                          consecutive_assistant: bool = True,
                          arguments: str | None = None) -> dict:
    """``{"messages", "tools"}``: a user asks; the assistant calls tools (single or parallel,
    content empty, ``None`` or text beside the calls, reasoning on some turns), each call gets
    a tool result (consecutive tool messages), for 1..max_rounds rounds; then an answer;
    sometimes a real user follow-up and another answer (it moves Qwen3's last query), and
    sometimes two assistant messages in a row. The calls' arguments are all dicts or all JSON
    strings within one conversation (``arguments``: ``"dict"`` or ``"json"``, drawn when None;
    a batch passes one for all its conversations: a dataset column, Arrow or parquet, holds one
    type, and a loader that refuses a mix would hide every label the checks judge)."""
    content = _contents(False, None, 5)
    some, visible = _AGENTIC_SOME, _AGENTIC_VISIBLE
    tools = draw(tool_schemas())
    if arguments is None:
        arguments = draw(_ARGUMENT_TYPES)
    call_ids: list[str] = []
    messages = []
    if (draw(_BOOLEANS) if system is None else system):
        messages.append({"role": "system", "content": draw(content)})
    messages.append({"role": "user", "content": draw(some)})

    def answer(**extra):
        m = {"role": "assistant", "content": draw(content)}
        if reasoning and draw(_BOOLEANS):
            m["reasoning_content"] = draw(visible)
        m.update(extra)
        return m

    for _ in range(draw(_integers(1, max_rounds))):
        calls = draw(tool_calls(tools, arguments=arguments))
        for call in calls:  # ids as Mistral's template wants them: 9 alphanumerics
            call["id"] = f"call{len(messages):02d}{len(call_ids):03d}"
            call_ids.append(call["id"])
        beside = draw(_BESIDE)
        call_msg = answer(tool_calls=calls)
        call_msg["content"] = {"empty": "", "none": None,
                               "text": call_msg["content"] or "let me check"}[beside]
        messages.append(call_msg)
        for call in calls:
            messages.append({"role": "tool", "content": draw(content),
                             "name": call["function"]["name"], "tool_call_id": call["id"]})
    messages.append(answer())
    if consecutive_assistant and draw(_integers(0, 4)) == 0:
        messages.append(answer())
    if (draw(_BOOLEANS) if follow_up is None else follow_up):
        messages.append({"role": "user", "content": draw(some)})
        messages.append(answer())
    return {"messages": messages, "tools": tools}
