"""Where each turn of an agentic conversation sits in its rendering (docs/specification.md#agentic).

Tool calls, tool results and reasoning are rendered by the template in its own way: Qwen wraps
calls in ``<tool_call>`` and puts results in a user turn, Mistral writes ``[TOOL_CALLS]`` lists
and drops the content beside them, DeepSeek's answer after a tool result has no assistant marker,
Qwen3 drops reasoning before the last real query. Several of these templates are not
prefix-stable with tools. Nothing here assumes a layout; every boundary is found by rendering:

* the **payload** of a message (what it says: content, reasoning, each call's name and
  arguments) is where the whole rendering changes when only that payload changes (the same
  conversation rendered once more with the payload's letters and digits shifted, template
  markers and the emptiness of every field kept, so the template takes the same branches);
* the **prompt side** before an assistant message is what inference feeds it: the messages
  before it rendered with the generation prompt; the part of that prompt after the previous
  message's payload (``<|im_end|>\\n<|im_start|>assistant\\n``, ``[/INST]``,
  ``<｜tool▁outputs▁end｜>``) is found again after the previous payload in the whole rendering,
  and the assistant's turn starts where it ends;
* the assistant's turn ends with the template's end-of-turn token (the one that ends a plain
  answer), the first after its payload; for a template without special tokens, at the end of
  its payload.

A field the template does not render (``reasoning_content`` under a template without
reasoning, ``tool_calls`` under one without tools) changes nothing when shifted: it is reported,
never lost in silence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from .conversation import call_parts
from .errors import TemplateError

_SHIFT = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "bcdefghijklmnopqrstuvwxyzaBCDEFGHIJKLMNOPQRSTUVWXYZA1234567890",
)
#: text a template branches on inside content (kept as it is when shifting)
_MARKERS = ("<think>", "</think>", "<tool_response>", "</tool_response>", "<tool_call>",
            "</tool_call>")


def render(tokenizer, messages, tools=None, *, add_generation_prompt=False) -> str:
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt, **kwargs)


def _protected(tokenizer) -> re.Pattern:
    words = set(_MARKERS)
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        text = getattr(token, "content", str(token))
        if text:
            words.add(text)
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))


def _shift_text(text: str, protected: re.Pattern) -> str:
    """``text`` with its letters and digits shifted, markers and special tokens kept."""
    out, pos = [], 0
    for m in protected.finditer(text):
        out.append(text[pos:m.start()].translate(_SHIFT))
        out.append(m.group(0))
        pos = m.end()
    out.append(text[pos:].translate(_SHIFT))
    shifted = "".join(out)
    return shifted if shifted != text or not text else "\ue000" + text


def _shift_value(value, protected):
    if isinstance(value, str):
        return _shift_text(value, protected)
    if isinstance(value, Mapping):
        return {_shift_text(k, protected): _shift_value(v, protected) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift_value(v, protected) for v in value]
    return value


def _shifted_call(call, protected):
    name, args = call_parts(call)
    if isinstance(args, str):
        try:
            args = json.dumps(_shift_value(json.loads(args), protected))
        except ValueError:
            args = _shift_text(args, protected)
    else:
        args = _shift_value(args if args is not None else {}, protected)
    fn = {"name": _shift_text(name, protected), "arguments": args}
    if isinstance(call, Mapping) and "function" in call:
        return dict(call, function=dict(call["function"], **fn))
    return dict(call, **fn)


def shifted(message, protected, fields=("content", "reasoning_content", "tool_calls")):
    """``message`` with the given payload fields shifted (empty fields stay empty)."""
    out = dict(message)
    for key in fields:
        value = message.get(key)
        if not value:
            continue
        if key == "tool_calls":
            out[key] = [_shifted_call(c, protected) for c in value]
        else:
            out[key] = _shift_text(value, protected)
    return out


def _diff(a: str, b: str) -> tuple[int, int] | None:
    """``[start, stop)`` in ``a`` of the region where ``a`` and ``b`` differ (None if equal)."""
    if a == b:
        return None
    n = min(len(a), len(b))
    start = 0
    while start < n and a[start] == b[start]:
        start += 1
    end = 0
    while end < n - start and a[len(a) - 1 - end] == b[len(b) - 1 - end]:
        end += 1
    return start, len(a) - end


class Locator:
    """Payload regions and prompt sides of one conversation's rendering."""

    def __init__(self, tokenizer, messages, tools, text, index=0):
        self.tok, self.messages, self.tools, self.text = tokenizer, list(messages), tools, text
        self.index = index
        self.protected = _protected(tokenizer)
        self._regions = {}

    def region(self, k, fields=("content", "reasoning_content", "tool_calls"), messages=None,
               text=None):
        """``[start, stop)`` of message ``k``'s payload in ``text`` (the whole rendering by
        default); for an empty payload, the empty region where it would be."""
        messages = self.messages if messages is None else messages
        text = self.text if text is None else text
        key = (k, fields, len(messages), text is self.text)
        if key in self._regions:
            return self._regions[key]
        variant = list(messages)
        variant[k] = shifted(messages[k], self.protected, fields)
        found = None
        if variant[k] != messages[k]:
            found = _diff(text, self._render(variant, len(messages) < len(self.messages)))
        if found is None and fields == ("content", "reasoning_content", "tool_calls"):
            # nothing to shift (an empty message), or a payload the template does not render:
            # where a one-letter content would go
            probe = list(messages)
            probe[k] = dict(messages[k], content="x" + (messages[k].get("content") or ""))
            where = _diff(text, self._render(probe, len(messages) < len(self.messages)))
            found = (where[0], where[0]) if where else None
        self._regions[key] = found
        return found

    def _render(self, messages, prompt: bool) -> str:
        try:
            return render(self.tok, messages, self.tools, add_generation_prompt=prompt)
        except Exception as exc:
            raise TemplateError(f"the chat template failed to render a variant of the "
                                f"conversation: {exc}", example=self.index,
                                field="conversation") from exc

    def renders(self, k, field) -> bool:
        """Whether message ``k``'s ``field`` shows in the rendering at all."""
        if not self.messages[k].get(field):
            return True
        return self.region(k, (field,)) is not None

    def prompt_side_end(self, j) -> int:
        """Where the prompt side before assistant message ``j`` ends in the whole rendering."""
        if j == 0:
            try:
                prompt = render(self.tok, [], self.tools, add_generation_prompt=True)
            except Exception:
                prompt = ""
            return len(prompt) if prompt and self.text.startswith(prompt) else 0
        prompt = self._render(self.messages[:j], True)
        if self.text.startswith(prompt):
            return len(prompt)
        # not prefix-stable: the prompt after the previous payload, found again after it here
        prev_in_prompt = self.region(j - 1, messages=self.messages[:j], text=prompt)
        prev = self.region(j - 1)
        if prev_in_prompt is not None and prev is not None:
            tail = prompt[prev_in_prompt[1]:]
            if self.text.startswith(tail, prev[1]):
                return prev[1] + len(tail)
            # the whole rendering goes on differently (DeepSeek's second tool round does not
            # close the outputs block): the prompt side is as much of inference's as it shares
            common = 0
            while (common < len(tail) and prev[1] + common < len(self.text)
                   and self.text[prev[1] + common] == tail[common]):
                common += 1
            if common:
                return prev[1] + common
        here = self.region(j)
        start = here[0] if here else len(self.text)
        generation = prompt[len(self._render(self.messages[:j], False)):] \
            if prompt.startswith(self._render(self.messages[:j], False)) else ""
        if generation:
            at = self.text.rfind(generation, prev[1] if prev else 0, start)
            if at >= 0:
                return at + len(generation)
        if prev is not None:
            return prev[1]
        raise TemplateError(f"the turn of message {j} cannot be located in the rendering",
                            example=self.index, field=f"messages[{j}]")

    def turns(self):
        """``(message, header end, payload start, payload end, window end, plain end)`` per
        assistant message, character offsets in the whole rendering (the tuples of
        :mod:`.masks`), and the fields the template did not render."""
        out, dropped = [], []
        for j, m in enumerate(self.messages):
            if m.get("role") != "assistant":
                continue
            here = self.region(j)
            if here is None:
                raise TemplateError(f"assistant message {j} is not rendered by the chat "
                                    "template", example=self.index, field=f"messages[{j}]")
            head = self.prompt_side_end(j)
            nxt = next((r[0] for k in range(j + 1, len(self.messages))
                        if (r := self.region(k)) is not None), len(self.text))
            for field in ("reasoning_content", "tool_calls", "content"):
                if m.get(field) and not self.renders(j, field):
                    dropped.append((j, field))
            start = min(here[0], max(head, 0)) if head <= here[0] else here[0]
            # whitespace glue the template writes right after the prompt side (Mistral's space
            # after [/INST]) is trained only inside a token that also holds what the assistant
            # produces; the content's own leading whitespace stays in the span
            run = 0
            while start + run < here[0] and self.text[start + run].isspace():
                run += 1
            content = m.get("content") or ""
            words = content.strip()
            if (self.text.startswith(words, start + run) if words
                    else not any(m.get(f) and self.renders(j, f)
                                 for f in ("tool_calls", "reasoning_content"))):
                lead = len(content) - len(content.lstrip())
                if lead and self._render([dict(x, content=content.lstrip()) if k == j else x
                                          for k, x in enumerate(self.messages)],
                                         False) == self.text:
                    lead = 0  # the template trims the content: the space before it is glue
                start += max(0, run - lead)
            out.append((j, head, start, here[1], nxt, here[1]))
        return out, dropped
