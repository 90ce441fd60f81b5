"""The collator variants of the ablation: the reference and five bugs, each a small function.

Every variant sees the same conversations, tokenized by ``reference.build_example``; they differ
only in which positions are trained (and, for one, in how the loss averages):

* ``correct``: the reference (:func:`reference.pad_examples`, token mean over the batch).
* ``no_prompt_mask``: every position is trained, the prompt included (seed 001's ablation).
* ``mask_late``: the mask is one position too long, the first response token is not trained
  (seed 001's ``y[:P]``; S2).
* ``mask_early``: the mask is one position too short, the last prompt token (the assistant start)
  is trained (seed 001's ``y[:P-2]``; S3).
* ``pad_eq_eos``: pad == eos and the labels are masked by *value* (``labels[ids == pad] = -100``),
  so the end-of-turn token is never trained (S4; trl #1623).
* ``per_sequence``: correct labels, but the loss is the mean over sequences of each sequence's
  token mean (S6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sft_conformance.reference import IGNORE_INDEX, Example, pad_examples, per_token_nll, sft_loss


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


def token_mean_loss(logits, labels):
    return sft_loss(logits, labels)


def per_sequence_loss(logits, labels):
    """Mean over sequences of each sequence's token-mean loss (the S6 bug)."""
    nll = per_token_nll(logits, labels)
    counts = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)
    keep = counts > 0
    return (nll.sum(dim=1)[keep] / counts[keep]).mean()


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    trained: Callable[[Example], list[bool]] = trained_as_is
    pad_equals_eos: bool = False
    mask_labels_by_value: bool = False
    loss: Callable = token_mean_loss

    def batch(self, examples: Sequence[Example], pad_token_id: int) -> dict:
        """Right-padded batch (HF unshifted labels) as this variant's collator builds it."""
        examples = [replace(ex, trained=self.trained(ex)) for ex in examples]
        batch = pad_examples(examples, pad_token_id)
        if self.mask_labels_by_value:  # the DataCollatorForLanguageModeling idiom
            batch["labels"][batch["input_ids"] == pad_token_id] = IGNORE_INDEX
        return batch


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("correct", "reference collator: response and end token trained, token mean"),
    Variant("no_prompt_mask", "no prompt mask: every position trained",
            trained=trained_everywhere),
    Variant("mask_late", "off by one, mask too long: first response token not trained",
            trained=trained_one_late),
    Variant("mask_early", "off by one, mask too short: last prompt token trained",
            trained=trained_one_early),
    Variant("pad_eq_eos", "pad == eos, labels masked by value: end token never trained",
            pad_equals_eos=True, mask_labels_by_value=True),
    Variant("per_sequence", "per-sequence loss averaging (mean of sequence means)",
            loss=per_sequence_loss),
)}


def get(names: Sequence[str] | None = None) -> list[Variant]:
    if not names:
        return list(VARIANTS.values())
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise KeyError(f"unknown variant(s) {unknown}: expected some of {', '.join(VARIANTS)}")
    return [VARIANTS[n] for n in names]


def trained_tokens(variant: Variant, ex: Example, tokenizer) -> str:
    """The trained tokens of one example, for reports: ``<hel[lo>olleh#]``-style."""
    batch = variant.batch([ex], tokenizer.pad_token_id)
    labels = batch["labels"][0].tolist()
    return "".join(f"[{tokenizer.decode([i])}]" if lab != IGNORE_INDEX else
                   tokenizer.decode([i]) for i, lab in zip(ex.input_ids, labels))
