"""transformers targets: the library's own collators, chat-template masks and causal-LM loss.

Each target turns conversations into what a transformers user feeds the library (token ids from
``tokenizer.apply_chat_template``, as that library's users do) and then calls the library's public
collator; nothing of the collator or the loss is reimplemented here. Labels are unshifted (the
Hugging Face convention: the model shifts).

``forward(model, batch)`` calls the model the way ``transformers.Trainer`` does: every key of the
collated batch except ``labels`` is passed as a keyword argument (the Trainer passes the labels
too, only for the model to compute its own loss, which these targets take from ``loss``).
"""

from __future__ import annotations

from contextlib import contextmanager

IGNORE_INDEX = -100
_MODEL_KEYS = ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k",
               "max_length_q", "max_length_k")


def chat_ids(tokenizer, conversation, max_length=None, **kwargs):
    """What a transformers user feeds a collator: ``apply_chat_template(tokenize=True)``, with
    ``truncation=True, max_length=...`` (the tokenizer cuts the end)."""
    trunc = {"truncation": True, "max_length": max_length} if max_length else {}
    out = tokenizer.apply_chat_template(list(conversation), tokenize=True, return_dict=True,
                                        **trunc, **kwargs)
    return out


@contextmanager
def padding_side(tokenizer, side):
    old = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = old


def trainer_forward(model, batch):
    """``model(**batch)`` without labels, as ``transformers.Trainer.compute_loss`` calls it."""
    kwargs = {k: batch[k] for k in _MODEL_KEYS if k in batch}
    return model(**kwargs, use_cache=False).logits


class _TransformersTarget:
    labels_shifted = False
    turn_policy = "all"
    overlong = "truncate"
    tokenizer = "chatml"

    def forward(self, model, batch):
        return trainer_forward(model, batch)


class LMCollatorTarget(_TransformersTarget):
    """``transformers.DataCollatorForLanguageModeling(tokenizer, mlm=False)`` on whole chat texts.

    Exercises: each conversation is tokenized with ``tokenizer.apply_chat_template(conv,
    tokenize=True, truncation=True, max_length=max_length)`` (the end is cut) and the collator is
    given ``[{"input_ids": ids}, ...]``. It pads on the tokenizer's side (right) and derives the
    labels from the input ids, masking every position whose *value* is the pad id. So every token
    of the conversation is trained: system and user turns, role headers and template glue too (S3,
    S10 violated; S11 holds trivially since nothing is masked). The pad id is ``<pad>`` here, so
    the end-of-turn ``<|im_end|>`` stays trained (S4 holds). ``forward``: ``model(input_ids,
    attention_mask)`` as the Trainer calls it.
    """

    name = "transformers-lm-collator"
    trains_after_eot = True
    pad_equals_eos = False  # the pad == eos configuration is its own target, below
    known_failures = {
        "S3": "DataCollatorForLanguageModeling(mlm=False) trains every non-pad token: system, "
              "user, role headers and template glue are trained",
        "S10": "every token of every turn is trained, user turns included",
    }

    def collate(self, conversations, tokenizer, max_length):
        from transformers import DataCollatorForLanguageModeling

        features = [{"input_ids": chat_ids(tokenizer, c, max_length)["input_ids"]}
                    for c in conversations]
        with padding_side(tokenizer, "right"):
            batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)(features)
        return dict(batch)


class LMCollatorPadEosTarget(LMCollatorTarget):
    """``DataCollatorForLanguageModeling(mlm=False)`` with pad == eos (``<|im_end|>``).

    Same call as ``transformers-lm-collator``, on a tokenizer whose pad token is its eos (the usual
    ``tokenizer.pad_token = tokenizer.eos_token`` line; the adapter sets it on the tokenizer it is
    given for the duration of the call, and restores it). The collator masks labels by *value*, so
    every ``<|im_end|>``, the end-of-turn token, gets label -100: the model never learns to stop
    (S4 violated), on top of the prompt being trained (S3, S10).
    """

    name = "transformers-lm-collator-pad-eos"
    pad_equals_eos = True
    known_failures = {
        **LMCollatorTarget.known_failures,
        "S4": "pad == eos and the collator masks labels equal to the pad id: every <|im_end|> "
              "(end-of-turn) label is -100",
    }

    def collate(self, conversations, tokenizer, max_length):
        old = tokenizer.pad_token
        tokenizer.pad_token = tokenizer.eos_token
        try:
            return super().collate(conversations, tokenizer, max_length)
        finally:
            tokenizer.pad_token = old


