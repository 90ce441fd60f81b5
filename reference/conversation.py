"""Conversations as users have them: chat, tools and reasoning (specification: conversations).

A conversation is either a plain list of messages, or a mapping ``{"messages": [...], "tools":
[...]}`` (the row of a Hugging Face / TRL dataset with a ``tools`` column). Messages:

* ``{"role": "system" | "user", "content": str}``;
* ``{"role": "assistant", "content": str | None, "tool_calls": [...], "reasoning_content": str}``
  where ``tool_calls`` (optional) is a list of calls in the OpenAI / Hugging Face shape
  ``{"type": "function", "function": {"name": str, "arguments": dict | str}}`` (the flat
  ``{"name", "arguments"}`` form is accepted too), ``content`` may be empty or ``None`` beside
  calls, and ``reasoning_content`` (optional) is the reasoning the template may render;
* ``{"role": "tool", "content": str, "tool_call_id": str, "name": str}`` (the last two optional).

``tools`` (optional) are the JSON schemas offered to the model, passed to the chat template as
``apply_chat_template(messages, tools=tools)``. A plain list of system/user/assistant messages is
a valid conversation exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from .errors import ConversationError

ROLES = ("system", "user", "assistant", "tool")


def split(conversation) -> tuple[list, list | None]:
    """``(messages, tools)`` of a conversation in either shape (``tools`` None when absent)."""
    if isinstance(conversation, Mapping):
        return list(conversation.get("messages") or []), (conversation.get("tools") or None)
    return list(conversation), None


def join(messages, tools) -> list | dict:
    """The conversation of ``messages`` and ``tools``: a plain list when there are no tools."""
    return {"messages": list(messages), "tools": list(tools)} if tools else list(messages)


def messages_of(conversation) -> list:
    return split(conversation)[0]


def tools_of(conversation) -> list | None:
    return split(conversation)[1]


def is_agentic(conversation) -> bool:
    """Whether the conversation holds tools, tool calls, tool results or reasoning."""
    messages, tools = split(conversation)
    return bool(tools) or any(
        m.get("role") == "tool" or m.get("tool_calls") or m.get("reasoning_content")
        for m in messages if isinstance(m, Mapping))


#: where reasoning is kept (docs/specification.md#s15): ``"template"`` as the chat template
#: renders it (Qwen3 drops it from turns before the last user query), ``"all_turns"`` on every
#: assistant turn, ``"last_turn"`` only on the last assistant turn (the data path drops it from
#: the others before rendering)
REASONING_RULES = ("template", "all_turns", "last_turn")


def apply_reasoning_rule(conversation, rule: str | None):
    """The conversation as the declared reasoning ``rule`` has the template see it:
    ``"last_turn"`` removes ``reasoning_content`` from every assistant message but the last one;
    ``"template"``, ``"all_turns"`` and ``None`` leave it as it is (under ``"all_turns"`` a
    template that drops some turn's reasoning is reported by S15, not repaired)."""
    if rule in (None, "template", "all_turns"):
        return conversation
    if rule != "last_turn":
        raise ValueError(f"reasoning rule must be one of {REASONING_RULES}, got {rule!r}")
    messages, tools = split(conversation)
    assistant = [j for j, m in enumerate(messages)
                 if isinstance(m, Mapping) and m.get("role") == "assistant"]
    last = assistant[-1] if assistant else -1
    out = [{k: v for k, v in m.items() if k != "reasoning_content"}
           if (isinstance(m, Mapping) and m.get("role") == "assistant" and j != last
               and "reasoning_content" in m) else m
           for j, m in enumerate(messages)]
    if out == messages:
        return conversation
    return {**conversation, "messages": out} if isinstance(conversation, Mapping) else out


def call_parts(call) -> tuple[str, object]:
    """``(name, arguments)`` of a tool call in the nested or the flat shape."""
    fn = call.get("function", call) if isinstance(call, Mapping) else {}
    return fn.get("name"), fn.get("arguments")


def _check_call(call, index, where) -> None:
    if not isinstance(call, Mapping):
        raise ConversationError(f"a tool call must be a mapping, got {type(call).__name__}",
                                example=index, field=where)
    fn = call.get("function", call)
    if not isinstance(fn, Mapping):
        raise ConversationError("'function' must be a mapping with 'name' and 'arguments'",
                                example=index, field=f"{where}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ConversationError(f"the call needs a function name (a string), got {name!r}",
                                example=index, field=f"{where}.function.name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            json.loads(args)
        except ValueError as exc:
            raise ConversationError(f"arguments is a string but not JSON: {exc}",
                                    example=index, field=f"{where}.function.arguments") from None
    elif not isinstance(args, Mapping):
        raise ConversationError(
            f"arguments must be a dict or a JSON string, got {type(args).__name__}",
            example=index, field=f"{where}.function.arguments")


def validate(conversation, index: int = 0, roles: Sequence[str] = ROLES) -> None:
    """Raise :class:`ConversationError` naming the example and field unless well formed."""
    if isinstance(conversation, Mapping):
        if "messages" not in conversation:
            raise ConversationError("a conversation given as a mapping needs 'messages' (and "
                                    "optionally 'tools')", example=index, field="conversation")
        tools = conversation.get("tools")
        if tools is not None:
            if not isinstance(tools, Sequence) or isinstance(tools, (str, bytes)):
                raise ConversationError(f"tools must be a list of schemas, got "
                                        f"{type(tools).__name__}", example=index, field="tools")
            for k, tool in enumerate(tools):
                if not isinstance(tool, Mapping):
                    raise ConversationError(f"a tool schema must be a mapping, got "
                                            f"{type(tool).__name__}", example=index,
                                            field=f"tools[{k}]")
        conversation = conversation["messages"]
    if not isinstance(conversation, Sequence) or isinstance(conversation, (str, bytes)):
        raise ConversationError(
            f"a conversation must be a list of messages, got {type(conversation).__name__}",
            example=index, field="conversation")
    if len(conversation) == 0:
        raise ConversationError("the conversation is empty", example=index, field="conversation")
    for j, message in enumerate(conversation):
        where = f"messages[{j}]"
        if not isinstance(message, Mapping):
            raise ConversationError(
                f"must be a mapping with 'role' and 'content', got {type(message).__name__}",
                example=index, field=where)
        if "role" not in message:
            raise ConversationError("missing key 'role'", example=index, field=where)
        role = message["role"]
        if role not in roles:
            raise ConversationError(
                f"unknown role {role!r} (expected one of {', '.join(roles)})",
                example=index, field=f"{where}.role")
        calls = message.get("tool_calls")
        if calls is not None and role != "assistant":
            raise ConversationError("only an assistant message may carry tool_calls",
                                    example=index, field=f"{where}.tool_calls")
        if calls is not None:
            if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
                raise ConversationError(f"tool_calls must be a list, got {type(calls).__name__}",
                                        example=index, field=f"{where}.tool_calls")
            for k, call in enumerate(calls):
                _check_call(call, index, f"{where}.tool_calls[{k}]")
        if "content" not in message and not calls:
            raise ConversationError("missing key 'content'", example=index, field=where)
        content = message.get("content")
        if content is None and not (role == "assistant" and calls):
            raise ConversationError(
                "content is None: only an assistant message with tool_calls may have no content",
                example=index, field=f"{where}.content")
        if content is not None and not isinstance(content, str):
            raise ConversationError(
                f"content must be a string, got {type(content).__name__}",
                example=index, field=f"{where}.content")
        reasoning = message.get("reasoning_content")
        if reasoning is not None:
            if role != "assistant":
                raise ConversationError("only an assistant message may carry reasoning_content",
                                        example=index, field=f"{where}.reasoning_content")
            if not isinstance(reasoning, str):
                raise ConversationError(
                    f"reasoning_content must be a string, got {type(reasoning).__name__}",
                    example=index, field=f"{where}.reasoning_content")
        if role == "tool":
            for key in ("tool_call_id", "name"):
                if message.get(key) is not None and not isinstance(message[key], str):
                    raise ConversationError(f"{key} must be a string",
                                            example=index, field=f"{where}.{key}")
    if not any(m["role"] == "assistant" for m in conversation):
        raise ConversationError("the conversation has no assistant turn, so nothing to train",
                                example=index, field="conversation")
