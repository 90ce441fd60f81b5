"""transformers on agentic data: ``tokenizer.apply_chat_template(messages, tools=tools,
tokenize=True, return_dict=True, return_assistant_tokens_mask=True)``, labels where
``assistant_masks`` is 1 (transformers' ``AssistantTracker``: every token overlapping a rendered
``{% generation %}`` span).

The template decides what is trained. ``tokenizer = "chatml-tools-generation"`` (bundled ChatML
with tools, tags around what the assistant produces: reasoning, content, calls and the end
token); ``--tokenizer qwen2.5`` / ``qwen3`` / ``deepseek`` / ``mistral`` run on that family's
tagged variant (``qwen2.5-generation``, ...: the family's rendering, byte for byte, with the
tags), as a user who writes or downloads a tagged template would configure it.
"""

from __future__ import annotations

from sft_conformance.reference.conversation import split

from .transformers_collators import (
    CUT_S9,
    IGNORE_INDEX,
    _TransformersTarget,
    chat_ids,
    padding_side,
)


class AssistantMaskToolsTarget(_TransformersTarget):
    """``apply_chat_template(messages, tools=tools, return_assistant_tokens_mask=True,
    return_dict=True, truncation=True, max_length=...)``; labels = ids where the mask is 1;
    padded by ``DataCollatorForSeq2Seq`` (right, labels -100). ``reasoning = "template"``: the
    template renders ``reasoning_content`` where it does (Qwen3: after the last real user
    query), and the tags include it."""

    name = "transformers-assistant-mask-tools"
    tokenizer = "chatml-tools-generation"
    tools = True
    reasoning = "template"
    known_failures = {"S9": CUT_S9}

    def collate(self, conversations, tokenizer, max_length):
        from transformers import DataCollatorForSeq2Seq

        features = []
        for conv in conversations:
            messages, tools = split(conv)
            kwargs = {"tools": tools} if tools else {}
            out = chat_ids(tokenizer, messages, max_length, return_assistant_tokens_mask=True,
                           **kwargs)
            ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
            labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
            features.append({"input_ids": ids, "labels": labels})
        with padding_side(tokenizer, "right"):
            batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX,
                                           return_tensors="pt")(features)
        return dict(batch)
