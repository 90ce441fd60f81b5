"""The one model-call helper of the model-level checks (S5, S8, S12): the target's own
``forward`` on both sides of every comparison, and a tolerance that follows the precision the
logits were computed in."""

from __future__ import annotations

import torch

from ..context import Context

#: relative tolerance of a logit comparison by the logits' dtype: torch.testing's per-dtype
#: defaults, widened for a whole-model comparison and scaled by the largest logit
LOGIT_RTOL = {torch.float64: 1e-7, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def fold_labels(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Labels for the check model's logits: with a vocabulary folded onto fewer rows (see
    ``assets.tiny_model(max_vocab=...)``) a label id ``i`` is column ``i % columns``; ignored
    positions (negative labels) stay as they are."""
    columns = logits.shape[-1]
    if labels.numel() == 0 or int(labels.max()) < columns:
        return labels
    return torch.where(labels >= 0, labels.remainder(columns), labels)


def logits_of(ctx: Context, batch: dict) -> torch.Tensor:
    """Logits the way the target calls the model (its ``forward``), else a hand-written loop's."""
    with torch.no_grad():
        return ctx.forward(batch)


def precision_noise(ctx: Context, batch: dict, seg, logits: torch.Tensor) -> float:
    """How far the target's own forward is from a plain float32 run of the same real tokens
    (the numerical noise of, say, bf16 autocast): a comparison tolerates a few times this."""
    ids = batch["input_ids"][seg.row, seg.start : seg.stop]
    with torch.no_grad():
        plain = ctx.model()(input_ids=ids[None]).logits[0].float()
    return float((logits[seg.row, seg.start : seg.stop].float() - plain).abs().max())


def compare_logits(got: torch.Tensor, want: torch.Tensor, *, noise: float = 0.0):
    """``(max difference, position of it, tolerance)`` of two (T, V) logit blocks."""
    dtype = (
        got.dtype if LOGIT_RTOL.get(got.dtype, 0) >= LOGIT_RTOL.get(want.dtype, 0) else want.dtype
    )
    scale = max(1.0, float(want.float().abs().max()))
    tol = max(LOGIT_RTOL.get(dtype, 1e-4) * scale, 8.0 * noise)
    diff = (got.float() - want.float()).abs().amax(dim=-1)
    if diff.numel() == 0:
        return 0.0, 0, tol
    return float(diff.max()), int(diff.argmax()), tol


def against_alone(ctx: Context, logits: torch.Tensor, seg, single: dict, sseg):
    """Compare the logits of one example in the batch with the same example collated alone,
    both through the target's forward: ``(max difference, position, tolerance)``."""
    alone = logits_of(ctx, single)
    noise = precision_noise(ctx, single, sseg, alone)
    return compare_logits(
        logits[seg.row, seg.start : seg.stop], alone[sseg.row, sseg.start : sseg.stop], noise=noise
    )
