"""torchtune targets: ``padded_collate_sft``, ``PackedDataset`` + ``padded_collate_packed``, and
the fine-tuning recipes' label shift, loss and token counting.

torchtune is an optional extra (``pip install 'sft-conformance[torchtune]'``, pinned to
torchtune 0.6.1 because it pins torch/torchao); every target declares ``requires =
("torchtune",)`` and imports it only inside its methods, so without it every check is skipped with
the install hint.

From conversation to torchtune sample: torchtune's own model tokenizers are per model family, so
the adapter renders the conversation with the Hugging Face tokenizer it is given
(``apply_chat_template(return_assistant_tokens_mask=True)``, a template with ``{% generation %}``
tags: ``tokenizer = "chatml-generation"``), cuts it with ``torchtune.data.truncate`` the way
torchtune's tokenizers do (``truncate(tokens, max_len, eos_id)`` and ``truncate(mask, max_len,
True)``: the last kept token becomes the eos, masked), and builds the sample the way
``torchtune.datasets.SFTDataset`` does (``labels = where(mask, CROSS_ENTROPY_IGNORE_IDX,
tokens)``). Everything after that is torchtune's.

Labels: the recipes (``full_finetune_single_device``) shift the collated labels themselves,
``labels = hstack(labels[..., 1:], ignore)``; the targets return those shifted labels
(``labels_shifted = True``), as the recipe feeds them to the loss.
"""

from __future__ import annotations

INSTALL_HINT = "pip install 'sft-conformance[torchtune]'"
IGNORE_INDEX = -100


def torchtune_samples(conversations, tokenizer, max_length):
    """``[{"tokens", "labels"}]`` as ``SFTDataset`` yields them (see the module docstring)."""
    from torchtune.data import truncate

    samples = []
    for conv in conversations:
        out = tokenizer.apply_chat_template(list(conv), tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        tokens = list(out["input_ids"])
        masked = [not m for m in out["assistant_masks"]]  # torchtune: True = not trained
        if max_length and len(tokens) > max_length:
            tokens = truncate(tokens, max_length, tokenizer.eos_token_id)
            masked = truncate(masked, max_length, True)
        labels = [IGNORE_INDEX if m else t for t, m in zip(tokens, masked)]
        samples.append({"tokens": tokens, "labels": labels})
    return samples


def recipe_shift(labels):
    """The recipe's shift: ``torch.hstack((labels[..., 1:], ignore_labels_cache[:B]))``."""
    import torch

    ignore = torch.full((labels.shape[0], 1), IGNORE_INDEX, dtype=labels.dtype)
    return torch.hstack((labels[..., 1:], ignore))


class _TorchtuneTarget:
    labels_shifted = True
    turn_policy = "all"
    overlong = "truncate"
    requires = ("torchtune",)
    install_hint = INSTALL_HINT
    tokenizer = "chatml-generation"
    num_output_chunks = 8

    def loss(self, logits, labels, num_items_in_batch=None):
        """The recipe's loss arithmetic: ``CEWithChunkedOutputLoss`` (the token mean of this
        batch, logits chunked as the recipe's model outputs them) times the batch's trained-token
        count ``current_num_tokens = (labels != ignore_index).sum()``; the recipe sums these over
        the step's micro-batches and scales the gradients by ``1 / num_tokens`` (the step's
        count), which is ``num_items_in_batch`` here. Without it: the plain batch mean."""
        from torchtune.modules.loss import CEWithChunkedOutputLoss

        loss_fn = CEWithChunkedOutputLoss(num_output_chunks=self.num_output_chunks)
        chunks = list(logits.float().chunk(self.num_output_chunks, dim=1))
        mean = loss_fn(chunks, labels)
        if num_items_in_batch is None:
            return mean
        current_num_tokens = (labels != loss_fn.ignore_index).sum()
        return mean * current_num_tokens / num_items_in_batch


class PaddedCollateSFTTarget(_TorchtuneTarget):
    """``torchtune.data.padded_collate_sft(batch, padding_idx=pad_id,
    ignore_idx=CROSS_ENTROPY_IGNORE_IDX)``: right padding of ``tokens`` and ``labels``.

    Returns ``input_ids`` (torchtune's ``tokens``) and the recipe-shifted ``labels``; no attention
    mask (the recipe gives the model none: padding sits after the real tokens, causal attention
    keeps it out of their logits). ``forward``: ``model(input_ids)``, as the recipe calls
    ``model(tokens=...)``. ``loss``: see :meth:`_TorchtuneTarget.loss`.
    """

    name = "torchtune-padded-collate-sft"

    def collate(self, conversations, tokenizer, max_length):
        from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, padded_collate_sft

        batch = padded_collate_sft(torchtune_samples(conversations, tokenizer, max_length),
                                   padding_idx=tokenizer.pad_token_id,
                                   ignore_idx=CROSS_ENTROPY_IGNORE_IDX)
        return {"input_ids": batch["tokens"], "labels": recipe_shift(batch["labels"])}

    def forward(self, model, batch):
        return model(input_ids=batch["input_ids"], use_cache=False).logits


class PackedTarget(_TorchtuneTarget):
    """``torchtune.datasets.PackedDataset(samples, max_seq_len=max_length,
    padding_idx=pad_id, split_across_pack=False)`` then
    ``torchtune.data.padded_collate_packed``.

    Greedy packing in data order; a sample that does not fit moves whole to the next pack. Each
    pack is padded to ``max_length``; ``input_pos`` restart at 0 per sample (returned as
    ``position_ids``) and continue through the padding; ``mask`` is torchtune's block-causal mask
    (kept in the batch under ``mask``). Labels are shifted over the whole pack by the recipe, so
    a sample's last position is asked to predict the next sample's first label (ignored when that
    first token is untrained, as a template's header is). ``forward``: ``model(input_ids,
    position_ids=input_pos, attention_mask=<mask as a 4-D additive mask>)``, the Hugging Face
    equivalent of the recipe's ``model(tokens, mask=mask, input_pos=input_pos)``.
    """

    name = "torchtune-packed"
    packs = True
    split_across_pack = False

    def collate(self, conversations, tokenizer, max_length):
        from torchtune.data import padded_collate_packed
        from torchtune.datasets import PackedDataset

        packed = PackedDataset(torchtune_samples(conversations, tokenizer, max_length),
                               max_seq_len=max_length, padding_idx=tokenizer.pad_token_id,
                               split_across_pack=self.split_across_pack)
        batch = padded_collate_packed([packed[i] for i in range(len(packed))])
        return {"input_ids": batch["tokens"], "labels": recipe_shift(batch["labels"]),
                "position_ids": batch["input_pos"], "mask": batch["mask"]}

    def forward(self, model, batch):
        import torch

        mask = batch["mask"]
        if not isinstance(mask, torch.Tensor):  # a flex-attention BlockMask (CUDA)
            mask = mask.to_dense()
        dtype = next(model.parameters()).dtype
        allowed = mask.bool()[:, None] if mask.dim() == 3 else mask.bool()
        additive = torch.zeros(allowed.shape, dtype=dtype).masked_fill(
            ~allowed, torch.finfo(dtype).min)
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                     attention_mask=additive, use_cache=False).logits


