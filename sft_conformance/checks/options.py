"""Option checks: batch size and declared math-neutral options change nothing (S12)."""

from __future__ import annotations

import torch

from sft_conformance.reference import (
    count_trained,
)

from ..alignment import (
    canonical_labels,
)
from ..context import Context
from ..failures import fail, fail_at_position
from .engine import (
    batch_strategy,
    require_fits,
    run_property,
)
from .labels import (
    expected_labels,
    first_difference,
    segments_for,
)
from .model import fold_labels
from .registry import register

# -- S12 ----------------------------------------------------------------------------------------


@register("S12")
def check_option_invariance(ctx: Context) -> None:
    """Batch size and declared math-neutral options change neither trained tokens nor loss
    (S12, docs/specification.md#s12)."""
    tok = ctx.tokenizer()
    shifted = ctx.decl.labels_shifted
    variants = {}
    from ..target import declared

    for name, factory in ctx.decl.options.items():
        variant = factory()
        variants[name] = (variant, declared(variant))

    def trained_sets(target_ctx_decl, batch, exs):
        segs = segments_for(ctx, batch, exs, None, tok=tok)
        return [
            None
            if s is None
            else canonical_labels(batch, s, labels_shifted=target_ctx_decl.labels_shifted)
            for s in segs
        ]

    def model_loss(target, decl, batch):
        with torch.no_grad():
            if decl.has_forward:
                logits = target.forward(ctx.model(), batch)
            else:
                logits = (
                    ctx.forward(batch)
                    if target is ctx.target
                    else ctx.model()(
                        **{
                            k: batch[k]
                            for k in ("input_ids", "attention_mask", "position_ids")
                            if k in batch
                        }
                    ).logits
                )
            return float(target.loss(logits, fold_labels(batch["labels"], logits)))

    def prop(convs):
        require_fits(ctx, convs, tok)
        exs, _ = expected_labels(ctx, convs, tok)
        batch = ctx.collate(convs, tok)
        base = trained_sets(ctx.decl, batch, exs)
        # batch size: each conversation alone
        for i, conv in enumerate(convs):
            single = ctx.collate([conv], tok)
            alone = trained_sets(ctx.decl, single, exs[i : i + 1])[0]
            if base[i] is not None and alone is not None and alone != base[i]:
                t = first_difference(alone, base[i])
                fail_at_position(
                    ctx,
                    "S12: the trained tokens depend on the batch size",
                    tokenizer=tok,
                    example=i,
                    input_ids=exs[i].input_ids,
                    got=base[i],
                    expected=alone,
                    position=t,
                    spec="the example collated alone",
                    conversations=convs,
                )
        if ctx.decl.has_loss:
            together = model_loss(ctx.target, ctx.decl, batch)
            sums, counts = 0.0, 0
            for conv in convs:
                single = ctx.collate([conv], tok)
                n = count_trained(single["labels"], labels_shifted=shifted)
                if n:
                    sums += model_loss(ctx.target, ctx.decl, single) * n
                    counts += n
            if counts and abs(together - sums / counts) > 1e-4 * max(1.0, abs(together)):
                fail(
                    ctx,
                    f"S12: the loss depends on the batch size: {together:.6f} for the "
                    f"batch, {sums / counts:.6f} from its examples one at a time "
                    "(token-weighted)",
                    conversations=convs,
                )
        for name, (variant, vdecl) in variants.items():
            try:
                vbatch = validate_variant(variant, convs, tok, ctx)
            except Exception as exc:
                fail(ctx, f"S12: option {name!r} raised in collate: {exc}", conversations=convs)
            vsets = trained_sets(vdecl, vbatch, exs)
            for i, (a, b) in enumerate(zip(base, vsets)):
                if a is not None and b is not None and a != b:
                    t = first_difference(a, b)
                    fail_at_position(
                        ctx,
                        f"S12: option {name!r} changes the trained tokens",
                        tokenizer=tok,
                        example=i,
                        input_ids=exs[i].input_ids,
                        got=b,
                        expected=a,
                        position=t,
                        spec="the same labels as without the option",
                        conversations=convs,
                    )
            if ctx.decl.has_loss and vdecl.has_loss:
                a, b = model_loss(ctx.target, ctx.decl, batch), model_loss(variant, vdecl, vbatch)
                if abs(a - b) > 1e-4 * max(1.0, abs(a)):
                    fail(
                        ctx,
                        f"S12: option {name!r} changes the loss of the tiny model on the "
                        f"same conversations: {b:.6f} with it, {a:.6f} without",
                        conversations=convs,
                        option=name,
                    )

    run_property(
        ctx, batch_strategy(ctx, min_size=2, max_turns=2, adversarial=False, agentic=True), prop,
        budget=0.3
    )


def validate_variant(variant, convs, tok, ctx):
    from ..context import validate_batch

    return validate_batch(
        variant.collate(convs, tok, ctx.max_length), getattr(variant, "name", "option")
    )
