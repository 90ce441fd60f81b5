"""The collator variants of the ablation: the reference and one bug each, small functions.

Every variant sees the same conversations, tokenized by ``reference.build_example``, and the same
examples at every step; they differ in which positions are trained, how the batch is laid out
(padded or packed), how the model is called and how the loss is averaged:

* ``correct``: the reference (:func:`reference.pad_examples`, token mean over the batch).
* ``no_prompt_mask``: every position is trained, the prompt included (seed 001's ablation; S3).
* ``mask_late``: the mask is one position too long, the first response token is not trained
  (seed 001's ``y[:P]``; S2).
* ``mask_early``: the mask is one position too short, the last prompt token (the assistant start)
  is trained (seed 001's ``y[:P-2]``; S3).
* ``pad_eq_eos``: pad == eos and the labels are masked by *value* (``labels[ids == pad] = -100``),
  so the end-of-turn token is never trained (S4; trl #1623).
* ``per_sequence``: correct labels, but the loss is the mean over sequences of each sequence's
  token mean (S6).
* ``packed``: the reference packer (:func:`reference.pack_examples`): whole documents packed into
  rows, positions restart, a block-diagonal causal mask. The baseline of the packing variants.
* ``pack_cross_attention``: packed rows with restarting positions but a plain causal mask, so a
  document attends to the documents before it in its row (S8; trl #1230).
* ``pack_cross_target``: packed rows whose first token of every document is a target of the
  previous document's last position (S8).
* ``pack_per_sequence``: packed rows and the loss is the mean of each *row's* token mean (S6
  under packing).
* ``micro_batch_means``: the step's batch in 4 length-grouped micro-batches (as
  ``group_by_length`` samplers build them), each divided by its own trained-token count, the 4
  means averaged (S7; trl #2175, transformers #24725). The same split with the step's count as
  denominator is exactly ``correct``.
* ``left_pad_no_positions``: left padding with position ids 0..T-1 counted over the padding
  (S5; trl PR #550).

:class:`VariantTarget` wraps any variant as a target of the suite, so the report can show which
checks catch it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from sft_conformance.reference import (
    IGNORE_INDEX,
    Collator,
    Example,
    count_trained,
    forward,
    pack_examples,
    pad_examples,
    per_token_nll,
    sft_loss,
)

#: Row length of the packed variants (tokens); the toy documents are 8-15 tokens long.
PACK_LENGTH = 64
#: Micro-batches per step of the accumulation variants.
MICRO_BATCHES = 4


def trained_as_is(ex: Example) -> list[bool]:
    return list(ex.trained)


def trained_everywhere(ex: Example) -> list[bool]:
    return [True] * len(ex)


def trained_one_late(ex: Example) -> list[bool]:
    """The first trained position of each assistant turn is dropped."""
    out = list(ex.trained)
    for span in ex.turns:
        out[span.start] = False
    return out


def trained_one_early(ex: Example) -> list[bool]:
    """The position before each assistant turn (the last prompt token) is trained as well."""
    out = list(ex.trained)
    for span in ex.turns:
        if span.start > 0:
            out[span.start - 1] = True
    return out


def token_mean_loss(logits, labels, num_items_in_batch=None):
    return sft_loss(logits, labels, num_items_in_batch=num_items_in_batch)


def per_sequence_loss(logits, labels, num_items_in_batch=None):
    """Mean over sequences (batch rows) of each sequence's token-mean loss (the S6 bug)."""
    nll = per_token_nll(logits, labels)
    counts = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)
    keep = counts > 0
    return (nll.sum(dim=1)[keep] / counts[keep]).mean()


def own_mean_loss(logits, labels, num_items_in_batch=None):
    """The micro-batch's own token mean: ``num_items_in_batch`` is ignored (the S7 bug)."""
    return sft_loss(logits, labels)


def plain_causal_forward(model, batch):
    """Positions as given, no attention mask: a packed row is one causal sequence."""
    return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits


def length_grouped(examples: Sequence[Example], k: int) -> list[list[Example]]:
    """``k`` micro-batches of similar lengths (sorted by length, then cut in order)."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i]), i))
    size = -(-len(order) // k)
    return [[examples[i] for i in order[s:s + size]] for s in range(0, len(order), size)]


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    trained: Callable[[Example], list[bool]] = trained_as_is
    pad_equals_eos: bool = False
    mask_labels_by_value: bool = False
    loss: Callable = token_mean_loss
    layout: str = "right"  # "right", "left_no_positions" or "packed"
    cross_document_target: bool = False
    forward: Callable = forward
    micro_batches: int = 1
    mean_of_micro_batch_means: bool = False
    #: the check of the specification this variant violates ("" for the baselines)
    violates: str = ""
    #: the correct variant with the same layout, the one to compare with
    baseline: str = "correct"

    def batch(self, examples: Sequence[Example], pad_token_id: int,
              capacity: int = PACK_LENGTH) -> dict:
        """The batch this variant's collator builds (HF unshifted labels)."""
        examples = [replace(ex, trained=self.trained(ex)) for ex in examples]
        if self.layout == "packed":
            batch = pack_examples(examples, capacity, pad_token_id)
            for key in ("rows", "cu_seqlens", "max_seqlen"):
                batch.pop(key)
            if self.cross_document_target:
                starts = (batch["position_ids"] == 0) & (batch["attention_mask"] == 1)
                starts[:, 0] = False
                batch["labels"][starts] = batch["input_ids"][starts]
            return batch
        side = "right" if self.layout == "right" else "left"
        batch = pad_examples(examples, pad_token_id, padding_side=side)
        if self.layout == "left_no_positions":
            batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(
                batch["input_ids"]).clone()
        if self.mask_labels_by_value:  # the DataCollatorForLanguageModeling idiom
            batch["labels"][batch["input_ids"] == pad_token_id] = IGNORE_INDEX
        return batch

    def train_step(self, model, examples: Sequence[Example], pad_token_id: int) -> float:
        """Forward and backward over one step's examples (gradients accumulate in ``model``).

        Returns the loss this variant optimizes, summed over its micro-batches.
        """
        groups = (length_grouped(examples, self.micro_batches) if self.micro_batches > 1
                  else [list(examples)])
        batches = [self.batch(g, pad_token_id) for g in groups]
        denominator = sum(count_trained(b["labels"]) for b in batches)
        total = 0.0
        for b in batches:
            logits = self.forward(model, b)
            if self.mean_of_micro_batch_means:
                loss = self.loss(logits, b["labels"]) / len(batches)
            else:
                loss = self.loss(logits, b["labels"], num_items_in_batch=denominator)
            loss.backward()
            total += float(loss.detach())
        return total


