"""tinker-cookbook targets: its renderers' supervised path, ``renderers.get_renderer(name,
tokenizer)`` then ``supervised.data.conversation_to_datum(messages, renderer, max_length,
train_on_what)`` (what ``FromConversationFileBuilder`` maps over a JSONL of conversations).

tinker-cookbook 0.5.8 (``tox -e tinker-cookbook``; it pins ``transformers<=5.5.4``). No tinker
service is contacted: the renderers and ``conversation_to_datum`` only tokenize, and
``tinker.ModelInput`` / ``tinker.Datum`` are plain data classes.

The conversations are converted to tinker-cookbook's ``Message`` type by its own OpenAI
converters (``third_party.openai_compat``): ``openai_messages_to_tinker`` (``tool_calls`` ->
``ToolCall.model_validate``, whose ``arguments`` must be a JSON string: dict arguments are
``json.dumps``-ed first, as its ``FunctionBody`` documents) and ``openai_tools_to_tinker``. The
tools go in front as ``renderer.create_conversation_prefix_with_tools(tools, system_prompt)``
(the conversation's system message, if any, becomes ``system_prompt``), the documented way to
offer tools. ``openai_messages_to_tinker`` drops ``reasoning_content``; the Message docs put
reasoning in the content list as a ``ThinkingPart`` (the inverse of the renderer's own
``to_openai_message``), so a message with ``reasoning_content`` gets ``content = [{"type":
"thinking", ...}, {"type": "text", ...}]``.

The datum is tinker's: ``model_input`` = tokens[:-1], ``loss_fn_inputs["target_tokens"]`` =
tokens[1:], ``weights`` per target. ``collate`` returns the whole sequence as ``input_ids`` and
``labels[t] = target_tokens[t]`` where ``weights[t] > 0``, else -100, and -100 on the last
position (declared ``labels_shifted``: ``labels[t]`` is the target of ``logits[t]``). Truncation
is ``conversation_to_datum``'s: the end is cut at ``max_length`` (``overlong = "truncate"``).
"""

from __future__ import annotations

import json

from sft_conformance.reference.conversation import split

INSTALL_HINT = "tox -e tinker-cookbook (pip install torch==2.13.0 tinker-cookbook==0.5.8 " \
               "transformers==5.5.4)"
IGNORE_INDEX = -100


def tinker_messages(conversation, renderer) -> list:
    """The conversation as tinker-cookbook Messages, tools offered through the renderer."""
    from tinker_cookbook.third_party.openai_compat import (
        openai_messages_to_tinker,
        openai_tools_to_tinker,
    )

    messages, tools = split(conversation)
    plain = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [_string_arguments(c) for c in m["tool_calls"]]
        elif "tool_calls" in m:
            del m["tool_calls"]
        plain.append(m)
    out = openai_messages_to_tinker(plain)
    for src, msg in zip(plain, out):
        if src.get("reasoning_content"):
            text = msg["content"] if isinstance(msg["content"], str) else ""
            msg["content"] = [{"type": "thinking", "thinking": src["reasoning_content"]},
                              {"type": "text", "text": text}]
    if tools:
        system = ""
        if out and out[0]["role"] == "system":
            system = out.pop(0)["content"]
        out = renderer.create_conversation_prefix_with_tools(openai_tools_to_tinker(tools),
                                                             system_prompt=system) + out
    return out


def _string_arguments(call):
    call = dict(call)
    fn = dict(call.get("function", call))
    if not isinstance(fn.get("arguments"), str):
        fn["arguments"] = json.dumps(fn.get("arguments") or {})
    return {"type": call.get("type", "function"), "id": call.get("id"),
            "function": {"name": fn["name"], "arguments": fn["arguments"]}}


