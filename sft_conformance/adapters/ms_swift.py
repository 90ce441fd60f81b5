"""ms-swift targets: ``swift sft``'s data path, built from its own objects: ``get_processor``,
``get_template(...)``, ``template.set_mode('train')``, ``LazyLLMDataset(dataset, template.encode)``
(the non-streaming training dataset of ``SwiftSft._post_process_datasets``), ``PackingDataset``
with ``--packing true``, and ``template.data_collator``.

ms-swift 4.6.0 (``tox -e ms-swift``; it needs ``transformers<5.20``). What a user configures::

    swift sft --model <dir> --model_type llama --template chatml --dataset data.jsonl
        --max_length N [--loss_scale last_round] [--padding_free true] [--packing true]

The processor comes from ``swift.model.get_processor(dir, model_type="llama")`` on a local
directory holding the suite's tokenizer and the tiny model's ``config.json`` (ms-swift reads the
model type from it; no weights are loaded, nothing is downloaded). The template is ms-swift's own
``chatml`` (``qwen2_5`` for the Qwen2.5 tokenizer), built with the ``swift sft`` defaults of
``TemplateArguments``: ``loss_scale='default'`` (every assistant turn), ``truncation_strategy``
``'delete'`` (passed to the template as ``'raise'``; ``LazyLLMDataset`` then fetches another
example in place of an over-long one: declared ``overlong = "drop"``), right padding. The swift
backend tokenizes the rendered pieces (header, content, suffix) apart: declared
``tokenization = "per_turn"``.

The template encodes the rendered context pieces one by one (``_swift_encode``): the assistant
content and the template's suffix (``<|im_end|>\\n``) are trained, so the newline after the end
token is trained too (declared ``trains_after_eot``). Labels are unshifted (the Hugging Face
convention; ms-swift's trainer lets the model shift them).
"""

from __future__ import annotations

import contextlib
import io
import os

from ._local import saved_tokenizer_dir, tokenizer_family, varlen_forward

INSTALL_HINT = "tox -e ms-swift (pip install torch==2.13.0 ms-swift==4.6.0 'transformers<5.20')"

#: the suite's template name -> ms-swift's template type that renders the same conversation
TEMPLATE_TYPES = {"chatml": "chatml", "chatml-generation": "chatml", "qwen2.5": "qwen2_5",
                  "qwen3": "qwen3", "llama3": "llama3"}
_PROCESSORS: dict = {}


def swift_processor(tokenizer):
    """``swift.model.get_processor`` on a local directory with the tokenizer and a config."""
    from swift.model import get_processor

    from sft_conformance.assets import tiny_model

    path = saved_tokenizer_dir(tokenizer)
    if path not in _PROCESSORS:
        if not os.path.exists(os.path.join(path, "config.json")):
            tiny_model(tokenizer).config.save_pretrained(path)
        with contextlib.redirect_stdout(io.StringIO()):
            _PROCESSORS[path] = get_processor(path, model_type="llama", download_model=False)
    return _PROCESSORS[path]


class _SwiftTarget:
    labels_shifted = False
    turn_policy = "all"
    overlong = "drop"
    trains_after_eot = True
    #: the swift backend tokenizes the rendered pieces (header, content, suffix) one by one
    tokenization = "per_turn"
    requires = ("swift",)
    install_hint = INSTALL_HINT
    tokenizer = "chatml"
    #: get_template keyword arguments of this target (the swift sft defaults otherwise)
    template_kwargs: dict = {}
    packing = False

    def template(self, tokenizer, max_length):
        from swift.template import get_template

        family = tokenizer_family(tokenizer)
        if family not in TEMPLATE_TYPES:
            raise ValueError(f"no ms-swift template renders the {family!r} template")
        kwargs = {"truncation_strategy": "raise", "loss_scale": "default",
                  "padding_side": "right", **self.template_kwargs}
        template = get_template(swift_processor(tokenizer), template_type=TEMPLATE_TYPES[family],
                                max_length=max_length, **kwargs)
        template.set_mode("train")
        return template

    def rows(self, conversations):
        return [{"messages": [dict(m) for m in c]} for c in conversations]

    def collate(self, conversations, tokenizer, max_length):
        from datasets import Dataset
        from swift.dataset import LazyLLMDataset

        from ._datasets import in_memory_datasets

        template = self.template(tokenizer, max_length)
        with in_memory_datasets(), contextlib.redirect_stdout(io.StringIO()):
            rows = Dataset.from_list(self.rows(conversations))
            if self.packing:
                from swift.dataset import AddLengthPreprocessor, PackingDataset

                # num_proc=0: datasets maps in this process (with 1, datasets 4 starts a one-worker
                # pool per call and pickles the template to it: 5.3 s a collate on Qwen2.5, 1 s)
                rows = AddLengthPreprocessor(template=template)(rows, num_proc=0,
                                                                 load_from_cache_file=False)
                if len(rows) == 0:
                    raise ValueError("ms-swift's preprocessing dropped every example "
                                     f"(max_length={max_length}): no batch to train on")
                lazy = LazyLLMDataset(rows, template.encode, strict=False, random_state=42)
                dataset = PackingDataset(template, lazy, num_proc=1, packing_length=max_length,
                                         load_from_cache_file=False)
            else:
                dataset = LazyLLMDataset(rows, template.encode, strict=False, random_state=42)
            samples = [dataset[i] for i in range(len(dataset))]
        batch = template.data_collator(samples)
        return {k: v for k, v in batch.items() if hasattr(v, "shape")}


