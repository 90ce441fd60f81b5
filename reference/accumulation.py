"""Gradient accumulation without changing the loss (S7).

A step of k micro-batches must give the full batch's token mean: each micro-batch's summed loss
is divided by the trained positions of the *whole step*, and the k results are summed. Dividing by
each micro-batch's own count and averaging the k means (the bug of trl #2175 / transformers
#24725) weights a token of a short micro-batch more than one of a long micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from .loss import count_trained, sft_loss


def step_denominator(micro_batches: Sequence[Mapping], *, labels_shifted: bool = False) -> int:
    """Trained positions of the whole step: the ``num_items_in_batch`` of every micro-batch."""
    return sum(count_trained(mb["labels"], labels_shifted=labels_shifted) for mb in micro_batches)


def forward(model, batch: Mapping) -> torch.Tensor:
    """Call a Hugging Face causal LM on a batch the way the reference trainer does; return logits.

    A packed batch (one with ``document_ids``) gets an explicit block-diagonal causal mask, so
    isolation between documents never depends on the attention backend guessing it from
    ``position_ids``.
    """
    return model(**model_inputs(model, batch)).logits


def model_inputs(model, batch: Mapping) -> dict:
    """The keyword arguments :func:`forward` gives the model: ids, positions, and the
    block-diagonal causal mask of a packed batch (else its attention mask)."""
    from .packing import block_causal_mask

    kwargs = {"input_ids": batch["input_ids"]}
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
    if "document_ids" in batch:
        dtype = next(model.parameters()).dtype
        kwargs["attention_mask"] = block_causal_mask(batch["document_ids"],
                                                     batch.get("attention_mask"), dtype=dtype)
    elif "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"]
    return kwargs


def accumulate_gradients(model, micro_batches: Sequence[Mapping], *, labels_shifted: bool = False,
                         loss_fn: Callable = sft_loss, forward_fn: Callable = forward
                         ) -> torch.Tensor:
    """Run backward over every micro-batch with the step denominator; return the step's loss.

    Gradients accumulate in ``model``'s ``.grad`` (zero them first). The returned loss equals the
    full batch's token mean.
    """
    denominator = step_denominator(micro_batches, labels_shifted=labels_shifted)
    total = torch.zeros(())
    for mb in micro_batches:
        logits = forward_fn(model, mb)
        loss = loss_fn(logits, mb["labels"], labels_shifted=labels_shifted,
                       num_items_in_batch=denominator)
        loss.backward()
        total = total + loss.detach()
    return total
