"""Truncation checks: over-long examples follow the declared policy (S9)."""

from __future__ import annotations

import hypothesis.strategies as st
import torch

from sft_conformance.reference import (
    count_trained,
)

from ..alignment import (
    IGNORE_INDEX,
    canonical_labels,
    document_segments,
    row_segments,
)
from ..context import Context
from ..failures import fail
from .engine import (
    batch_strategy,
    run_property,
)
from .labels import (
    expected_labels,
)
from .loss import random_logits
from .registry import register

# -- S9 -----------------------------------------------------------------------------------------


@register("S9")
def check_truncation(ctx: Context) -> None:
    """Over-long examples follow the declared policy: no NaN, no silent zero, no empty example
    (S9)."""
    tok = ctx.tokenizer()
    policy = ctx.decl.overlong
    shifted = ctx.decl.labels_shifted

    def prop(inputs):
        convs, delta = inputs
        exs, _ = expected_labels(ctx, convs, tok)
        longest = max(len(e) for e in exs)
        cap = max(8, longest + delta)
        overlong = [i for i, e in enumerate(exs) if len(e) > cap]
        try:
            batch = ctx.collate(convs, tok, cap)
        except Exception as exc:
            if policy == "raise" and overlong:
                return  # declared
            if policy == "raise" and not overlong:
                raise
            cause = getattr(exc, "original", exc)
            if type(cause).__name__ in ("NoTrainedPositionError",):
                return  # a loud refusal of a batch with nothing to train is conformant
            raise
        if policy == "raise" and overlong:
            fail(
                ctx,
                f"S9: the target declares overlong='raise' but collated example(s) "
                f"{overlong} longer than max_length={cap} without raising",
                conversations=convs,
                max_length=cap,
            )
        labels = batch["labels"]
        width = batch["input_ids"].shape[1]
        if width > cap and not ctx.decl.packs:
            fail(
                ctx,
                f"S9: the batch is {width} tokens wide, more than max_length={cap}",
                conversations=convs,
                max_length=cap,
            )
        if ctx.decl.packs:
            longest = max((len(seg) for seg in document_segments(batch)), default=0)
            if longest > cap:
                fail(
                    ctx,
                    f"S9: a packed document of {longest} tokens exceeds max_length={cap}: "
                    f"the over-long example was kept whole, although the target declares "
                    f"overlong={policy!r}",
                    conversations=convs,
                    max_length=cap,
                )
        for r in range(labels.shape[0]):
            n_row = count_trained(labels[r : r + 1], labels_shifted=shifted)
            if n_row == 0:
                fail(
                    ctx,
                    f"S9: batch row {r} has no trained position after truncation to "
                    f"max_length={cap}: it costs compute, teaches nothing and, alone in a "
                    "micro-batch, gives NaN or a silent zero loss. Drop it (and say so) "
                    "or truncate the prompt instead.",
                    conversations=convs,
                    max_length=cap,
                    row=r,
                )
        if policy == "truncate_response" and not ctx.decl.packs:
            for seg in row_segments(batch, [cap] * labels.shape[0]):
                ids = batch["input_ids"][seg.row, seg.start : seg.stop].tolist()
                i = next(
                    (k for k in overlong if exs[k].input_ids[: len(ids) - 1] == ids[:-1]), None
                )
                if i is None:
                    continue  # a row that was not truncated
                got = canonical_labels(batch, seg, labels_shifted=shifted)
                trained_ids = [ids[t] for t in range(len(ids)) if got[t] != IGNORE_INDEX]
                if trained_ids and trained_ids[-1] != tok.eos_token_id:
                    fail(
                        ctx,
                        f"S9: example {i} was truncated to {cap} tokens and lost its "
                        f"end-of-turn token {tok.eos_token!r}; the target declares "
                        "'truncate_response', which keeps it so the model still learns "
                        "to stop.",
                        conversations=convs,
                        max_length=cap,
                        example=i,
                    )
        if ctx.decl.has_loss:
            logits = random_logits(batch, len(tok), 0)
            value = ctx.loss(logits, labels)
            value = value.detach()
            if not torch.isfinite(value) or float(value) == 0.0:
                fail(
                    ctx,
                    f"S9: the loss of the truncated batch is {float(value)} (NaN or a silent zero)",
                    conversations=convs,
                    max_length=cap,
                )

    run_property(
        ctx,
        st.tuples(
            batch_strategy(ctx, max_size=2, adversarial=False), st.sampled_from([-12, -3, -1, 0, 1])
        ),
        prop,
        budget=0.4,
    )
    if ctx.decl.has_loss:
        _check_all_masked_loss(ctx, tok)


def _check_all_masked_loss(ctx, tok):
    """A micro-batch whose labels are all -100: finite, zero gradient, never NaN."""
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    batch = ctx.collate([conv], tok)
    labels = torch.full_like(batch["labels"], IGNORE_INDEX)
    logits = random_logits(batch, len(tok), 0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = ctx.loss(logits, labels)
        value_n = ctx.loss(logits.detach().clone().requires_grad_(), labels, num_items_in_batch=7)
    for v, how in ((value, "without"), (value_n, "with")):
        if not torch.isfinite(v):
            fail(
                ctx,
                f"S9: the loss of a micro-batch with no trained position is {float(v)} "
                f"({how} num_items_in_batch); one such micro-batch makes the whole step "
                "NaN. Return a graph-connected zero.",
                conversations=[conv],
                extra_repro="import torch\nlabels = torch.full_like(batch['labels'], -100)\n"
                "print(target.loss(torch.randn(*labels.shape, len(tokenizer)), "
                "labels))",
            )
