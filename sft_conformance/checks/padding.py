"""Padding checks: padding is never trained and never changes a real token (S5)."""

from __future__ import annotations

import hypothesis.strategies as st
import torch

from ..alignment import (
    canonical_labels,
    document_segments,
    trained_padding,
)
from ..context import Context
from ..failures import fail, fail_at_position
from ..tables import show_token
from .engine import (
    batch_strategy,
    pad_eos_strategy,
    require_fits,
    run_property,
)
from .labels import (
    expected_labels,
    segments_for,
)
from .registry import register

# -- S5 -----------------------------------------------------------------------------------------


@register("S5")
def check_padding_invariance(ctx: Context) -> None:
    """Padding is never trained and changes neither labels nor real tokens' logits (S5)."""

    def prop(inputs):
        convs, pad_eos = inputs
        tok = ctx.tokenizer(pad_equals_eos=pad_eos)
        require_fits(ctx, convs, tok)
        batch = ctx.collate(convs, tok)
        exs, _ = expected_labels(ctx, convs, tok)
        segs = segments_for(ctx, batch, exs, convs, tok=tok, pad_equals_eos=pad_eos)
        shifted = ctx.decl.labels_shifted
        real = document_segments(batch) if ctx.decl.packs else [s for s in segs if s is not None]
        padded = trained_padding(batch, real, labels_shifted=shifted)
        if padded:
            r, i = padded[0]
            fail(
                ctx,
                f"S5: padding is trained: batch row {r}, label index {i} is "
                f"{int(batch['labels'][r, i])} but its target is a padding position. "
                "Padding must always carry the ignore index (-100).",
                conversations=convs,
                pad_equals_eos=pad_eos,
            )
        if ctx.decl.packs:
            return  # documents of a packed row are judged against each other by S8
        model = ctx.model()
        with torch.no_grad():
            logits = ctx.forward(batch)
            for i, (conv, seg) in enumerate(zip(convs, segs)):
                if seg is None:
                    continue
                single = ctx.collate([conv], tok)
                sseg = segments_for(ctx, single, exs[i : i + 1], [conv], tok=tok)[0]
                got_labels = canonical_labels(batch, seg, labels_shifted=shifted)
                alone_labels = canonical_labels(single, sseg, labels_shifted=shifted)
                if got_labels != alone_labels:
                    t = next(
                        k
                        for k in range(min(len(got_labels), len(alone_labels)))
                        if got_labels[k] != alone_labels[k]
                    )
                    fail_at_position(
                        ctx,
                        "S5: batching with padding changed the labels",
                        tokenizer=tok,
                        example=i,
                        input_ids=batch["input_ids"][seg.row, seg.start : seg.stop].tolist(),
                        got=got_labels,
                        expected=alone_labels,
                        position=t,
                        spec="the same labels as the example collated alone",
                        conversations=convs,
                        pad_equals_eos=pad_eos,
                        row=seg.row,
                    )
                n = len(seg)
                if "position_ids" in batch:
                    pos = batch["position_ids"][seg.row, seg.start : seg.stop].tolist()
                    if pos != list(range(n)):
                        fail(
                            ctx,
                            f"S5: the position ids of example {i} (batch row {seg.row}) "
                            f"start at {pos[0]}, not 0: padding shifted the positions of "
                            f"the real tokens ({pos[:6]}...). Left padding needs "
                            "position ids counted from the first real token.",
                            conversations=convs,
                            pad_equals_eos=pad_eos,
                            example=i,
                        )
                ids = batch["input_ids"][seg.row, seg.start : seg.stop]
                plain = model(input_ids=ids[None]).logits[0]  # the example with no padding
                a = logits[seg.row, seg.start : seg.stop]
                diff = (a.float() - plain.float()).abs().amax(dim=-1)
                if float(diff.max()) > 1e-4 * max(1.0, float(plain.abs().max())):
                    t = int(diff.argmax())
                    fail(
                        ctx,
                        f"S5: padding changes the logits of real tokens: example {i} "
                        f"(batch row {seg.row}), position {t} (token "
                        f"'{show_token(tok, ids[t])}'): max |logit difference| "
                        f"{float(diff.max()):.3g} against the example with no padding. "
                        "Check the attention mask and position ids"
                        + (
                            " (pad == eos: an attention mask computed as input_ids != "
                            "pad_id hides the real end tokens)"
                            if pad_eos
                            else ""
                        )
                        + ".",
                        conversations=convs,
                        pad_equals_eos=pad_eos,
                        example=i,
                        position=t,
                    )

    run_property(
        ctx,
        st.tuples(batch_strategy(ctx, min_size=2, max_turns=2), pad_eos_strategy(ctx)),
        prop,
        budget=0.3,
    )
