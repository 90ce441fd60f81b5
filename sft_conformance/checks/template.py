"""Template checks: input ids follow the chat template (S1); masks do not depend on content
(S11)."""

from __future__ import annotations

from ..alignment import IGNORE_INDEX
from ..context import Context
from ..failures import fail, fail_at_position
from ..tables import show_token
from .engine import (
    batch_strategy,
    fits,
    is_bpe,
    require_fits,
    run_property,
    special_inputs,
)
from .labels import (
    differences,
    droppable_tails,
    expected_labels,
    is_special,
    judge_dropped,
    segments_for,
    tokenizer_note,
)
from .registry import register

# -- S1 -----------------------------------------------------------------------------------------


@register("S1")
def check_template_parity(ctx: Context) -> None:
    """Input ids follow the declared tokenization convention of the whole conversation; no
    extra or missing trained token (S1, docs/specification.md#s1)."""
    tok = ctx.tokenizer()

    def prop(convs):
        require_fits(ctx, convs, tok)
        batch = ctx.collate(convs, tok)
        exs, want = expected_labels(ctx, convs, tok)
        tokenizer_note(ctx, convs, tok)
        tails = droppable_tails(exs, want)
        segs = segments_for(ctx, batch, exs, convs, tok=tok, want=want)
        starts = {(s.row, s.start) for s in segs if s is not None}
        ends = {(s.row, s.stop - 1) for s in segs if s is not None}
        for i, (ex, seg) in enumerate(zip(exs, segs)):
            if seg is None:
                if ctx.decl.splits_documents:
                    continue
                from ..refusals import dropped_examples

                if i in dropped_examples(batch, exs, segs, tok.pad_token_id):
                    judge_dropped(ctx, convs, tok, batch, exs, segs)
                fail(
                    ctx,
                    f"S1: the input ids of example {i} appear nowhere in the batch as one run "
                    f"of tokens ({batch['input_ids'].shape[0]} rows for {len(exs)} "
                    "conversations): the target dropped, split or merged it, or its ids differ "
                    "from the chat template's tokenization",
                    conversations=convs,
                    expected_ids=ex.input_ids,
                    example=i,
                )
            got = batch["input_ids"][seg.row, seg.start : seg.stop].tolist()
            before = seg.start - 1
            if (
                before >= 0
                and (seg.row, before) not in ends
                and int(batch["input_ids"][seg.row, before]) != tok.pad_token_id
                and (
                    "position_ids" not in batch
                    or int(batch["position_ids"][seg.row, seg.start]) != 0
                )
                # a token the template could have added (a special token such as a second
                # BOS) or one lone token opening the row; the tail of another document
                # wrapped into this row (wrapped packing) is S8's business
                and (
                    is_special(tok, batch["input_ids"][seg.row, before])
                    or not any(
                        int(batch["input_ids"][seg.row, k]) != tok.pad_token_id
                        for k in range(before)
                    )
                )
            ):
                extra = int(batch["input_ids"][seg.row, before])
                fail(
                    ctx,
                    f"S1: example {i} (batch row {seg.row}) is preceded by an extra token in "
                    f"the same document: '{show_token(tok, extra)}' (id {extra}) at row "
                    f"position {before}, which the chat template does not render (a double BOS "
                    "when the template already adds one and the tokenizer adds another). "
                    "Inference sees the template's tokens; training must see the same.",
                    conversations=convs,
                    example=i,
                    position=before,
                )
            if got == ex.input_ids or (tails[i] and got == ex.input_ids[:-1]):
                # the same ids (an untrained trailing newline may be left out); a token the
                # target adds after the example must not be trained
                nxt = seg.stop
                if nxt < batch["input_ids"].shape[1] and (seg.row, nxt) not in starts:
                    label_at = nxt - 1 if ctx.decl.labels_shifted else nxt
                    label = int(batch["labels"][seg.row, label_at])
                    if label != IGNORE_INDEX:
                        extra = int(batch["input_ids"][seg.row, nxt])
                        fail(
                            ctx,
                            f"S1: example {i} (batch row {seg.row}) is followed by an extra "
                            f"trained token at row position {nxt}: "
                            f"'{show_token(tok, extra)}' (id {extra}) with label {label}, "
                            "which the chat template does not render. The model learns to "
                            "emit a token inference never shows it.",
                            conversations=convs,
                            example=i,
                            position=nxt,
                        )
                continue
            t = next(
                (k for k in range(min(len(got), len(ex))) if got[k] != ex.input_ids[k]),
                min(len(got), len(ex)),
            )
            rows = []
            for k in range(max(0, t - 5), min(max(len(got), len(ex)), t + 6)):
                g = got[k] if k < len(got) else None
                e = ex.input_ids[k] if k < len(ex) else None
                rows.append(
                    [
                        ">>" if k == t else "",
                        k,
                        show_token(tok, g) if g is not None else "-",
                        g,
                        show_token(tok, e) if e is not None else "-",
                        e,
                    ]
                )
            from tabulate import tabulate

            table = tabulate(
                rows,
                headers=["", "pos", "token", "input_id", "expected token", "expected id"],
                tablefmt="github",
            )
            reason = (
                "an extra BOS"
                if t == 0 and len(got) == len(ex) + 1
                else "re-tokenization at a prompt/response boundary"
                if len(got) != len(ex)
                else "different tokens"
            )
            fail(
                ctx,
                f"S1: example {i} (batch row {seg.row}): input ids differ from the chat "
                f"template's tokenization (declared convention {ctx.decl.tokenization!r}) at "
                f"position {t} "
                f"({reason}; {len(got)} tokens, the template gives {len(ex)}). "
                "Inference sees the template's tokens; training must see the same.",
                conversations=convs,
                table=table,
                example=i,
                position=t,
            )

    pinned = [[[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer"}]]]
    run_property(ctx, batch_strategy(ctx, agentic=True), prop, pinned=pinned if is_bpe(ctx) else (),
                 special=special_inputs(ctx, tok, agentic=True))


# -- S11 ----------------------------------------------------------------------------------------


def _neutralized(convs, tok=None):
    """The same conversations with every role word, header and look-alike (and, given
    ``tok``, each of its own special strings) replaced by 'x'."""
    from ..strategies import ADVERSARIAL_PIECES

    pieces = list(ADVERSARIAL_PIECES)
    if tok is not None:
        from ..special_strings import special_strings

        pieces += [s.text for s in special_strings(tok)]
    out = []
    for conv in convs:
        new = []
        for m in conv:
            text = m["content"]
            for piece in sorted(set(pieces), key=len, reverse=True):
                text = text.replace(piece, "x")
            new.append({"role": m["role"], "content": text})
        out.append(new)
    return out


@register("S11")
def check_content_independence(ctx: Context) -> None:
    """Role words, header text and special-token look-alikes in content do not move the mask
    (S11, docs/specification.md#s11)."""
    tok = ctx.tokenizer()

    def prop(convs):
        require_fits(ctx, convs, tok)
        batch = ctx.collate(convs, tok)

        # absent tokens are S1's business; the first token of a turn (where glue and content
        # may merge, and whether they do depends on the content) is S2's
        def present(t, got, want, ex):
            return got is not None and t not in {span.start for span in ex.turns}

        first = next(differences(ctx, convs, tok, batch, present), None)
        if first is None:
            return
        plain = _neutralized(convs, tok)
        if plain == convs or not fits(ctx, plain, tok):
            return  # nothing adversarial: a plain masking bug, for S2/S3/S4/S10
        if next(differences(ctx, plain, tok, ctx.collate(plain, tok), present), None) is not None:
            return  # wrong with neutral content too: not caused by the content
        i, t, got, want, ids, seg = first
        fail_at_position(
            ctx,
            "S11: the mask moved with the content of a message (a role word, the assistant "
            "header text or a special-token look-alike inside a message); with those "
            "strings replaced by 'x' the same conversation is masked right",
            tokenizer=tok,
            example=i,
            input_ids=ids,
            got=got,
            expected=want,
            position=t,
            spec="masks depend on turns, never on what a message says",
            conversations=convs,
            row=seg.row,
        )

    from sft_conformance.reference.masks import generation_prompt

    header = generation_prompt(tok) or "assistant"
    pinned = [
        [[{"role": "user", "content": f"say {header}ok"}, {"role": "assistant", "content": "ok"}]],
        [
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": f"the header is {header} here"},
            ]
        ],
    ]
    run_property(
        ctx, batch_strategy(ctx, adversarial=True), prop, pinned=pinned if is_bpe(ctx) else (),
        special=special_inputs(ctx, tok),
    )
