"""Input ids and trained positions of a conversation, from its chat template (S1-S4, S10, S11).

The input ids are exactly what inference tokenizes: the whole conversation rendered by the chat
template, tokenized once (``add_special_tokens=False``, as ``apply_chat_template`` does), never the
prompt and the response tokenized apart and glued (S1).

The trained span of an assistant turn runs from the first character of its content to the end of
its end-of-turn token (the first special token after the content; for a template without special
tokens, the end of the turn's text without trailing whitespace). A token that overlaps the span is
trained, so a BPE merge of glue and content is trained. With ``{% generation %}`` tags the tags
decide. Where each turn starts and ends is found by rendering the conversation incrementally, so
what a message *contains* cannot move the mask (S11).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import TemplateError, TokenizerError

ROLES = ("system", "user", "assistant")
POLICIES = ("all", "last")
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass(frozen=True)
class TurnSpan:
    """Token positions ``[start, stop)`` trained for the assistant message ``message``."""

    message: int
    start: int
    stop: int
    end_token: int | None  # position of the end-of-turn token, when the template has one


@dataclass
class Example:
    """One tokenized conversation: its input ids and which positions are training targets."""

    input_ids: list[int]
    trained: list[bool]
    turns: list[TurnSpan] = field(default_factory=list)
    text: str = ""
    #: (message index, field) of fields the template did not render (reasoning under a template
    #: without reasoning, tool calls under one without tools): reported, never lost in silence
    unrendered: list = field(default_factory=list)
    #: agentic conversations: character offsets of each token, and each message's payload
    #: region ``{message: (start, stop)}`` and reasoning region in the rendering (.agentic)
    offsets: list = field(default_factory=list)
    regions: dict = field(default_factory=dict)
    reasoning: dict = field(default_factory=dict)
    roles: dict = field(default_factory=dict)  # {message: role}
    calls: set = field(default_factory=set)  # assistant messages that carry tool calls

    def positions(self, region) -> list[int]:
        """Token positions overlapping a character region of the rendering."""
        a, b = region
        return [t for t, (s, e) in enumerate(self.offsets) if s < b and e > a and e > s]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(self.trained)


def validate_conversation(conversation, index: int = 0, roles: Sequence[str] = ROLES) -> None:
    """Raise :class:`ConversationError` naming the example and field unless it is well formed
    (the shapes of :mod:`.conversation`: a list of messages, or ``{"messages", "tools"}``)."""
    from .conversation import ROLES as ALL_ROLES
    from .conversation import validate

    validate(conversation, index, roles=tuple(roles) + tuple(r for r in ALL_ROLES
                                                            if r not in roles and r == "tool"))


def check_tokenizer(tokenizer, *, need_offsets: bool = True) -> None:
    """Raise :class:`TokenizerError` unless the tokenizer can render and map chat turns."""
    name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    if not getattr(tokenizer, "chat_template", None):
        raise TokenizerError(f"tokenizer {name!r} has no chat template; set "
                             "tokenizer.chat_template or pick a bundled template",
                             field="tokenizer.chat_template")
    if need_offsets and not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(f"tokenizer {name!r} is a slow (Python) tokenizer; offsets are "
                             "needed to map template spans to tokens: load it with use_fast=True",
                             field="tokenizer")


def has_generation_tags(tokenizer) -> bool:
    return bool(_GENERATION_TAG.search(tokenizer.chat_template or ""))


def render(tokenizer, messages, *, add_generation_prompt: bool = False, tools=None) -> str:
    """The chat template's text for ``messages`` (a list, or a conversation with ``tools``), as
    inference renders it: ``apply_chat_template(messages, tools=tools)``."""
    from .conversation import split

    messages, found = split(messages)
    tools = tools or found
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt, **kwargs)


_END_OF_TURN: dict = {}


def end_of_turn_id(tokenizer) -> int | None:
    """The template's end-of-turn token: the first special token after a plain answer."""
    key = (getattr(tokenizer, "name_or_path", ""), id(tokenizer))
    if key not in _END_OF_TURN:
        conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        found = None
        try:
            text = render(tokenizer, conv)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            special = _special_ids(tokenizer)
            _, c1 = _locate_content(text[len(render(tokenizer, conv[:1])):], "a")
            c1 += len(render(tokenizer, conv[:1]))
            found = next((i for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])
                          if s >= c1 and e > s and i in special), None)
        except Exception:
            found = None
        _END_OF_TURN[key] = found
    return _END_OF_TURN[key]


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(token, "special", False):
            ids.add(tokenizer.convert_tokens_to_ids(token.content))
    return ids


