"""The tokenizer's own special strings, placed in every role's content, every time.

Real data holds them: scraped chat logs, code about tokenizers, tool outputs that quote a
template. Masking code that works on ids by value breaks on them: a prompt measured as
``(ids != pad).sum()`` (stanford_alpaca's ``_tokenize_fn``) loses a position when the user writes
the pad token's text; a response built as ``content + eos`` only when it does not already end with
it (LitGPT-style ``SFTDataset`` code) loses its real end of turn when the assistant's content ends
with the end token's text. Random draws find these by luck, so the label-level checks judge, in
every profile and before their draws, pinned conversations built here from the tokenizer under
test: each of its special strings (pad, eos, bos, unk, the template's end of turn, header and role
markers, tool and reasoning markers) and a few look-alikes at the start, in the middle and at the
end of system, user and assistant content (docs/specification.md#special-strings).

One batch per role family, not one collate per string: a check pays a few calls, whatever the
tokenizer's size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .assets import vocabulary_size

#: added tokens whose text names one of these are tool or reasoning markers, kept even when the
#: template does not render them (a tool result may quote them)
_MARKER_WORDS = re.compile(r"tool|think|function|call|result|response", re.IGNORECASE)
#: placeholders no text produces on purpose (Mistral's [control_N], Llama's reserved tokens)
_PLACEHOLDER = re.compile(r"control_\d+|reserved|unused|extra_id|<\|?\d+\|?>", re.IGNORECASE)
#: at most this many strings of each kind beyond the named ones (bounded batches)
_MAX_MARKERS = 8

#: where a string goes in a message's content; "everywhere" is all three at once (a length
#: counted by value is then off by three, past a header token merged with the answer)
PLACEMENTS = ("start", "middle", "end", "everywhere")


@dataclass(frozen=True)
class SpecialString:
    text: str
    kind: str  # pad, eos, bos, unk, end_of_turn, header, marker, look-alike

    @property
    def describe(self) -> str:
        names = {"pad": "pad token", "eos": "eos token", "bos": "bos token",
                 "unk": "unk token", "end_of_turn": "end-of-turn token",
                 "header": "assistant header", "marker": "template/tool marker",
                 "look-alike": "look-alike of a special token"}
        return f"the tokenizer's {names.get(self.kind, self.kind)} {self.text!r}"


def _end_of_turn(tokenizer) -> str | None:
    from sft_conformance.reference import build_example

    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    try:
        ex = build_example(conv, tokenizer)
    except Exception:
        return None
    for span in ex.turns:
        if span.end_token is not None:
            return tokenizer.convert_ids_to_tokens(ex.input_ids[span.end_token])
    return None


def _look_alikes(text: str) -> list[str]:
    """Near misses of a marker: a space inside it, its last character cut."""
    if len(text) < 3:
        return []
    mid = len(text) // 2
    return [text[:mid] + " " + text[mid:], text[:-1]]


def special_strings(tokenizer) -> list[SpecialString]:
    """The strings of ``tokenizer`` that code handling ids by value trips over, deduplicated,
    named ones first."""
    from sft_conformance.reference.masks import generation_prompt

    out: dict[str, SpecialString] = {}

    def add(text, kind):
        if text and isinstance(text, str) and text not in out:
            out[text] = SpecialString(text, kind)

    for kind in ("pad", "eos", "bos", "unk"):
        add(getattr(tokenizer, f"{kind}_token", None), kind)
    end = _end_of_turn(tokenizer)
    add(end, "end_of_turn")
    header = generation_prompt(tokenizer)
    if header.strip():
        add(header, "header")
    template = tokenizer.chat_template or ""
    if not isinstance(template, str):
        template = ""
    markers = []
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        text = getattr(token, "content", str(token))
        if text in out or _PLACEHOLDER.search(text):
            continue
        if text in template or _MARKER_WORDS.search(text):
            markers.append(text)
    for text in markers[:_MAX_MARKERS]:
        add(text, "marker")
    for text in [s for s in (end, getattr(tokenizer, "pad_token", None)) if s]:
        for alike in _look_alikes(text):
            add(alike, "look-alike")
    return list(out.values())


def placed(text: str, placement: str) -> str:
    """Message content holding ``text`` at the start, in the middle or at the end."""
    if placement == "start":
        return f"{text}the answer"
    if placement == "middle":
        return f"the {text} answer"
    if placement == "end":
        return f"the answer{text}"
    return f"{text}the {text} answer{text}"


def _conversation(role: str, content: str, *, system: bool, multi_turn: bool) -> list[dict]:
    msgs = []
    if system or role == "system":
        msgs.append({"role": "system", "content": content if role == "system" else "be brief"})
    msgs.append({"role": "user", "content": content if role == "user" else "what is it"})
    msgs.append({"role": "assistant", "content": content if role == "assistant" else "it is"})
    if multi_turn:
        msgs += [{"role": "user", "content": "and then"}, {"role": "assistant", "content": "done"}]
    return msgs


def _renders_verbatim(conv, tokenizer) -> bool:
    """Whether the reference can judge ``conv`` with every content rendered as written (Qwen3
    turns a ``</think>`` in assistant content into reasoning: the agentic checks judge that)."""
    from sft_conformance.reference import build_example

    try:
        ex = build_example(conv, tokenizer)
    except Exception:
        return False
    return all(m["content"].strip() in ex.text for m in conv)


def pinned_batches(tokenizer, *, roles=("system", "user", "assistant"), multi_turn=False,
                   system=True, kinds=None, compact=False) -> list[list[list[dict]]]:
    """One batch per role: a conversation for each special string of ``tokenizer`` at each
    placement in that role's content (``kinds``: only strings of these kinds). ``compact``: one
    batch of one conversation per string, at the start of the system prompt, in the middle of
    the user message and at the end of the answer (for checks that collate each example again
    alone)."""
    strings = [s for s in special_strings(tokenizer) if kinds is None or s.kind in kinds]
    if compact:
        batch = []
        for s in strings:
            rest = [{"role": "user", "content": placed(s.text, "middle")},
                    {"role": "assistant", "content": placed(s.text, "end")}]
            with_system = [{"role": "system", "content": placed(s.text, "start")}] + rest
            for conv in ([with_system, rest] if system else [rest]):
                if _renders_verbatim(conv, tokenizer):  # (Mistral drops a system prompt
                    batch.append(conv)                  # before a final answer)
                    break
        return [batch] if batch else []
    batches = []
    for role in roles:
        if role == "system" and not system:
            continue
        batch = []
        for s in strings:
            for placement in PLACEMENTS:
                conv = _conversation(role, placed(s.text, placement), system=system and
                                     role == "system", multi_turn=multi_turn)
                if _renders_verbatim(conv, tokenizer):
                    batch.append(conv)
        if batch:
            batches.append(batch)
    return batches


def hint_for(ctx, conversation) -> str:
    """'Likely cause: ...' for a failing conversation that holds a special string of the
    tokenizer under test: which string, in which message, where, and what code most likely
    did with it."""
    from sft_conformance.reference.conversation import messages_of

    tok = ctx.tokenizer()
    found = []
    for s in special_strings(tok):
        for j, m in enumerate(messages_of(conversation)):
            content = m.get("content") or ""
            if not isinstance(content, str) or s.text not in content:
                continue
            where = ("at the start, in the middle and at the end" if content.count(s.text) > 2
                     else "at the start" if content.startswith(s.text) else
                     "at the end" if content.endswith(s.text) else "in the middle")
            found.append((s, j, m["role"], where))
    if not found:
        return ""
    # the most telling first: named tokens before look-alikes
    rank = {"pad": 0, "eos": 1, "end_of_turn": 1, "bos": 2, "unk": 3, "header": 4, "marker": 5,
            "look-alike": 6}
    s, j, role, where = min(found, key=lambda f: rank.get(f[0].kind, 9))
    if s.kind == "pad":
        cause = ("code that works on ids by value: a prompt length measured as "
                 "(ids != pad_id).sum(), or labels[ids == pad_id] = -100, miscounts or masks "
                 "the token this text becomes")
    elif s.kind in ("eos", "end_of_turn") and role == "assistant" and where == "at the end":
        cause = ("code that appends the end token as text only when the response does not "
                 "already end with it, or cuts the response at the first end token it finds")
    elif s.kind in ("eos", "end_of_turn"):
        cause = ("code that searches the ids or the text for the end token (first or last "
                 "occurrence) or masks it by value")
    elif s.kind == "bos":
        cause = "code that strips, counts or adds the bos token by value"
    elif s.kind in ("header", "marker"):
        cause = ("code that locates turns by searching for the assistant header or a role "
                 "marker in the text or ids instead of rendering the conversation's turns")
    else:
        cause = "code that matches template markers by a loose pattern"
    return (f"Likely cause: message {j} ({role}) holds {s.describe} {where} of its content; "
            f"{cause}.")


_CACHE: dict = {}


def cached_pinned_batches(tokenizer, **kwargs) -> list[list[list[dict]]]:
    """:func:`pinned_batches`, computed once per tokenizer configuration and arguments."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    key = (getattr(tokenizer, "name_or_path", ""), vocabulary_size(tokenizer), hash(template),
           tokenizer.pad_token, tokenizer.eos_token, tuple(sorted(
               (k, tuple(v) if isinstance(v, (list, tuple, set)) else v)
               for k, v in kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = pinned_batches(tokenizer, **kwargs)
    import copy

    return copy.deepcopy(_CACHE[key])
