"""The SFT loss: masked, shifted next-token cross-entropy, averaged over trained positions.

Two label conventions exist (docs/specification.md#label-conventions):

* unshifted (Hugging Face): ``labels[t]`` is the target of ``logits[t - 1]``; the loss shifts.
* shifted (seed 001, torchtune): ``labels[t]`` is the target of ``logits[t]``; no shift here.

The loss of a batch is the sum of -log p(target) over every trained position of the batch divided
by the number of trained positions of the *whole step* (``num_items_in_batch`` when the step is
split into micro-batches, S7), never a mean of per-sequence or per-micro-batch means (S6).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


class EmptyTargetWarning(UserWarning):
    """A loss was asked for a batch that has no trained position."""


def align(logits: torch.Tensor, labels: torch.Tensor, *, labels_shifted: bool = False):
    """Return ``(logits, targets)`` with ``targets[b, t]`` the target of ``logits[b, t]``."""
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits (B, T, V) and labels (B, T); got logits {tuple(logits.shape)} "
            f"and labels {tuple(labels.shape)}"
        )
    if labels_shifted:
        return logits, labels
    return logits[:, :-1, :], labels[:, 1:]


def per_token_nll(logits: torch.Tensor, labels: torch.Tensor, *, labels_shifted: bool = False,
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """-log p(target) at every position, 0 where the target is ignored; shape of the aligned labels.

    Computed in float32 at least (bf16 logits are upcast), as every serious trainer does.
    """
    logits, targets = align(logits, labels, labels_shifted=labels_shifted)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).to(dtype),
        targets.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return nll.view(targets.shape)


def count_trained(labels: torch.Tensor, *, labels_shifted: bool = False,
                  ignore_index: int = IGNORE_INDEX) -> int:
    """Number of positions that contribute to the loss (the denominator of S6/S7)."""
    targets = labels if labels_shifted else labels[:, 1:]
    return int((targets != ignore_index).sum())


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, *, labels_shifted: bool = False,
             num_items_in_batch: int | torch.Tensor | None = None,
             ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Token-mean cross-entropy over trained positions.

    ``num_items_in_batch``: the number of trained positions of the whole optimizer step (all
    micro-batches, all ranks). When given, the loss is ``sum / num_items_in_batch`` so that summing
    the micro-batch losses gives the full batch's token mean. When omitted, the denominator is this
    batch's own count.

    A batch with no trained position returns a zero that stays connected to the graph (its
    gradient is zero, never NaN). Without ``num_items_in_batch`` that zero is not a mean of
    anything, so an :class:`EmptyTargetWarning` says so instead of reporting it silently.
    """
    nll = per_token_nll(logits, labels, labels_shifted=labels_shifted, ignore_index=ignore_index)
    total = nll.sum()
    if num_items_in_batch is not None:
        denominator = torch.as_tensor(num_items_in_batch, dtype=total.dtype, device=total.device)
        if float(denominator) <= 0:
            raise ValueError(f"num_items_in_batch must be positive, got {int(denominator)}")
        return total / denominator
    count = count_trained(labels, labels_shifted=labels_shifted, ignore_index=ignore_index)
    if count == 0:
        warnings.warn(
            "sft_loss: the batch has no trained position (every label is the ignore index); "
            "returning a graph-connected 0 that is not a mean. Pass num_items_in_batch when this "
            "is one micro-batch of a larger step.",
            EmptyTargetWarning,
            stacklevel=2,
        )
        return total * 0.0
    return total / count
