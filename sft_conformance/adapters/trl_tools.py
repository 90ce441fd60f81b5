"""TRL targets on agentic data: ``SFTTrainer`` on a dataset with a ``messages`` column (tool calls,
tool results, ``reasoning_content``) and a ``tools`` column, as TRL's "Tool Calling with SFT"
documents it (``tokenize_fn`` passes ``tools=`` to every ``apply_chat_template`` call).

Everything else is :mod:`sft_conformance.adapters.trl_sft`'s: the trainer is built on a tiny model
(CPU) and the first batch of ``trainer.get_train_dataloader()`` is returned.

The dataset: ``datasets.Dataset.from_list(rows, features=...)`` with ``messages`` and ``tools``
typed ``List(Json())`` (datasets >= 4.2). Without it Arrow unifies the message dicts of the
whole column into one struct: a tool call's ``arguments`` dict gets every key any other call
has, set to ``None`` (``{"city": "Paris", "date": null}``, a different rendered call), and a
column mixing dict and JSON-string ``arguments`` raises ``ArrowInvalid: cannot mix struct and
non-struct``. ``Json()`` stores each message as it is, the datasets documentation's answer for
tool-calling data; TRL reads the messages back unchanged.
"""

from __future__ import annotations

from pathlib import Path

from sft_conformance.reference.conversation import split

from .trl_sft import CHECK_IDS, _TRLTarget

AGENTIC_IDS = CHECK_IDS + ("S13", "S14", "S15")

#: our families -> TRL's copy of the model's Hub template (trl/chat_templates/*.jinja), which
#: ``get_training_chat_template`` recognises by exact string and swaps for its training template
TRL_ORIGINALS = {"qwen2.5": "qwen2_5.jinja", "qwen3": "qwen3.jinja", "deepseek": "deepseekv3.jinja"}


def trl_original_template(tokenizer) -> str:
    """TRL's copy of the Hub chat template of ``tokenizer``'s family: what a user loading the
    real model's tokenizer has (TRL's README: "Original templates ... used for identity
    comparison"). ValueError for a family TRL ships no template of."""
    import trl

    family = _family(tokenizer)
    if family not in TRL_ORIGINALS:
        raise ValueError(
            f"TRL ships no copy of the Hub chat template of the tokenizer "
            f"{tokenizer.name_or_path!r} (known here: {', '.join(TRL_ORIGINALS)}): run this "
            "target with --tokenizer qwen2.5, qwen3 or deepseek")
    return (Path(trl.__file__).parent / "chat_templates" / TRL_ORIGINALS[family]).read_text()


def _family(tokenizer) -> str:
    name = (tokenizer.name_or_path or "").split("/")[-1].split("+")[0]
    return name.removesuffix("-generation")


def tool_rows(conversations) -> list[dict]:
    rows = []
    for conv in conversations:
        messages, tools = split(conv)
        rows.append({"messages": [dict(m) for m in messages], "tools": list(tools or [])})
    return rows


class _TRLToolsTarget(_TRLTarget):
    tools = True
    reasoning = "template"
    tokenizer = "chatml-tools"

    def rows(self, conversations):
        return tool_rows(conversations)

    def trainer(self, conversations, tokenizer, max_length, output_dir):
        from datasets import Dataset, Features, Json, List
        from trl import SFTTrainer

        from sft_conformance.assets import copy_tokenizer

        tok = copy_tokenizer(tokenizer)
        template = self.template_for(tok)
        if template is not None:
            tok.chat_template = template
        features = Features({"messages": List(Json()), "tools": List(Json())})
        data = Dataset.from_list(self.rows(conversations), features=features)
        return SFTTrainer(model=self._model(tok), args=self.sft_config(output_dir, max_length),
                          train_dataset=data, processing_class=tok)


class ToolsTarget(_TRLToolsTarget):
    """``SFTTrainer`` on ``{"messages": conv, "tools": schemas}`` rows, default ``SFTConfig``
    (``assistant_only_loss=False``): TRL's own tool test (``test_train_toolcall_data``) uses
    these defaults. The tokenizer's template as it is (``--tokenizer qwen2.5``: Qwen2.5's).

    Every token of the rendered conversation is trained: the system prompt with the tool
    schemas, user turns, headers and the tool results (S13 violated; S3 declared as for
    ``trl-sft-messages``, TRL documents the whole-sequence loss)."""

    name = "trl-sft-tools"
    trains_after_eot = True
    known_failures = {
        "S3": "assistant_only_loss=False (the default): every token of the conversation is "
              "trained, system/user turns and headers included",
        "S10": "every turn is trained, user turns included",
    }


class ToolsAssistantOnlyTarget(_TRLToolsTarget):
    """``SFTConfig(assistant_only_loss=True)`` on ``{"messages", "tools"}`` rows, the tokenizer
    carrying the model's Hub chat template (TRL's copy in ``trl/chat_templates``:
    ``qwen2_5.jinja`` for ``--tokenizer qwen2.5``, ``qwen3.jinja`` for qwen3, ``deepseekv3.jinja``
    for deepseek), as a user loading the real model has it. The Hub template has no
    ``{% generation %}`` tags, so ``SFTTrainer`` swaps in TRL's training template
    (``get_training_chat_template``: ``qwen2_5_training.jinja``, ``qwen3_training.jinja``, ...) and
    trains where ``assistant_masks`` (transformers' ``return_assistant_tokens_mask``) is 1.

    Reasoning: TRL's Qwen3 training template renders ``reasoning_content`` on every assistant turn
    (TRL's README: "Always include the thinking block regardless of message position"), declared
    ``reasoning = "all_turns"``. TRL's Qwen training templates end each ``{% generation %}`` span
    after ``<|im_end|>\n`` (declared ``trains_after_eot``); ``qwen2_5_training.jinja`` starts it
    right after ``<|im_start|>assistant``, so the header's newline is trained too (S3 on qwen2.5,
    reports/agentic-main/findings-agentic.md)."""

    name = "trl-sft-tools-assistant-only"
    tokenizer = "qwen2.5"
    reasoning = "all_turns"
    #: TRL's Qwen training templates close the span after ``<|im_end|>\n``
    trains_after_eot = True
    config = {"assistant_only_loss": True}

    def template_for(self, tokenizer) -> str:
        return trl_original_template(tokenizer)