class SftTarget(_SwiftTarget):
    """``swift sft --template chatml`` defaults: ``loss_scale='default'`` (every assistant turn
    trained), right padding, over-long examples replaced (``truncation_strategy='delete'``)."""

    name = "ms-swift-sft"

    @property
    def options(self):
        return {"padding_free": PaddingFreeTarget}


class LastRoundTarget(_SwiftTarget):
    """``--loss_scale last_round``: only the last assistant turn is trained (declared
    ``turn_policy = "last"``)."""

    name = "ms-swift-sft-last-round"
    turn_policy = "last"
    template_kwargs = {"loss_scale": "last_round"}


class PaddingFreeTarget(_SwiftTarget):
    """``--padding_free true``: the collator concatenates the batch into one row with
    ``position_ids`` restarting at 0 per example and no attention mask; ms-swift's model call
    relies on flash-attention deriving ``cu_seqlens`` from them (``forward``: the CPU equivalent,
    a block-diagonal causal mask, see :func:`varlen_forward`)."""

    name = "ms-swift-sft-padding-free"
    packs = True
    template_kwargs = {"padding_free": True}

    def forward(self, model, batch):
        return varlen_forward(model, batch)


class PackingTarget(PaddingFreeTarget):
    """``--packing true``: ``PackingDataset`` bins whole examples into rows of ``max_length``
    (``packing_strategy='binpack'``), each row padding-free as above."""

    name = "ms-swift-sft-packing"
    template_kwargs = {}
    packing = True


class JinjaBackendTarget(_SwiftTarget):
    """``--template_backend jinja``: the tokenizer's own chat template renders the conversation.
    ms-swift documents the jinja backend for inference; ``swift sft`` accepts it in train
    mode without a warning."""

    name = "ms-swift-sft-jinja"
    tokenization = "whole"  # the whole rendering is tokenized at once
    template_kwargs = {"template_backend": "jinja"}
    known_failures = {
        c: "template_backend='jinja' in train mode: the whole rendered conversation is one "
           "context with loss_scale 1 (only the first token is left out): system, user turns "
           "and headers are trained. ms-swift documents the jinja backend for inference and "
           "swift sft accepts it without a warning (modelscope/ms-swift#5443, #9277)"
        for c in ("S3", "S10")
    }


# -- tool conversations (issue 23) ---------------------------------------------------------------


class _ToolsMixin:
    """Tool conversations the way ms-swift documents them (docs Agent-support): a row with
    ``messages`` and ``tools``; assistant ``tool_calls`` in the OpenAI shape and ``tool``
    messages, which ms-swift converts to its ``tool_call`` / ``tool_response`` roles
    (``normalize_openai_tool_calls``), merges consecutive calls into one assistant message and
    consecutive results into one tool turn through the template's ``agent_template`` (the
    default for ``qwen2_5`` / ``qwen3`` is ``hermes``). ``reasoning_content`` has no path in
    ms-swift's swift backend (the template renders ``content`` only): ``reasoning`` is left
    undeclared, S1 on Qwen3 shows what becomes of it."""

    tools = True
    tokenizer = "qwen2.5"

    def rows(self, conversations):
        from ._local import tool_rows

        return tool_rows(conversations)


class ToolsTarget(_ToolsMixin, _SwiftTarget):
    """``swift sft --template qwen2_5 --dataset tools.jsonl`` defaults (``agent_template``
    chosen by the template, ``hermes`` for Qwen; ``loss_scale='default'``)."""

    name = "ms-swift-sft-tools"


class ToolsIgnoreEmptyThinkTarget(_ToolsMixin, _SwiftTarget):
    """``--loss_scale ignore_empty_think``: as ``ms-swift-sft-tools`` with weight 0 on an
    assistant response that starts with an empty think block (``ignore_empty_think.json``: the
    Qwen3 template's empty ``<think></think>``; the documented way to leave it untrained)."""

    name = "ms-swift-sft-tools-ignore-empty-think"
    template_kwargs = {"loss_scale": "ignore_empty_think"}


class ToolsHermesLossScaleTarget(_ToolsMixin, _SwiftTarget):
    """``--loss_scale hermes``: as ``ms-swift-sft-tools`` with weight 2 on each
    ``<tool_call>...</tool_call>`` span (``loss_scale/config/hermes.json``)."""

    name = "ms-swift-sft-tools-hermes"
    template_kwargs = {"loss_scale": "hermes"}