PROMPT_LENGTH_S2 = (
    "this verdict comes from the adapter's own prompt-length recipe (how a typical user builds "
    "labels for this collator), not from transformers' code: the prompt is masked by the length "
    "of its own tokenization; when BPE merges the generation prompt's last token with the first "
    "response token ('assistant\\nhello' is one token with the bundled BPE, built to merge glue "
    "with content), that first response token is masked. Whether real tokenizers merge there "
    "decides whether users see it")


CUT_S9 = ("ids and labels are cut to max_length and kept: an example whose trained tokens all lie "
          "past max_length stays in the batch with no trained position")


def prompt_masked_features(conversations, tokenizer, max_length):
    """Labels the way a typical transformers user builds them for ``DataCollatorForSeq2Seq``: the
    prompt (everything before the last assistant message, rendered with
    ``add_generation_prompt=True``) is masked, the rest of the full conversation is trained, then
    both are cut to ``max_length``."""
    features = []
    for conv in conversations:
        last = max(j for j, m in enumerate(conv) if m["role"] == "assistant")
        prompt = tokenizer.apply_chat_template(list(conv[:last]), tokenize=True, return_dict=True,
                                               add_generation_prompt=True)["input_ids"]
        ids = chat_ids(tokenizer, conv)["input_ids"]
        n = len(prompt)
        labels = [IGNORE_INDEX] * n + list(ids[n:])
        features.append({"input_ids": list(ids[:max_length]), "labels": labels[:max_length]})
    return features


class Seq2SeqCollatorTarget(_TransformersTarget):
    """``transformers.DataCollatorForSeq2Seq(tokenizer)`` with right padding on prompt-masked
    labels.

    Exercises: features built as a typical user does (see :func:`prompt_masked_features`: the
    prompt is ``apply_chat_template(conv[:last], add_generation_prompt=True)``, masked with -100;
    every token after it is trained; ids and labels are then cut to ``max_length``), padded by
    ``DataCollatorForSeq2Seq`` (input ids with the pad id, labels with ``label_pad_token_id=-100``,
    attention mask, on ``tokenizer.padding_side``). Only the last assistant turn is trained
    (declared ``turn_policy="last"``) and the newline after its ``<|im_end|>`` is trained too
    (declared ``trains_after_eot``). ``forward``: ``model(input_ids, attention_mask)``, no
    position ids, as the Trainer calls it.
    """

    name = "transformers-seq2seq-collator"
    turn_policy = "last"
    trains_after_eot = True
    side = "right"
    known_failures = {"S2": PROMPT_LENGTH_S2, "S9": CUT_S9}

    def collate(self, conversations, tokenizer, max_length):
        from transformers import DataCollatorForSeq2Seq

        features = prompt_masked_features(conversations, tokenizer, max_length)
        with padding_side(tokenizer, self.side):
            batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX,
                                           return_tensors="pt")(features)
        return dict(batch)


class Seq2SeqCollatorLeftTarget(Seq2SeqCollatorTarget):
    """``DataCollatorForSeq2Seq`` with ``tokenizer.padding_side = "left"`` (set for the call).

    Same features as ``transformers-seq2seq-collator``; the collator pads input ids, labels and
    attention mask on the left. The batch has no ``position_ids`` and the Trainer passes none, so
    the model numbers positions from the first (pad) column: real tokens of a padded row get
    shifted positions (with RoPE only relative positions matter, so logits move by rounding only).
    """

    name = "transformers-seq2seq-collator-left"
    side = "left"