class PackedSplitTarget(PackedTarget):
    """``PackedDataset(..., split_across_pack=True)``: a sample that does not fit is split, its
    rest starting the next pack. torchtune numbers positions ``x % max_seq_len`` within a sample,
    so the rest continues its positions instead of restarting (declared ``splits_documents``)."""

    name = "torchtune-packed-split"
    split_across_pack = True
    splits_documents = True


# -- tool conversations (Qwen2.5) -------------------------------------------------------------


def torchtune_qwen25_files(tokenizer) -> tuple[str, str]:
    """``(vocab.json, merges.txt)`` of the Hugging Face Qwen tokenizer given (the files
    ``torchtune.models.qwen2_5.qwen2_5_tokenizer(path, merges_file)`` reads), written once per
    tokenizer from its ``tokenizer.json`` (the byte-level BPE's vocabulary and merges; nothing
    is downloaded)."""
    import os

    from ._local import saved_tokenizer_dir

    where = saved_tokenizer_dir(tokenizer)
    vocab, merges = os.path.join(where, "vocab.json"), os.path.join(where, "merges.txt")
    if not (os.path.exists(vocab) and os.path.exists(merges)):
        import json

        model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"not a byte-level BPE tokenizer: {model.get('type')}")
        with open(vocab, "w", encoding="utf-8") as f:
            json.dump(model["vocab"], f, ensure_ascii=False)
        with open(merges, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for pair in model["merges"]:
                f.write((" ".join(pair) if isinstance(pair, list) else pair) + "\n")
    return vocab, merges


class OpenAIToolsToMessages:
    """A message transform from OpenAI-style tool conversations to torchtune ``Message``s, as
    torchtune's docs ask a user to write one for data its built-in transforms do not read
    (``OpenAIToMessages`` 0.6.1 reads only ``role`` and ``content``: it drops ``tool_calls``
    and cannot take ``content: None``). torchtune's representation of a tool flow: each call an
    assistant message with ``ipython=True`` whose content is the call
    (``{"name": ..., "arguments": ...}``, the Qwen format its Qwen2.5 tokenizer wraps in
    ``<tool_call>``), content beside the calls an assistant message before them, each result an
    ``ipython`` message. ``masked`` follows the rule of every torchtune message transform with
    ``train_on_input=False``: ``masked = role != "assistant"``. ``tools`` schemas and
    ``reasoning_content`` have no place in a torchtune ``Message``: they are not carried."""

    def __init__(self, train_on_input: bool = False):
        self.train_on_input = train_on_input

    def __call__(self, sample):
        import json

        from torchtune.data import Message

        from sft_conformance.reference.conversation import call_parts

        out = []
        for m in sample["messages"]:
            role = m["role"]
            masked = role != "assistant" and not self.train_on_input
            if role == "tool":
                out.append(Message(role="ipython", content=m.get("content") or "",
                                   masked=masked, eot=False))
                continue
            calls = m.get("tool_calls") or []
            if m.get("content") or not calls:
                out.append(Message(role=role, content=m.get("content") or "", masked=masked,
                                   eot=not calls))
            for k, call in enumerate(calls):
                name, args = call_parts(call)
                out.append(Message(role="assistant", masked=masked, ipython=True,
                                   eot=k == len(calls) - 1,
                                   content=json.dumps({"name": name, "arguments": args},
                                                      ensure_ascii=False)))
        return {"messages": out}


class ToolsTarget(_TorchtuneTarget):
    """Tool conversations through torchtune's own Qwen2.5 tokenizer
    (``torchtune.models.qwen2_5.qwen2_5_tokenizer(path=vocab.json, merges_file=merges.txt,
    max_seq_len=max_length)``, the files taken from the suite's Qwen2.5 tokenizer): the
    messages from :class:`OpenAIToolsToMessages`, then the tokenizer as the model transform
    (``tokenizer({"messages": ...})``: ``tokenize_messages``, whose ``ipython`` messages render
    as ``<tool_response>`` blocks in one user turn and ``ipython=True`` assistant messages as
    ``<tool_call>`` blocks, each message's header and end tokens taking its mask), labels as
    ``SFTDataset`` builds them (``where(mask, CROSS_ENTROPY_IGNORE_IDX, tokens)``),
    ``padded_collate_sft`` and the recipe's shift.

    ``SFTDataset``'s ``SFTTransform`` would also run ``validate_messages``, which raises on an
    assistant message that does not follow a user message (every answer after a tool result,
    every call after content): it is left out, as torchtune's own tool tests do (they call
    ``tokenize_messages``)."""

    name = "torchtune-tools"
    tokenizer = "qwen2.5"
    tools = True
    reasoning = None
    #: the tokenizer's ``max_seq_len``: ``null`` in torchtune's shipped Qwen2.5 configs
    #: (``recipes/configs/qwen2_5/*.yaml``), so nothing is truncated
    bounded = False

    def model_transform(self, tokenizer, max_length):
        from torchtune.models.qwen2_5 import qwen2_5_tokenizer

        vocab, merges = torchtune_qwen25_files(tokenizer)
        max_seq_len = (max_length or None) if self.bounded else None
        key = (vocab, max_seq_len)
        cache = self.__dict__.setdefault("_tokenizers", {})
        if key not in cache:
            cache[key] = qwen2_5_tokenizer(path=vocab, merges_file=merges,
                                           max_seq_len=max_seq_len)
        return cache[key]

    def collate(self, conversations, tokenizer, max_length):
        from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, padded_collate_sft

        from sft_conformance.reference.conversation import messages_of

        transform = OpenAIToolsToMessages()
        model_transform = self.model_transform(tokenizer, max_length)
        samples = []
        for conv in conversations:
            out = model_transform(transform({"messages": messages_of(conv)}))
            tokens, mask = out["tokens"], out["mask"]
            labels = [CROSS_ENTROPY_IGNORE_IDX if m else t for t, m in zip(tokens, mask)]
            samples.append({"tokens": tokens, "labels": labels})
        # the recipe pads with its tokenizer's pad_id (Qwen2.5: <|endoftext|>), not the suite's
        batch = padded_collate_sft(samples, padding_idx=model_transform.pad_id,
                                   ignore_idx=CROSS_ENTROPY_IGNORE_IDX)
        # the recipe gives the model no attention mask (right padding, causal attention); the
        # mask returned says which positions are padding, since torchtune's last token is
        # <|im_end|>, which the suite's pad == eos tokenizer would read as padding
        import torch

        lengths = torch.tensor([len(s["tokens"]) for s in samples])
        mask = (torch.arange(batch["tokens"].shape[1])[None] < lengths[:, None]).long()
        return {"input_ids": batch["tokens"], "labels": recipe_shift(batch["labels"]),
                "attention_mask": mask}

    def forward(self, model, batch):
        return model(input_ids=batch["input_ids"], use_cache=False).logits


class ToolsMaxSeqLenTarget(ToolsTarget):
    """:class:`ToolsTarget` with the tokenizer's ``max_seq_len`` set to ``max_length`` (what a
    user sets to bound sequence lengths): ``tokenize_messages`` then passes the mask through
    ``truncate(mask, max_seq_len, True)`` even when nothing is cut, which sets the last mask
    entry, the final end token's, to True (masked): torchtune#2792."""

    name = "torchtune-tools-max-seq-len"
    bounded = True
