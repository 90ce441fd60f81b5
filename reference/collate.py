"""Collators: labels from trained positions, truncation, right padding for training and left
padding for inference.

Labels are padded *by position* (every pad position gets the ignore index), never by comparing
token values with the pad id, so pad == eos cannot mask a real end-of-turn token (S4, S5).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import NoTrainedPositionError, OverlongError
from .loss import IGNORE_INDEX
from .masks import Example, build_example

OVERLONG_POLICIES = ("raise", "drop", "truncate_prompt", "truncate_response")


class DroppedExampleWarning(UserWarning):
    """An example was left out of a batch; the warning names it and says why."""


def labels_for(example: Example, *, labels_shifted: bool = False) -> list[int]:
    """Labels of one example in either convention (docs/specification.md#label-conventions)."""
    ids, trained = example.input_ids, example.trained
    if labels_shifted:
        return [ids[t + 1] if trained[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)] + [
            IGNORE_INDEX]
    return [ids[t] if trained[t] else IGNORE_INDEX for t in range(len(ids))]


def truncate(example: Example, max_length: int, policy: str, *, index: int = 0) -> Example | None:
    """Apply the declared over-long policy (S9). Returns ``None`` when the example is dropped.

    * ``raise``: :class:`OverlongError` naming the example.
    * ``drop``: the example is left out (the caller warns).
    * ``truncate_prompt``: tokens are removed from the start; the end of the conversation stays.
    * ``truncate_response``: tokens are removed from the end, and the last kept position becomes
      the end-of-turn token of the turn that was cut, trained, so the model still learns to stop.
      When not even one content token of that turn would survive, the example is dropped.

    An example left with no trained position is never kept: it is dropped (or raised under
    ``raise``), so a batch never holds an example that contributes nothing (S9).
    """
    if policy not in OVERLONG_POLICIES:
        raise ValueError(f"overlong policy must be one of {OVERLONG_POLICIES}, got {policy!r}")
    if len(example) <= max_length:
        return example
    if policy == "raise":
        raise OverlongError(f"{len(example)} tokens exceed max_length={max_length} (policy "
                            "'raise'; declare 'drop', 'truncate_prompt' or 'truncate_response')",
                            example=index, field="input_ids")
    if policy == "drop":
        return None
    if policy == "truncate_prompt":
        cut = len(example) - max_length
        out = Example(example.input_ids[cut:], example.trained[cut:], [], example.text)
    else:
        ids, trained = example.input_ids[:max_length], example.trained[:max_length]
        cut_turn = next((s for s in example.turns if s.start < max_length < s.stop), None)
        if cut_turn is not None:
            if max_length - 1 <= cut_turn.start or cut_turn.end_token is None:
                return None  # no content token would survive beside the end token
            ids[-1] = example.input_ids[cut_turn.end_token]
            trained[-1] = True
        out = Example(ids, trained, [], example.text)
    return out if out.n_trained else None


@dataclass
class Collator:
    """The reference SFT collator (right padding, HF or shifted labels).

    >>> from sft_conformance.assets import load_tokenizer
    >>> tok = load_tokenizer("chatml")
    >>> batch = Collator()([[{"role": "user", "content": "hi"},
    ...                      {"role": "assistant", "content": "hello"}]], tok, max_length=64)
    >>> sorted(batch)
    ['attention_mask', 'input_ids', 'labels', 'position_ids']
    """

    labels_shifted: bool = False
    policy: str = "all"
    overlong: str = "truncate_response"
    pad_to_multiple_of: int | None = None
    padding_side: str = "right"
    reasoning: str | None = None  # the reasoning rule (conversation.apply_reasoning_rule)

    def examples(self, conversations: Sequence, tokenizer, max_length: int) -> list[Example]:
        kept, dropped = [], []
        for i, conv in enumerate(conversations):
            ex = truncate(build_example(conv, tokenizer, policy=self.policy, index=i,
                                        reasoning=self.reasoning),
                          max_length, self.overlong, index=i)
            (kept if ex is not None else dropped).append(ex if ex is not None else i)
        if dropped:
            warnings.warn(f"dropped example(s) {dropped}: longer than max_length={max_length} "
                          f"under policy {self.overlong!r}, or left with no trained position",
                          DroppedExampleWarning, stacklevel=3)
        if not kept:
            raise NoTrainedPositionError(
                f"every example of the batch was dropped ({dropped}); nothing to train",
                field="conversations")
        return kept

    def __call__(self, conversations: Sequence, tokenizer, max_length: int) -> dict:
        examples = self.examples(conversations, tokenizer, max_length)
        pad = tokenizer.pad_token_id
        if pad is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token")
        return pad_examples(examples, pad, labels_shifted=self.labels_shifted,
                            padding_side=self.padding_side,
                            pad_to_multiple_of=self.pad_to_multiple_of)


def _round_up(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


def pad_examples(examples: Sequence[Example], pad_token_id: int, *, labels_shifted: bool = False,
                 padding_side: str = "right", pad_to_multiple_of: int | None = None) -> dict:
    """Stack examples into a batch: input_ids, labels, attention_mask, position_ids (B, T).

    Right padding is the training layout. Left padding (inference) keeps position ids counting
    from 0 at the first real token, so the logits at real positions do not change (S5).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    width = _round_up(max(len(e) for e in examples), pad_to_multiple_of)
    B = len(examples)
    input_ids = torch.full((B, width), pad_token_id, dtype=torch.long)
    labels = torch.full((B, width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((B, width), dtype=torch.long)
    position_ids = torch.zeros((B, width), dtype=torch.long)
    for b, ex in enumerate(examples):
        n = len(ex)
        row = slice(0, n) if padding_side == "right" else slice(width - n, width)
        input_ids[b, row] = torch.tensor(ex.input_ids, dtype=torch.long)
        labels[b, row] = torch.tensor(labels_for(ex, labels_shifted=labels_shifted),
                                      dtype=torch.long)
        attention_mask[b, row] = 1
        position_ids[b, row] = torch.arange(n)
        if padding_side == "right":
            position_ids[b, n:] = torch.arange(n, width)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
            "position_ids": position_ids}


def collate(conversations: Sequence, tokenizer, max_length: int, **options) -> dict:
    """Functional form of :class:`Collator`: ``collate(convs, tok, 512, labels_shifted=True)``."""
    return Collator(**options)(conversations, tokenizer, max_length)
