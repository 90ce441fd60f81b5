"""The plain-Python oracle: the SFT loss as the mean of a filtered list, with ``math`` only.

Seed 002: "the SFT loss is a mean of a filtered list". This is that list, written so that anyone
can check it by hand; the tensor loss in :mod:`.loss` must equal it (float64, 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

IGNORE_INDEX = -100


def log_softmax_at(row: Sequence[float], index: int) -> float:
    """log softmax(row)[index], with the log-sum-exp trick for stability."""
    peak = max(row)
    log_sum = peak + math.log(sum(math.exp(x - peak) for x in row))
    return row[index] - log_sum


def token_losses(logits: Sequence[Sequence[Sequence[float]]], labels: Sequence[Sequence[int]], *,
                 labels_shifted: bool = False) -> list[float]:
    """-log p(target) for every trained position of the batch, in row-major order."""
    losses = []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        for t in range(len(row_labels)):
            if labels_shifted:
                target, scores = row_labels[t], row_logits[t]
            else:
                if t == 0:
                    continue
                target, scores = row_labels[t], row_logits[t - 1]
            if target != IGNORE_INDEX:
                losses.append(-log_softmax_at(scores, target))
    return losses


def oracle_loss(logits, labels, *, labels_shifted: bool = False) -> float | None:
    """Mean of the filtered list; ``None`` when nothing is trained (there is no mean)."""
    losses = token_losses(logits, labels, labels_shifted=labels_shifted)
    if not losses:
        return None
    return math.fsum(losses) / len(losses)
