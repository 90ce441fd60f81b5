"""Packing checks: packed documents are isolated and unchanged (S8)."""

from __future__ import annotations

import math

from ..alignment import (
    IGNORE_INDEX,
    canonical_labels,
    packed_rows,
)
from ..context import Context
from ..failures import CheckSkipped, fail, fail_at_position
from .engine import (
    batch_strategy,
    require,
    require_fits,
    run_property,
)
from .labels import (
    droppable_tails,
    expected_labels,
    segments_for,
)
from .model import against_alone, logits_of
from .registry import register

# -- S8 -----------------------------------------------------------------------------------------


PROBE = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}],
    [{"role": "user", "content": "and then"}, {"role": "assistant", "content": "no"}],
    [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "fine then"}],
]


def _packs(ctx, tok) -> bool:
    """Whether the target packs: three short conversations under a cap that fits two of them
    in a row. A target that raises here is probed by the property itself (its errors show)."""
    from sft_conformance.reference import build_example

    lengths = [len(build_example(c, tok)) for c in PROBE]
    try:
        batch = ctx.collate(PROBE, tok, max(max(lengths), math.ceil(sum(lengths) * 0.7)))
    except Exception:
        return True
    exs, want = expected_labels(ctx, PROBE, tok)
    return bool(packed_rows(segments_for(ctx, batch, exs, PROBE, tok=tok, want=want)))


@register("S8")
def check_packing_equivalence(ctx: Context) -> None:
    """Packed documents restart positions, never attend or predict across a boundary, and are
    not split (S8, docs/specification.md#s8); packing is inferred from the batch."""
    tok = ctx.tokenizer()
    shifted = ctx.decl.labels_shifted

    not_packing = "the target put every conversation in a row of its own (it does not pack)"

    if not ctx.decl.packs and not _packs(ctx, tok):
        raise CheckSkipped(
            "the target does not pack: no row of its batch held two conversations (packing is "
            "inferred from the batch; declare packs = True to require it)"
        )

    def prop(convs):
        require_fits(ctx, convs, tok)
        exs, want = expected_labels(ctx, convs, tok)
        # a cap that forces at least two rows, so packing must decide where documents go
        lengths = [len(e) for e in exs]
        cap = max(max(lengths), math.ceil(sum(lengths) * 0.6))
        batch = ctx.collate(convs, tok, cap)
        tails = droppable_tails(exs, want)
        segs = segments_for(ctx, batch, exs, convs, tok=tok, want=want)
        rows = batch["input_ids"].tolist()
        matches = [
            seg
            if seg is not None
            and rows[seg.row][seg.start : seg.stop]
            in (ex.input_ids, ex.input_ids[:-1] if tails[i] else None)
            else None
            for i, (ex, seg) in enumerate(zip(exs, segs))
        ]
        packed = set(packed_rows(matches))
        split = [i for i, m in enumerate(matches) if m is None]
        require(ctx, bool(packed) or (bool(split) and ctx.decl.packs), not_packing)
        if split and not ctx.decl.splits_documents:
            i = split[0]
            fail(
                ctx,
                f"S8: example {i} is not one whole document of the packed batch: its ids "
                "appear nowhere as one run (split across rows or positions, or "
                "re-tokenized). A split document loses its beginning as context.",
                conversations=convs,
                example=i,
                max_length=cap,
            )
        logits = logits_of(ctx, batch)
        for i, seg in enumerate(matches):
            if seg is None or seg.row not in packed:
                continue
            n = len(seg)
            if "position_ids" not in batch:
                fail(
                    ctx,
                    "S8: a packed batch without position_ids: documents after the "
                    "first get positions that continue across the boundary",
                    conversations=convs,
                    max_length=cap,
                )
            pos = batch["position_ids"][seg.row, seg.start : seg.stop].tolist()
            if pos != list(range(n)):
                fail(
                    ctx,
                    f"S8: positions of example {i} (row {seg.row}, tokens "
                    f"{seg.start}..{seg.stop - 1}) do not restart at 0: {pos[:8]}...",
                    conversations=convs,
                    example=i,
                    max_length=cap,
                )
            got = canonical_labels(batch, seg, labels_shifted=shifted)
            ids = rows[seg.row][seg.start : seg.stop]
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
            sseg = segments_for(
                ctx, single, exs[i : i + 1], [convs[i]], tok=tok, want=want[i : i + 1]
            )[0]
            if sseg is None or len(sseg) != n:
                continue  # collated alone, its ids differ: S1's finding
            alone_labels = canonical_labels(single, sseg, labels_shifted=shifted)
            # the first token of a document has no prediction in either layout
            for t in range(1, n):
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
            diff, t, tol = against_alone(ctx, logits, seg, single, sseg)
            if diff > tol:
                fail(
                    ctx,
                    f"S8: attention crosses document boundaries: the logits of example "
                    f"{i} (row {seg.row}) at position {t} differ by {diff:.3g} (tolerance "
                    f"{tol:.3g}) from the document collated alone, both through the "
                    "target's forward. Packed rows need a block-diagonal causal mask (or "
                    "varlen attention with cu_seqlens); position_ids alone do not isolate "
                    "documents under sdpa/eager attention.",
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
    if ctx.judged == 0 and not ctx.decl.packs:
        raise CheckSkipped(
            "the target does not pack: no row of its batches held two conversations (packing "
            "is inferred from the batch; declare packs = True to require it)"
        )