def _locate_content(turn_text: str, content: str) -> tuple[int, int]:
    """Where the message content (as the template rendered it) sits in the turn's text. An
    empty content sits where its first character would go: after the whitespace glue the
    template writes before a content (Mistral's space after ``[/INST]``), which is therefore
    not trained on its own (docs/specification.md#the-trained-span)."""
    if content == "":
        at = len(turn_text) - len(turn_text.lstrip())
        return at, at
    for rendered in (content, content.strip(), content.lstrip(), content.rstrip()):
        pos = turn_text.find(rendered)
        if pos >= 0:
            return pos, pos + len(rendered)
    raise ValueError("content not found")


def _spans_from_rendering(conversation, tokenizer, text, offsets, ids, index, located=None):
    """Trained spans of the assistant turns, from where the template renders each one."""
    special = _special_ids(tokenizer)
    terminator = None
    if located is not None:  # an agentic conversation (.agentic): the template's end token
        terminator = end_of_turn_id(tokenizer)
    else:
        located = _turns_by_prefix(conversation, tokenizer, text)
    if located is None:  # the template is not prefix-preserving for this conversation
        located = _turns_by_placeholders(conversation, tokenizer, text, index)
    spans = []
    for j, header_end, content_start, content_end, turn_end, plain_end in located:
        span_start = content_start
        gap = text[header_end:content_start]
        if gap.strip():  # text the template adds after the generation prompt (a <think> block)
            span_start = header_end + len(gap) - len(gap.lstrip())
        span_end, end_token = None, None
        if terminator is not None:  # a tool-call turn may hold other specials before its end
            for t, (s, e) in enumerate(offsets):
                if s >= content_end and e <= turn_end and ids[t] == terminator and e > s:
                    span_end, end_token = e, t
                    break
        for t, (s, e) in enumerate(offsets):
            if span_end is not None:
                break
            if s >= content_end and e <= turn_end and ids[t] in special and e > s:
                span_end, end_token = e, t
                break
        if span_end is None:  # no special end token: the turn's text without trailing space
            span_end = plain_end
        positions = [t for t, (s, e) in enumerate(offsets)
                     if s < span_end and e > span_start and e > s]
        if not positions:
            continue
        spans.append(TurnSpan(j, positions[0], positions[-1] + 1, end_token))
    return spans


def generation_prompt(tokenizer) -> str:
    """What the template adds for ``add_generation_prompt=True`` after a user message (the
    assistant header, e.g. '<|im_start|>assistant\\n'); empty for a template without one or
    one that cannot render a lone user message."""
    probe = [{"role": "user", "content": "x"}]
    try:
        return render(tokenizer, probe, add_generation_prompt=True)[len(render(tokenizer, probe)):]
    except Exception:
        return ""


def _header(tokenizer, conversation, j) -> str:
    """What inference feeds before assistant message ``j``: the messages before it rendered
    with the generation prompt."""
    if j:
        return render(tokenizer, conversation[:j], add_generation_prompt=True)
    return render(tokenizer, [], add_generation_prompt=True) if _renders_empty(tokenizer) else ""