class FlatteningCollatorTarget(_TransformersTarget):
    """``transformers.DataCollatorWithFlattening()``: padding-free, one row of concatenated
    examples with ``position_ids`` restarting at 0.

    Exercises: features are the prompt-masked ones of ``transformers-seq2seq-collator`` (last turn
    trained, newline after the end token trained). The collator concatenates them, sets the first
    label of each example to ``separator_id=-100`` and returns ``input_ids``, ``labels``,
    ``position_ids`` (1, N) and no attention mask. ``forward``: ``model(input_ids,
    position_ids)`` with no attention mask, as the Trainer calls it; transformers then derives the
    document boundaries from the position ids restarting at 0.
    """

    name = "transformers-flattening-collator"
    turn_policy = "last"
    trains_after_eot = True
    packs = True
    known_failures = {"S2": PROMPT_LENGTH_S2, "S9": CUT_S9}
    flash_kwargs = False

    def collate(self, conversations, tokenizer, max_length):
        from transformers import DataCollatorWithFlattening

        features = prompt_masked_features(conversations, tokenizer, max_length)
        collator = DataCollatorWithFlattening(return_flash_attn_kwargs=self.flash_kwargs)
        return dict(collator(features, return_tensors="pt"))


class FlatteningCollatorFlashKwargsTarget(FlatteningCollatorTarget):
    """``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``: as
    ``transformers-flattening-collator``, plus ``cu_seq_lens_q/k`` and ``max_length_q/k`` in the
    batch, which ``forward`` passes to the model as the Trainer does (used by flash attention;
    the SDPA and eager backends ignore them and use the position ids)."""

    name = "transformers-flattening-collator-fa-kwargs"
    flash_kwargs = True


class ModelLossTarget(Seq2SeqCollatorTarget):
    """The model's own loss: ``transformers.loss.loss_utils.ForCausalLMLoss``, the function
    ``LlamaForCausalLM(..., labels=labels, num_items_in_batch=n)`` uses (``model.loss_function``).

    ``collate`` and ``forward`` are those of ``transformers-seq2seq-collator``. ``loss(logits,
    labels, num_items_in_batch)`` calls ``ForCausalLMLoss(logits, labels, vocab_size,
    num_items_in_batch=num_items_in_batch)``: it upcasts to float32, shifts the labels, sums the
    cross-entropy and divides by ``num_items_in_batch`` when given (the Trainer passes the step's
    trained-token count), else takes the mean over this batch's trained positions.
    """

    name = "transformers-model-loss"
    pass_num_items = True

    def loss(self, logits, labels, num_items_in_batch=None):
        from transformers.loss.loss_utils import ForCausalLMLoss

        n = num_items_in_batch if self.pass_num_items else None
        return ForCausalLMLoss(logits, labels, vocab_size=logits.shape[-1], num_items_in_batch=n)


class ModelLossNoNumItemsTarget(ModelLossTarget):
    """The model's own loss without ``num_items_in_batch``: ``ForCausalLMLoss(logits, labels,
    vocab_size)`` whatever the caller passes, i.e. what a model whose forward does not accept loss
    kwargs (or a custom loop calling ``model(..., labels=labels)``) computes: each micro-batch's
    own token mean, so k micro-batches give a mean of means (S7 violated: transformers #24725)."""

    name = "transformers-model-loss-no-num-items"
    pass_num_items = False
    known_failures = {
        "S2": PROMPT_LENGTH_S2,
        "S9": CUT_S9,
        "S7": "without num_items_in_batch each micro-batch is divided by its own trained-token "
              "count: a mean of micro-batch means, not the step's token mean",
    }


class AssistantMaskTarget(_TransformersTarget):
    """``tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True,
    return_assistant_tokens_mask=True)``: labels are the ids where ``assistant_masks`` is 1.

    Meant for a template with ``{% generation %}`` tags (``tokenizer = "chatml-generation"``:
    content and ``<|im_end|>`` inside the tags). Ids and mask are cut to ``max_length`` by the
    tokenizer (``truncation=True``); padding with ``DataCollatorForSeq2Seq`` (right, labels -100).
    A template without tags gives an all-zero mask (transformers warns), so nothing is trained.
    ``forward``: ``model(input_ids, attention_mask)``.
    """

    name = "transformers-assistant-mask"
    tokenizer = "chatml-generation"
    known_failures = {"S9": CUT_S9}

    def collate(self, conversations, tokenizer, max_length):
        from transformers import DataCollatorForSeq2Seq

        features = []
        for conv in conversations:
            out = chat_ids(tokenizer, conv, max_length, return_assistant_tokens_mask=True)
            ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
            labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
            features.append({"input_ids": ids, "labels": labels})
        with padding_side(tokenizer, "right"):
            batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX,
                                           return_tensors="pt")(features)
        return dict(batch)