class _TinkerTarget:
    labels_shifted = True
    turn_policy = "all"
    overlong = "truncate"
    tokenization = "whole"
    tools = True
    reasoning = "template"
    requires = ("tinker_cookbook",)
    install_hint = INSTALL_HINT
    tokenizer = "qwen3"
    #: get_renderer name
    renderer_name = "qwen3"
    #: TrainOnWhat member name
    train_on_what = "ALL_ASSISTANT_MESSAGES"

    def __init__(self):
        self._renderers = {}

    def renderer(self, tokenizer):
        from tinker_cookbook.renderers import get_renderer

        key = id(tokenizer)
        if key not in self._renderers:
            self._renderers[key] = (tokenizer, get_renderer(self.renderer_name, tokenizer))
        return self._renderers[key][1]

    def datum(self, conversation, tokenizer, max_length):
        from tinker_cookbook.renderers import TrainOnWhat
        from tinker_cookbook.supervised.data import conversation_to_datum

        renderer = self.renderer(tokenizer)
        return conversation_to_datum(tinker_messages(conversation, renderer), renderer,
                                     max_length, TrainOnWhat[self.train_on_what])

    def collate(self, conversations, tokenizer, max_length):
        import torch

        rows = []
        for conv in conversations:
            d = self.datum(conv, tokenizer, max_length)
            inputs = d.model_input.to_ints()
            targets = list(d.loss_fn_inputs["target_tokens"].tolist())
            weights = list(d.loss_fn_inputs["weights"].tolist())
            ids = inputs + targets[-1:]
            labels = [t if w > 0 else IGNORE_INDEX for t, w in zip(targets, weights)]
            rows.append((ids, labels + [IGNORE_INDEX]))
        width = max(len(ids) for ids, _ in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            labels[i, :len(lab)] = torch.tensor(lab)
            attention[i, :len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


class Qwen3Target(_TinkerTarget):
    """``get_renderer("qwen3", tok)`` (thinking on, reasoning stripped from history),
    ``conversation_to_datum(..., train_on_what=ALL_ASSISTANT_MESSAGES)`` (the default of
    ``conversation_to_datum`` and of ``FromConversationFileBuilder``). With our ``qwen3``
    tokenizer (Qwen's vocabulary and added tokens)."""

    name = "tinker-cookbook-qwen3"


class Qwen3LastTarget(Qwen3Target):
    """As ``tinker-cookbook-qwen3`` with ``train_on_what=LAST_ASSISTANT_MESSAGE`` (declared
    ``turn_policy = "last"``)."""

    name = "tinker-cookbook-qwen3-last"
    turn_policy = "last"
    train_on_what = "LAST_ASSISTANT_MESSAGE"


class Qwen3DisableThinkingTarget(Qwen3Target):
    """``get_renderer("qwen3_disable_thinking", tok)``: Qwen3's rendering with
    ``enable_thinking=False``; ALL_ASSISTANT_MESSAGES. It refuses a turn with reasoning
    (``RendererError``), so no reasoning rule is declared."""

    name = "tinker-cookbook-qwen3-disable-thinking"
    renderer_name = "qwen3_disable_thinking"
    reasoning = None


class DeepSeekV3Target(_TinkerTarget):
    """``get_renderer("deepseekv3", tok)`` (non-thinking, the default) with our ``deepseek``
    tokenizer (DeepSeek-V3's vocabulary); ALL_ASSISTANT_MESSAGES."""

    name = "tinker-cookbook-deepseekv3"
    tokenizer = "deepseek"
    renderer_name = "deepseekv3"


class Qwen3PreserveThinkingTarget(Qwen3Target):
    """``Qwen3Renderer(tok, strip_thinking_from_history=False)`` (its docstring: "Use
    strip_thinking_from_history=False for multi-turn RL to get the extension property"; no
    ``get_renderer`` name for Qwen3): every assistant message keeps its reasoning (declared
    ``reasoning = "all_turns"``); ALL_ASSISTANT_MESSAGES."""

    name = "tinker-cookbook-qwen3-preserve-thinking"
    reasoning = "all_turns"

    def renderer(self, tokenizer):
        from tinker_cookbook.renderers.qwen3 import Qwen3Renderer

        key = id(tokenizer)
        if key not in self._renderers:
            self._renderers[key] = (tokenizer, Qwen3Renderer(tokenizer,
                                                             strip_thinking_from_history=False))
        return self._renderers[key][1]