def _turns_by_prefix(conversation, tokenizer, text):
    """``(message, header end, content start, content end, turn end, end without a special
    token)`` per assistant turn, character offsets in the whole rendering, where
    each turn's header and the conversation through the turn are prefixes of the whole rendering;
    None when they are not (a template that is not prefix-preserving)."""
    out = []
    for j, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        before = _header(tokenizer, conversation, j)
        through = render(tokenizer, conversation[: j + 1])
        if not text.startswith(before) or not text.startswith(through):
            return None
        content = message["content"]
        if content != content.lstrip() and render(tokenizer, [
                dict(m, content=content.lstrip()) if k == j else m
                for k, m in enumerate(conversation)]) == text:
            content = content.lstrip()  # the template trims it: its space before is glue
        try:
            c0, c1 = _locate_content(text[len(before):len(through)], content)
        except ValueError:
            return None
        turn = text[len(before):len(through)]
        out.append((j, len(before), len(before) + c0, len(before) + c1, len(through),
                    len(before) + len(turn.rstrip())))
    return out


def _turns_by_placeholders(conversation, tokenizer, text, index):
    """The same tuples for a template that is not prefix-preserving (Qwen3 drops reasoning from
    earlier turns; Mistral's template moves the system prompt): the whole conversation is
    rendered once more with each content replaced by a placeholder, and the real rendering is
    walked piece by piece: template text, then a message's content as rendered (possibly
    trimmed), then template text again. Nothing is searched for, so what a message says cannot
    move a turn (S11); only content the template transforms (Qwen3 drops reasoning from an
    earlier turn) is taken to run up to the template text that follows it."""
    marks = [f"\ue000{j}\ue001" for j in range(len(conversation))]
    skeleton = render(tokenizer, [dict(m, content=marks[j]) for j, m in enumerate(conversation)])
    glue, order, pos = [], [], 0
    for match in re.finditer("\ue000(\\d+)\ue001", skeleton):
        glue.append(skeleton[pos:match.start()])
        order.append(int(match.group(1)))
        pos = match.end()
    glue.append(skeleton[pos:])
    where, cursor = {}, 0
    for k, j in enumerate(order):
        if not text.startswith(glue[k], cursor):
            raise TemplateError("the chat template renders this conversation differently from "
                                "its own skeleton, so turns cannot be located (use "
                                "{% generation %} tags)", example=index, field="conversation")
        cursor += len(glue[k])
        content = conversation[j]["content"]
        last = k + 1 == len(order)
        for shown in dict.fromkeys((content, content.strip(), content.lstrip(), content.rstrip())):
            end = cursor + len(shown)
            if text.startswith(shown, cursor) and (
                    text[end:] == glue[-1] if last else text.startswith(glue[k + 1], end)):
                break
        else:  # rendered transformed (Qwen3 splits reasoning off content): up to what follows
            end = (len(text) - len(glue[-1]) if last and text.endswith(glue[-1])
                   else -1 if last else text.find(glue[k + 1], cursor))
            if end < cursor:
                raise TemplateError(f"the content of message {j} cannot be found between the "
                                    "template text around it, so its turn cannot be located "
                                    "(use {% generation %} tags)", example=index,
                                    field=f"messages[{j}].content")
        where[j] = (cursor - len(glue[k]), cursor, end)
        cursor = end
    out = []
    starts = sorted(c0 for _, c0, _ in where.values()) + [len(text)]
    for j, message in enumerate(conversation):
        if message["role"] != "assistant" or j not in where:
            continue
        glue_start, c0, c1 = where[j]
        prompt = _header(tokenizer, conversation, j)
        generation = prompt[len(render(tokenizer, conversation[:j])):] if j else ""
        head = text.rfind(generation, glue_start, c0) if generation else -1
        if head >= 0:
            header_end = head + len(generation)
        else:  # no generation prompt (Mistral): the prompt side ends before the whitespace
            # the template writes ahead of the content, unless the prompt ends with it too
            header_end = c0
            while header_end > glue_start and text[header_end - 1].isspace():
                header_end -= 1
            header_end = min(c0, header_end + len(prompt) - len(prompt.rstrip()))
        nxt = [s for s in starts if s > c0]
        turn_end = nxt[0] if nxt else len(text)
        out.append((j, header_end, c0, c1, turn_end, c1))
    return out


def _renders_empty(tokenizer) -> bool:
    try:
        render(tokenizer, [], add_generation_prompt=True)
        return True
    except Exception:  # a template that indexes messages[0] cannot render nothing
        return False