_S8 = "S8"
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("correct", "reference collator: response and end token trained, token mean"),
    Variant("no_prompt_mask", "no prompt mask: every position trained",
            trained=trained_everywhere, violates="S3"),
    Variant("mask_late", "off by one, mask too long: first response token not trained",
            trained=trained_one_late, violates="S2"),
    Variant("mask_early", "off by one, mask too short: last prompt token trained",
            trained=trained_one_early, violates="S3"),
    Variant("pad_eq_eos", "pad == eos, labels masked by value: end token never trained",
            pad_equals_eos=True, mask_labels_by_value=True, violates="S4"),
    Variant("per_sequence", "per-sequence loss averaging (mean of sequence means)",
            loss=per_sequence_loss, violates="S6"),
    Variant("packed", f"reference packer: rows of {PACK_LENGTH} tokens, positions restart, "
            "block-diagonal causal mask", layout="packed", baseline="packed"),
    Variant("pack_cross_attention", "packed, positions restart, plain causal mask: documents "
            "attend to the documents before them", layout="packed",
            forward=plain_causal_forward, violates=_S8, baseline="packed"),
    Variant("pack_cross_target", "packed: each document's first token is a target of the "
            "previous document's last position", layout="packed",
            cross_document_target=True, violates=_S8, baseline="packed"),
    Variant("pack_per_sequence", "packed, loss = mean of each row's token mean",
            layout="packed", loss=per_sequence_loss, violates="S6", baseline="packed"),
    Variant("micro_batch_means", f"{MICRO_BATCHES} length-grouped micro-batches, each divided "
            "by its own count, the means averaged", micro_batches=MICRO_BATCHES,
            loss=own_mean_loss, mean_of_micro_batch_means=True, violates="S7"),
    Variant("left_pad_no_positions", "left padding, position ids 0..T-1 counted over the "
            "padding", layout="left_no_positions", violates="S5"),
)}

#: The variants of the first (seed 001) ablation.
MASK_VARIANTS = ("correct", "no_prompt_mask", "mask_late", "mask_early", "pad_eq_eos",
                 "per_sequence")
#: The variants of the packing and loss-normalization ablation.
PACKING_VARIANTS = ("correct", "packed", "pack_cross_attention", "pack_cross_target",
                    "per_sequence", "pack_per_sequence", "micro_batch_means",
                    "left_pad_no_positions")


def get(names: Sequence[str] | None = None) -> list[Variant]:
    if not names:
        return [VARIANTS[n] for n in MASK_VARIANTS]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise KeyError(f"unknown variant(s) {unknown}: expected some of {', '.join(VARIANTS)}")
    return [VARIANTS[n] for n in names]


def trained_tokens(variant: Variant, ex: Example, tokenizer) -> str:
    """The trained tokens of one example, for reports: ``<hel[lo>olleh#]``-style."""
    batch = variant.batch([ex], tokenizer.pad_token_id)
    labels = batch["labels"][0].tolist()
    ids = batch["input_ids"][0].tolist()
    real = batch["attention_mask"][0].tolist()
    return "".join(f"[{tokenizer.decode([i])}]" if lab != IGNORE_INDEX else
                   tokenizer.decode([i]) for i, lab, m in zip(ids, labels, real) if m)


class VariantTarget:
    """An ablation variant as a target of the suite: the reference's examples, the variant's
    batch layout, forward and loss."""

    labels_shifted = False
    turn_policy = "all"
    overlong = "truncate_response"

    def __init__(self, variant: Variant | str):
        self.variant = VARIANTS[variant] if isinstance(variant, str) else variant
        self.name = f"ablation-{self.variant.name}"
        self.packs = self.variant.layout == "packed"

    def collate(self, conversations, tokenizer, max_length):
        examples = Collator(overlong=self.overlong).examples(conversations, tokenizer,
                                                             max_length)
        return self.variant.batch(examples, tokenizer.pad_token_id, capacity=max_length)

    def loss(self, logits, labels, num_items_in_batch=None):
        return self.variant.loss(logits, labels, num_items_in_batch=num_items_in_batch)

    def forward(self, model, batch):
        return self.variant.forward(model, batch)


def __getattr__(attr: str):
    """``sft_conformance.evaluation.variants:target_<variant>`` loads a variant as a target
    (``sft-conformance check sft_conformance.evaluation.variants:target_pack_cross_attention``)."""
    if attr.startswith("target_") and attr[len("target_"):] in VARIANTS:
        return VariantTarget(attr[len("target_"):])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def target_spec(variant: str) -> str:
    return f"{__name__}:target_{variant}"
