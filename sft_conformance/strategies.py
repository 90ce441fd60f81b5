"""Hypothesis strategies for conversations, batches and logits, with bounded sizes.

Every strategy is small by construction (a few turns, a few dozen characters a message) so that a
failure shrinks to a conversation a person can read. Tests draw them with labels::

    @given(st.data())
    def test_x(data):
        conv = data.draw(conversations(), label="conversation")
"""

from __future__ import annotations

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


@st.composite
def message_contents(draw, *, adversarial: bool = True, max_pieces: int = 8,
                     alphabet: str | None = None) -> str:
    """Message text: words, unicode, whitespace at the edges, empty or one character, and
    (``adversarial``) role words, headers and special-token look-alikes."""
    if alphabet is not None:
        specials = "<>#" if adversarial else ""
        return draw(st.text(alphabet=alphabet + specials, min_size=0, max_size=12))
    kind = draw(st.sampled_from(["words", "empty", "one-char", "unicode", "mixed"]))
    if kind == "empty":
        return ""
    if kind == "one-char":
        return draw(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")))
    if kind == "unicode":
        return draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                            min_size=1, max_size=12))
    pieces = list(_WORDS)
    if adversarial and kind == "mixed":
        pieces += list(ADVERSARIAL_PIECES)
    words = draw(st.lists(st.sampled_from(pieces), min_size=1, max_size=max_pieces))
    text = " ".join(words)
    left = draw(st.sampled_from(["", "", " ", "\n", "  "]))
    right = draw(st.sampled_from(["", "", " ", "\n"]))
    return left + text + right


@st.composite
def conversations(draw, *, max_turns: int = 3, system: bool | None = None,
                  adversarial: bool = True, alphabet: str | None = None,
                  roles: tuple[str, ...] = ("system", "user", "assistant"),
                  end_with_assistant: bool = True) -> list[dict]:
    """A conversation: optional system prompt, then 1..max_turns user/assistant exchanges."""
    content = message_contents(adversarial=adversarial, alphabet=alphabet)
    messages = []
    use_system = draw(st.booleans()) if system is None else system
    if use_system and "system" in roles:
        messages.append({"role": "system", "content": draw(content)})
    for _ in range(draw(st.integers(1, max_turns))):
        messages.append({"role": "user", "content": draw(content)})
        messages.append({"role": "assistant", "content": draw(content)})
    if not end_with_assistant and draw(st.booleans()):
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