def _spans_from_generation_tags(conversation, tokenizer, ids, index):
    from .conversation import split

    conversation, tools = split(conversation)
    kwargs = {"tools": tools} if tools else {}
    out = tokenizer.apply_chat_template(list(conversation), tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True, **kwargs)
    if list(out["input_ids"]) != ids:
        raise TemplateError("apply_chat_template(tokenize=True) disagrees with tokenizing the "
                            "rendered text", example=index, field="tokenizer")
    mask = list(out["assistant_masks"])
    runs, start = [], None
    for t, m in enumerate(mask + [0]):
        if m and start is None:
            start = t
        elif not m and start is not None:
            runs.append((start, t))
            start = None
    assistant_messages = [j for j, m in enumerate(conversation) if m["role"] == "assistant"]
    special = _special_ids(tokenizer)
    spans = []
    for k, (s, e) in enumerate(runs):
        message = assistant_messages[k] if k < len(assistant_messages) else -1
        spans.append(TurnSpan(message, s, e, e - 1 if ids[e - 1] in special else None))
    return spans


TOKENIZATIONS = ("whole", "per_turn")


def _tokenize_per_turn(conversation, tokenizer, text, index):
    """Ids and offsets of ``text`` tokenized piece by piece: each assistant turn's prompt (the
    text since the previous turn's end, through the generation prompt, as inference renders
    it) and its response (from there through the end of the turn) apart."""
    located = _turns_by_prefix(conversation, tokenizer, text)
    if located is not None:
        ends = [turn_end for *_, turn_end, _ in located]
    else:  # not prefix-preserving: the response ends with its end-of-turn token
        located = _turns_by_placeholders(conversation, tokenizer, text, index)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        special = _special_ids(tokenizer)
        found = [[e for t, (s, e) in enumerate(enc["offset_mapping"])
                  if s >= c1 and e <= turn_end and e > s and enc["input_ids"][t] in special]
                 for _, _, _, c1, turn_end, _ in located]
        ends = [f[0] if f else plain for f, (*_, plain) in zip(found, located)]
    return _tokenize_pieces(tokenizer, text, located, ends)


def _tokenize_pieces(tokenizer, text, located, ends):
    """Ids and offsets of ``text`` tokenized in pieces cut at each turn's prompt end and
    response end."""
    cuts = [0]
    for (_, header_end, *_), end in zip(located, ends):
        cuts += [header_end, end]
    cuts.append(len(text))
    ids, offsets = [], []
    for a, b in zip(cuts, cuts[1:]):
        if b <= a:
            continue
        enc = tokenizer(text[a:b], add_special_tokens=False, return_offsets_mapping=True)
        ids += list(enc["input_ids"])
        offsets += [(s + a, e + a) for s, e in enc["offset_mapping"]]
    return ids, offsets


