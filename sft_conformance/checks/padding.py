"""Padding checks: padding is never trained and never changes a real token (S5)."""

from __future__ import annotations

import hypothesis.strategies as st

from ..alignment import (
    canonical_labels,
    packed_rows,
    trained_padding,
)
from ..context import Context
from ..failures import fail, fail_at_position
from ..tables import show_token
from .engine import (
    batch_strategy,
    pad_eos_allowed,
    pad_eos_strategy,
    run_property,
    special_inputs,
)
from .labels import (
    collated,
    first_difference,
    segments_for,
)
from .model import against_alone, logits_of
from .registry import register

# -- S5 -----------------------------------------------------------------------------------------


@register("S5")
def check_padding_invariance(ctx: Context) -> None:
    """Padding is never trained, never hides a real token, and changes neither labels nor
    real tokens' logits (S5, docs/specification.md#s5)."""
    shifted = ctx.decl.labels_shifted

    def prop(inputs):
        convs, pad_eos = inputs
        tok = ctx.tokenizer(pad_equals_eos=pad_eos)
        batch, exs, want, segs = collated(ctx, convs, tok, pad_equals_eos=pad_eos)
        real = [s for s in segs if s is not None]
        padded = trained_padding(batch, real, labels_shifted=shifted)
        if padded:
            r, i = padded[0]
            fail(
                ctx,
                f"S5: padding is trained: batch row {r}, label index {i} is "
                f"{int(batch['labels'][r, i])} but its target is not a token of any "
                "conversation (padding). Padding must always carry the ignore index (-100).",
                conversations=convs,
                pad_equals_eos=pad_eos,
            )
        if "attention_mask" in batch:
            for i, seg in enumerate(segs):
                if seg is None:
                    continue
                hidden = (batch["attention_mask"][seg.row, seg.start : seg.stop] == 0).nonzero()
                if len(hidden):
                    t = int(hidden[0])
                    token = int(batch["input_ids"][seg.row, seg.start + t])
                    why = (
                        " pad == eos with attention_mask = ids != pad hides every end token: "
                        "build the mask from the lengths, not from the pad id."
                        if token == tok.pad_token_id
                        else ""
                    )
                    fail(
                        ctx,
                        f"S5: the attention mask hides a real token: example {i} (batch row "
                        f"{seg.row}), position {t}: '{show_token(tok, token)}' (id {token}) "
                        f"has attention_mask 0, so no later token attends to it and the "
                        f"logits of the real tokens change.{why}",
                        conversations=convs,
                        pad_equals_eos=pad_eos,
                        example=i,
                        position=t,
                    )
        if packed_rows(segs):
            return  # documents of a packed row are judged against each other by S8
        logits = logits_of(ctx, batch)
        for i, (conv, seg) in enumerate(zip(convs, segs)):
            if seg is None:
                continue  # S1 reports an example found nowhere
            single = ctx.collate([conv], tok)
            sseg = segments_for(ctx, single, exs[i : i + 1], [conv], tok=tok, want=want[i : i + 1])[
                0
            ]
            if sseg is None or len(sseg) != len(seg):
                continue  # collated alone, its ids differ: S1's finding
            got_labels = canonical_labels(batch, seg, labels_shifted=shifted)
            alone_labels = canonical_labels(single, sseg, labels_shifted=shifted)
            ids = batch["input_ids"][seg.row, seg.start : seg.stop].tolist()
            if got_labels != alone_labels:
                t = first_difference(got_labels, alone_labels)
                fail_at_position(
                    ctx,
                    "S5: batching with padding changed the labels",
                    tokenizer=tok,
                    example=i,
                    input_ids=ids,
                    got=got_labels,
                    expected=alone_labels,
                    position=t,
                    spec="the same labels as the example collated alone",
                    conversations=convs,
                    pad_equals_eos=pad_eos,
                    row=seg.row,
                )
            if "position_ids" in batch:
                pos = batch["position_ids"][seg.row, seg.start : seg.stop].tolist()
                alone = (
                    single["position_ids"][sseg.row, sseg.start : sseg.stop].tolist()
                    if "position_ids" in single
                    else list(range(len(seg)))
                )
                if pos != alone:
                    fail(
                        ctx,
                        f"S5: the position ids of example {i} (batch row {seg.row}) are "
                        f"{pos[:6]}..., collated alone {alone[:6]}...: padding shifted the "
                        "positions of the real tokens. Left padding needs position ids "
                        "counted from the first real token.",
                        conversations=convs,
                        pad_equals_eos=pad_eos,
                        example=i,
                    )
            diff, t, tol = against_alone(ctx, logits, seg, single, sseg)
            if diff > tol:
                fail(
                    ctx,
                    f"S5: padding changes the logits of real tokens: example {i} "
                    f"(batch row {seg.row}), position {t} (token "
                    f"'{show_token(tok, ids[t])}'): max |logit difference| {diff:.3g} "
                    f"(tolerance {tol:.3g}) between the padded batch and the example "
                    "collated alone, both through the target's forward. Check the "
                    "attention mask and position ids.",
                    conversations=convs,
                    pad_equals_eos=pad_eos,
                    example=i,
                    position=t,
                )

    # the pad and end tokens' own text in content, once per pad configuration (S5 collates
    # each example again alone, so one compact batch)
    special = [
        (batch, pad_eos)
        for pad_eos in (False, True)
        if pad_eos_allowed(ctx, pad_eos)
        for batch in special_inputs(
            ctx, ctx.tokenizer(pad_equals_eos=pad_eos), kinds=("pad", "eos", "end_of_turn"),
            compact=True,
        )
    ]
    run_property(
        ctx,
        st.tuples(batch_strategy(ctx, min_size=2, max_turns=2, agentic=True),
                  pad_eos_strategy(ctx)),
        prop,
        budget=0.3,
        special=special,
        split=lambda inputs: [([c], inputs[1]) for c in inputs[0]],
    )
