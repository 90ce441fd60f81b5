"""LLaMA-Factory targets: ``llamafactory-cli train`` with ``stage: sft``, as its SFT workflow
(``llamafactory.train.sft.workflow.run_sft``) builds the data: ``get_train_args(config)``,
``load_tokenizer(model_args)``, ``get_template_and_fix_tokenizer``, ``get_dataset(...,
stage="sft")`` (the supervised dataset processor; the packed one with ``packing: true``) and
``SFTDataCollatorWith4DAttentionMask``.

LLaMA-Factory 0.9.5 (``tox -e llamafactory``; it needs ``transformers<=5.6``). The config is the
YAML a user writes, as a dict::

    model_name_or_path: <dir>   stage: sft   do_train: true   finetuning_type: full
    dataset: conv   dataset_dir: <dir with dataset_info.json>   template: chatml
    cutoff_len: N   [mask_history: true]   [packing: true]   [neat_packing: true]

The dataset is a local ``sharegpt``-format file with OpenAI-style ``messages`` (``role``/
``content`` tags) declared in ``dataset_info.json``. The model directory holds the suite's
tokenizer and the tiny model's ``config.json`` (no weights are loaded; ``model=None`` is given to
the collator, which only uses it for Qwen2-VL position ids; ``load_model`` would set
``model_args.compute_dtype``, float32 on CPU without bf16, which the adapter passes instead).
The template is LLaMA-Factory's own ``chatml`` (``qwen`` for the Qwen2.5 tokenizer: the same
rendering with Qwen's default system prompt).

What LLaMA-Factory does: ``template.encode_multiturn`` renders each (prompt, response) pair with
its formatters and tokenizes each piece apart (declared ``tokenization = "per_turn"``); the
response slot is ``{{content}}<|im_end|>\\n``, so the newline after the end token is trained
(declared ``trains_after_eot``); ``cutoff_len`` is shared between prompt and response of each
turn by ``infer_seqlen`` (the end of a long response is cut: declared ``overlong =
"truncate"``). Labels are unshifted (the Hugging Face convention).

LLaMA-Factory's multimodal plugin imports ``torchaudio`` at module level. The registry has no
torchaudio build that loads with CPU torch 2.13 (2.11.0 is the newest; its extension fails to
load, as torchvision's CUDA build does), so the tox environment removes both and the adapter
registers an empty ``torchaudio`` module when none can be imported; text-only SFT never calls it.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import io
import json
import os
import sys
import tempfile
import types

from ._local import saved_tokenizer_dir, tokenizer_family

INSTALL_HINT = ("tox -e llamafactory (pip install torch==2.13.0 llamafactory==0.9.5 "
                "'transformers<=5.6', then pip uninstall torchvision torchaudio)")
IGNORE_INDEX = -100
TEMPLATES = {"chatml": "chatml", "chatml-generation": "chatml", "qwen2.5": "qwen",
             "qwen3": "qwen3", "llama3": "llama3"}
DATASET_INFO = {"conv": {"file_name": "train.json", "formatting": "sharegpt",
                         "columns": {"messages": "messages"},
                         "tags": {"role_tag": "role", "content_tag": "content",
                                  "user_tag": "user", "assistant_tag": "assistant",
                                  "system_tag": "system"}}}
#: tool conversations: LLaMA-Factory's ``openai`` formatting (``OpenAIDatasetConverter``), which
#: reads OpenAI-style ``messages`` with ``tool_calls`` and ``tool`` messages and a ``tools``
#: column, and turns them into its ``function_call`` / ``observation`` roles itself
DATASET_INFO_OPENAI = {"conv": {"file_name": "train.json", "formatting": "openai",
                                "columns": {"messages": "messages", "tools": "tools"},
                                "tags": {"role_tag": "role", "content_tag": "content",
                                         "user_tag": "user", "assistant_tag": "assistant",
                                         "observation_tag": "tool",
                                         "function_tag": "function_call",
                                         "system_tag": "system"}}}


def _torchaudio_stand_in() -> None:
    try:
        import torchaudio  # noqa: F401
    except Exception:
        module = types.ModuleType("torchaudio")
        module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        module.__doc__ = "sft-conformance stand-in: no torchaudio loads with CPU torch 2.13"
        sys.modules["torchaudio"] = module


def model_dir(tokenizer) -> str:
    from sft_conformance.assets import tiny_model

    path = saved_tokenizer_dir(tokenizer)
    if not os.path.exists(os.path.join(path, "config.json")):
        tiny_model(tokenizer).config.save_pretrained(path)
    return path


#: LLaMA-Factory's ``load_tokenizer(model_args)`` result per model arguments (text-only: no
#: processor), so that a check's hundred collates do not read a 151k-token tokenizer from disk
#: twice each (AutoTokenizer and AutoProcessor: 11 s a call on Qwen2.5); a training run loads it
#: once too
_TOKENIZERS: dict[str, object] = {}


def _tokenizer_module(load_tokenizer, model_args) -> dict:
    """``load_tokenizer(model_args)`` as LLaMA-Factory returns it, with a fresh copy of the
    tokenizer each call (``get_template_and_fix_tokenizer`` changes the one it gets): loaded
    once per model arguments but ``model_max_length`` (set from ``cutoff_len``, applied to each
    copy as ``patch_tokenizer`` does) where there is no multimodal processor, else every
    call."""
    import dataclasses

    from sft_conformance.assets import copy_tokenizer

    # get_train_args sets model_max_length to cutoff_len, and every check draws its own
    # max_length: key without it, and do what patch_tokenizer does with it on each copy
    length = model_args.model_max_length
    key = repr(sorted((k, repr(v)) for k, v in dataclasses.asdict(model_args).items()
                      if k != "model_max_length"))
    if key not in _TOKENIZERS:
        model_args.model_max_length = None
        try:
            module = load_tokenizer(model_args)
        finally:
            model_args.model_max_length = length
        if module.get("processor") is not None:
            return load_tokenizer(model_args)
        _TOKENIZERS[key] = module["tokenizer"]
    tokenizer = copy_tokenizer(_TOKENIZERS[key])
    if length is not None and tokenizer.model_max_length < length:
        tokenizer.model_max_length = length  # patch_tokenizer: "enlarge the tokenizer max length"
    return {"tokenizer": tokenizer, "processor": None}


class _LlamaFactoryTarget:
    labels_shifted = False
    turn_policy = "all"
    overlong = "truncate"
    trains_after_eot = True
    tokenization = "per_turn"
    requires = ("llamafactory",)
    install_hint = INSTALL_HINT
    tokenizer = "chatml"
    #: keys of the user's YAML config beyond the common ones
    config: dict = {}
    #: the dataset_info.json entry of the dataset
    dataset_info: dict = DATASET_INFO

    def rows(self, conversations) -> list[dict]:
        """The rows of the dataset file, as a user writes them."""
        return [{"messages": [dict(m) for m in c]} for c in conversations]

    def train_config(self, tokenizer, max_length, data_dir, out_dir):
        family = tokenizer_family(tokenizer)
        if family not in TEMPLATES:
            raise ValueError(f"no LLaMA-Factory template renders the {family!r} template")
        return {"model_name_or_path": model_dir(tokenizer), "stage": "sft", "do_train": True,
                "finetuning_type": "full", "dataset": "conv", "dataset_dir": data_dir,
                "template": TEMPLATES[family], "cutoff_len": max_length,
                "output_dir": out_dir, "overwrite_cache": True, "report_to": "none",
                "use_cpu": True, **self.config}

    def collate(self, conversations, tokenizer, max_length):
        _torchaudio_stand_in()
        import torch
        from llamafactory.data import (
            SFTDataCollatorWith4DAttentionMask,
            get_dataset,
            get_template_and_fix_tokenizer,
        )
        from llamafactory.hparams import get_train_args
        from llamafactory.model import load_tokenizer

        from ._datasets import in_memory_datasets

        with tempfile.TemporaryDirectory(prefix="sft-conformance-llamafactory-") as d:
            data_dir, out_dir = os.path.join(d, "data"), os.path.join(d, "out")
            os.makedirs(data_dir)
            with open(os.path.join(data_dir, "train.json"), "w", encoding="utf-8") as f:
                json.dump(self.rows(conversations), f)
            with open(os.path.join(data_dir, "dataset_info.json"), "w", encoding="utf-8") as f:
                json.dump(self.dataset_info, f)
            # the dataset LLaMA-Factory loads from the JSON file is mapped with caching off
            # (overwrite_cache): each map's fingerprint, which hashes the map function and the
            # tokenizer it closes over, names nothing (62% of a packed row on qwen2.5)
            with in_memory_datasets(), contextlib.redirect_stdout(io.StringIO()):
                model_args, data_args, training_args, _ft, _gen = get_train_args(
                    self.train_config(tokenizer, max_length, data_dir, out_dir))
                module = _tokenizer_module(load_tokenizer, model_args)
                template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
                dataset = get_dataset(template, model_args, data_args, training_args,
                                      stage="sft", **module)["train_dataset"]
                collator = SFTDataCollatorWith4DAttentionMask(
                    template=template, model=None, pad_to_multiple_of=8,
                    label_pad_token_id=IGNORE_INDEX, block_diag_attn=model_args.block_diag_attn,
                    neat_packing=data_args.neat_packing, attn_implementation="sdpa",
                    compute_dtype=model_args.compute_dtype or torch.float32, **module)
                if len(dataset) == 0:
                    raise ValueError("LLaMA-Factory's preprocessing kept no example "
                                     f"(cutoff_len={max_length})")
                batch = collator([dataset[i] for i in range(len(dataset))])
        out = {k: v for k, v in batch.items() if hasattr(v, "shape")}
        mask = out.get("attention_mask")
        if mask is not None and mask.dim() == 4:  # neat_packing: the 4-D block-diagonal mask
            out["attention_mask_4d"] = out.pop("attention_mask")
        return out


class SftTarget(_LlamaFactoryTarget):
    """``stage: sft`` with the defaults (``train_on_prompt: false``, ``mask_history: false``):
    every assistant turn and its ``<|im_end|>\\n`` trained."""

    name = "llamafactory-sft"


class MaskHistoryTarget(_LlamaFactoryTarget):
    """``mask_history: true``: only the last turn is trained (declared ``turn_policy="last"``)."""

    name = "llamafactory-sft-mask-history"
    turn_policy = "last"
    config = {"mask_history": True}


class PackingTarget(_LlamaFactoryTarget):
    """``packing: true`` (``neat_packing: false``): examples are concatenated into rows of
    ``cutoff_len`` by ``greedy_knapsack``; the collator returns a plain attention mask and no
    position ids (LLaMA-Factory documents neat_packing as the isolating variant)."""

    name = "llamafactory-sft-packing"
    packs = True
    config = {"packing": True}


class NeatPackingTarget(_LlamaFactoryTarget):
    """``packing: true, neat_packing: true``: the collator turns the per-document attention mask
    into a 4-D block-diagonal mask (kept as ``attention_mask_4d``); ``forward`` gives it to the
    model as the attention mask, as the trainer does with sdpa/eager attention."""

    name = "llamafactory-sft-neat-packing"
    packs = True
    config = {"packing": True, "neat_packing": True}

    def forward(self, model, batch):
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask_4d"]}
        if "position_ids" in batch:
            kwargs["position_ids"] = batch["position_ids"]
        return model(**kwargs, use_cache=False).logits


class ToolsTarget(_LlamaFactoryTarget):
    """Tool conversations as LLaMA-Factory documents them for OpenAI-style data: ``formatting:
    openai`` with a ``tools`` column (the schemas as a JSON string, LLaMA-Factory's documented
    column type) and the messages as they are (``tool_calls`` on assistant messages, ``tool``
    messages). LLaMA-Factory's ``OpenAIDatasetConverter`` turns an assistant message with
    ``tool_calls`` into a ``function_call`` message whose content is the JSON list of the calls,
    merges consecutive ``tool`` messages into one ``observation``, and the ``qwen`` template's
    formatters render them (``<tool_call>`` blocks, ``<tool_response>`` in a user turn). The
    template follows the tokenizer (``qwen`` for qwen2.5, ``qwen3`` for qwen3 with its default
    ``enable_thinking: true``). The converter reads no ``reasoning_content``; it is left in the
    data as a user has it."""

    name = "llamafactory-sft-tools"
    tools = True
    #: S15 judges what becomes of the data's ``reasoning_content`` on qwen3 (the template is
    #: LLaMA-Factory's ``qwen3``, a ``ReasoningTemplate``); the converter does not read it
    reasoning = "template"
    dataset_info = DATASET_INFO_OPENAI

    def rows(self, conversations) -> list[dict]:
        from sft_conformance.reference.conversation import split

        out = []
        for c in conversations:
            messages, tools = split(c)
            out.append({"messages": [dict(m) for m in messages],
                        "tools": json.dumps(tools, ensure_ascii=False) if tools else ""})
        return out


class ToolsNoThinkingTarget(ToolsTarget):
    """:class:`ToolsTarget` with ``enable_thinking: false``. On the qwen3 tokenizer (LLaMA-Factory's
    ``qwen3`` template, a ``ReasoningTemplate``) the empty ``<think>\\n\\n</think>\\n\\n`` that
    it adds to an assistant response without ``<think>`` goes into the prompt (masked) instead
    of the response (trained); the ``qwen`` template of Qwen2.5 has no reasoning path, so there
    it is :class:`ToolsTarget` again (run it on qwen3)."""

    name = "llamafactory-sft-tools-no-thinking"
    tokenizer = "qwen3"
    config = {"enable_thinking": False}
