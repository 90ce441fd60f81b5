"""Packing checks: packed documents are isolated and unchanged (S8)."""

from __future__ import annotations

import math

import torch

from sft_conformance.reference import collate as reference_collate
from sft_conformance.reference import forward as reference_forward

from ..alignment import (
    IGNORE_INDEX,
    canonical_labels,
    match_documents,
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
)
from .registry import register

# -- S8 -----------------------------------------------------------------------------------------


@register("S8", "packs")
def check_packing_equivalence(ctx: Context) -> None:
    """Packed documents restart positions, never attend or predict across a boundary (S8)."""
    tok = ctx.tokenizer()
    shifted = ctx.decl.labels_shifted

    def prop(convs):
        require_fits(ctx, convs, tok)
        exs, want = expected_labels(ctx, convs, tok)
        # a cap that forces at least two rows, so packing must decide where documents go
        lengths = [len(e) for e in exs]
        cap = max(max(lengths), math.ceil(sum(lengths) * 0.6))
        batch = ctx.collate(convs, tok, cap)
        matches, unmatched = match_documents(batch, [e.input_ids for e in exs])
        for i, seg in enumerate(matches):
            if seg is None and not ctx.decl.splits_documents:
                pieces = [(s.row, s.start, s.stop) for s in unmatched]
                fail(
                    ctx,
                    f"S8: example {i} is not one whole document of the packed batch: it "
                    f"was split across rows or positions (pieces (row, start, stop): "
                    f"{pieces[:6]}). A split document loses its beginning as context.",
                    conversations=convs,
                    example=i,
                )
        with torch.no_grad():
            logits = ctx.forward(batch)
            for i, seg in enumerate(matches):
                if seg is None:
                    continue
                n = len(seg)
                if "position_ids" not in batch:
                    fail(
                        ctx,
                        "S8: a packed batch without position_ids: documents after the "
                        "first get positions that continue across the boundary",
                        conversations=convs,
                    )
                pos = batch["position_ids"][seg.row, seg.start : seg.stop].tolist()
                if pos != list(range(n)):
                    fail(
                        ctx,
                        f"S8: positions of example {i} (row {seg.row}, tokens "
                        f"{seg.start}..{seg.stop - 1}) do not restart at 0: {pos[:8]}...",
                        conversations=convs,
                        example=i,
                    )
                got = canonical_labels(batch, seg, labels_shifted=shifted)
                ids = exs[i].input_ids
                if seg.start > 0 and got[0] != IGNORE_INDEX:
                    fail_at_position(
                        ctx,
                        "S8: a target crosses a document boundary: the first token of a "
                        "document is predicted from the previous document's last position",
                        tokenizer=tok,
                        example=i,
                        input_ids=ids,
                        got=got,
                        expected=want[i],
                        position=0,
                        spec="no target crosses a document boundary",
                        conversations=convs,
                        row=seg.row,
                    )
                single = ctx.collate([convs[i]], tok, cap)
                sseg, _ = match_documents(single, [ids])
                if sseg[0] is not None:
                    alone_labels = canonical_labels(single, sseg[0], labels_shifted=shifted)
                    for t in range(n):
                        if got[t] != alone_labels[t]:
                            fail_at_position(
                                ctx,
                                "S8: packing changed a document's labels",
                                tokenizer=tok,
                                example=i,
                                input_ids=ids,
                                got=got,
                                expected=alone_labels,
                                position=t,
                                spec="the labels of the document collated alone",
                                conversations=convs,
                                row=seg.row,
                            )
                alone = reference_collate([convs[i]], tok, 10**6, policy=ctx.decl.turn_policy)
                ref = reference_forward(ctx.model(), alone)[0, :n]
                diff = (logits[seg.row, seg.start : seg.stop].float() - ref.float()).abs().amax(-1)
                if float(diff.max()) > 1e-4 * max(1.0, float(ref.abs().max())):
                    t = int(diff.argmax())
                    fail(
                        ctx,
                        f"S8: attention crosses document boundaries: the logits of example "
                        f"{i} (row {seg.row}) at position {t} differ by "
                        f"{float(diff.max()):.3g} from the document run alone. Packed "
                        "rows need a block-diagonal causal mask (or varlen attention with "
                        "cu_seqlens); position_ids alone do not isolate documents under "
                        "sdpa/eager attention.",
                        conversations=convs,
                        example=i,
                        position=t,
                        call_convention="target.forward"
                        if ctx.decl.has_forward
                        else "model(input_ids, attention_mask, position_ids)",
                    )

    run_property(
        ctx,
        batch_strategy(ctx, min_size=2, max_size=5, max_turns=2, adversarial=False),
        prop,
        budget=0.3,
    )