def build_example(conversation, tokenizer, *, policy: str = "all", index: int = 0,
                  tokenization: str = "whole", reasoning: str | None = None) -> Example:
    """Tokenize ``conversation`` as inference does and mark its trained positions.

    ``policy``: ``"all"`` trains every assistant turn (the default, S10), ``"last"`` only the last.
    ``index`` is the example's position in the user's data, used in error messages.
    ``tokenization``: ``"whole"`` (the ids of the whole rendered conversation) or ``"per_turn"``
    (each assistant turn's prompt and response tokenized apart; docs/specification.md
    #tokenization-conventions). They agree unless the tokenizer merges glue with content.
    ``reasoning``: the declared reasoning rule (``"template"``, ``"all_turns"``,
    ``"last_turn"``; :func:`.conversation.apply_reasoning_rule`), applied before rendering.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"tokenization must be one of {TOKENIZATIONS}, got {tokenization!r}")
    validate_conversation(conversation, index)
    check_tokenizer(tokenizer)
    from .conversation import apply_reasoning_rule

    conversation = apply_reasoning_rule(conversation, reasoning)
    try:
        text = render(tokenizer, conversation)
    except Exception as exc:  # jinja errors, raise_exception() in the template
        raise TemplateError(f"the chat template failed to render: {exc}", example=index,
                            field="conversation") from exc
    from .conversation import is_agentic

    if is_agentic(conversation):
        return _build_agentic(conversation, tokenizer, text, policy=policy, index=index,
                              tokenization=tokenization)
    if tokenization == "per_turn":
        ids, offsets = _tokenize_per_turn(conversation, tokenizer, text, index)
        spans = _spans_from_rendering(conversation, tokenizer, text, offsets, ids, index)
    else:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
    if tokenization == "per_turn":
        pass
    elif has_generation_tags(tokenizer):
        spans = _spans_from_generation_tags(conversation, tokenizer, ids, index)
    else:
        spans = _spans_from_rendering(conversation, tokenizer, text, offsets, ids, index)
    return _example(ids, spans, text, policy)


def _example(ids, spans, text, policy, *extra) -> Example:
    """The example of ``ids`` with the spans the turn ``policy`` trains."""
    if policy == "last":
        spans = spans[-1:]
    trained = [False] * len(ids)
    for span in spans:
        for t in range(span.start, span.stop):
            trained[t] = True
    return Example(ids, trained, spans, text, *extra)


def _build_agentic(conversation, tokenizer, text, *, policy, index, tokenization) -> Example:
    """:func:`build_example` for a conversation with tools, tool calls, tool results or
    reasoning: turns located by rendering (:mod:`.agentic`), each assistant turn trained from
    the end of its prompt side through the template's end-of-turn token, tool calls and the
    reasoning the template renders in it included; tool results and every other message are
    never trained."""
    from .agentic import Locator
    from .conversation import split

    messages, tools = split(conversation)
    locator = Locator(tokenizer, messages, tools, text, index)
    located, unrendered = locator.turns()
    regions = {k: r for k in range(len(messages)) if (r := locator.region(k)) is not None}
    reasoning = {j: r for j, m in enumerate(messages)
                 if m.get("role") == "assistant" and m.get("reasoning_content")
                 and (r := locator.region(j, ("reasoning_content",))) is not None}
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    if tokenization == "per_turn":
        terminator = end_of_turn_id(tokenizer)
        ends = [next((e for t, (s, e) in enumerate(offsets)
                      if s >= content_end and e <= window_end and e > s
                      and ids[t] == terminator), content_end)
                for _, _, _, content_end, window_end, _ in located]
        ids, offsets = _tokenize_pieces(tokenizer, text, located, ends)
        spans = _spans_from_rendering(messages, tokenizer, text, offsets, ids, index, located)
    elif has_generation_tags(tokenizer):
        spans = _spans_from_generation_tags(conversation, tokenizer, ids, index)
    else:
        spans = _spans_from_rendering(messages, tokenizer, text, offsets, ids, index, located)
    return _example(ids, spans, text, policy, unrendered, offsets, regions, reasoning,
                    {k: m["role"] for k, m in enumerate(messages)},
                    {k for k, m in enumerate(messages) if m.get("tool_calls")})


def prompt_ids(conversation, tokenizer) -> list[int]:
    """Token ids of the prompt as inference sees it: everything before the last assistant turn,
    rendered with ``add_generation_prompt=True``."""
    last = max(j for j, m in enumerate(conversation) if m["role"] == "assistant")
    text = render(tokenizer, conversation[:last], add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def content_tokens(conversation, tokenizer) -> list[list[int]]:
    """For each message, the positions of the tokens that lie wholly inside its content.

    Used to say *which message* a trained token belongs to (S10); a token straddling content and
    template glue belongs to no message here.
    """
    text = render(tokenizer, conversation)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    out = []
    for j, message in enumerate(conversation):
        before = render(tokenizer, conversation[:j]) if j else ""
        through = render(tokenizer, conversation[: j + 1])
        turn = text[len(before):len(through)] if text.startswith(through) else ""
        try:
            c0, c1 = _locate_content(turn, message["content"]) if message["content"] else (0, 0)
        except ValueError:
            out.append([])
            continue
        lo, hi = len(before) + c0, len(before) + c1
        out.append([t for t, (s, e) in enumerate(offsets) if e > s and s >= lo and e <= hi])
    return out
