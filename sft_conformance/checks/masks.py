"""Mask checks: every assistant token trained (S2), nothing else (S3), the end-of-turn token
(S4), the multi-turn policy (S10)."""

from __future__ import annotations

import hypothesis.strategies as st

from ..alignment import (
    IGNORE_INDEX,
    canonical_labels,
)
from ..context import Context
from ..failures import fail_at_position
from .engine import (
    batch_strategy,
    build_once,
    content_once,
    is_bpe,
    pad_eos_allowed,
    pad_eos_strategy,
    require_fits,
    run_property,
    special_inputs,
)
from .labels import (
    collated,
    compare_labels,
    end_tokens,
    label_property,
)
from .registry import register


def special_pad_eos(ctx: Context, *, multi_turn: bool = False, agentic: bool = False) -> dict:
    """``run_property`` arguments judging the special-string batches with the pad
    configurations the check draws: (batch, pad == eos) pairs, narrowed one conversation at a
    time on failure."""
    out = []
    for pad_eos in (False, True):
        if pad_eos_allowed(ctx, pad_eos):
            tok = ctx.tokenizer(pad_equals_eos=pad_eos)
            out += [(b, pad_eos) for b in special_inputs(ctx, tok, multi_turn=multi_turn,
                                                         agentic=agentic)]
    return {"special": out,
            "split": lambda inputs: [([c], inputs[1]) for c in inputs[0]]}


# -- S2 -----------------------------------------------------------------------------------------


@register("S2")
def check_first_response_token_trained(ctx: Context) -> None:
    """Every token of every assistant turn is trained, the first one included
    (S2, docs/specification.md#s2)."""
    prop = label_property(
        ctx,
        # a token absent from the target's ids (re-tokenized) is S1's finding, not S2's
        lambda t, got, want, ex: (
            want != IGNORE_INDEX and got is not None and t not in end_tokens(ex)
        ),
        what="S2: an assistant token is not trained (or is trained with the wrong label)",
        spec="every token of the assistant's content is a target, the first included",
        judge_drops=True,
    )

    pinned = [
        [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer"}]],
        [[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "olleh"}]],
    ]
    run_property(
        ctx,
        batch_strategy(ctx, adversarial=False, agentic=True),
        prop,
        pinned=pinned[:1] if is_bpe(ctx) else pinned[1:],
        special=special_inputs(ctx, ctx.tokenizer(), agentic=True),
    )


# -- S3 -----------------------------------------------------------------------------------------


@register("S3")
def check_no_prompt_or_glue_trained(ctx: Context) -> None:
    """No token outside assistant turns is trained: system, user, headers, glue; also with
    pad == eos (S3, docs/specification.md#s3)."""
    prop = label_property(
        ctx,
        lambda t, got, want, ex: want == IGNORE_INDEX,
        what="S3: a token outside the assistant's turns is trained",
        spec="system, user, role headers and template glue are never targets",
        with_pad_eos=True,
    )

    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer"}]
    pinned = [([conv], pad_eos) for pad_eos in (False, True) if pad_eos_allowed(ctx, pad_eos)]
    run_property(
        ctx,
        st.tuples(batch_strategy(ctx, adversarial=False, agentic=True), pad_eos_strategy(ctx)),
        prop,
        pinned=pinned if is_bpe(ctx) else (),
        **special_pad_eos(ctx, agentic=True),
    )


# -- S4 -----------------------------------------------------------------------------------------


@register("S4")
def check_end_of_turn_trained(ctx: Context) -> None:
    """The end-of-turn token of every assistant turn is trained, also when pad == eos
    (S4, docs/specification.md#s4)."""

    def prop(inputs):
        convs, pad_eos = inputs
        tok = ctx.tokenizer(pad_equals_eos=pad_eos)
        require_fits(ctx, convs, tok)
        batch = ctx.collate(convs, tok)
        compare_labels(
            ctx,
            convs,
            tok,
            batch,
            lambda t, got, want, ex: t in end_tokens(ex) and want != IGNORE_INDEX,
            what="S4: the end-of-turn token is not trained: the model never learns to stop"
            + (" (pad == eos)" if pad_eos else ""),
            spec="the end-of-turn token of each assistant turn (the template's first special token "
            "after the content, not necessarily eos) is a target",
            pad_equals_eos=pad_eos,
            judge_drops=True,
        )

    pinned = [
        (
            [
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}],
                [
                    {"role": "user", "content": "a longer question here"},
                    {"role": "assistant", "content": "sure"},
                ],
            ],
            True,
        )
    ]
    run_property(
        ctx,
        st.tuples(batch_strategy(ctx, adversarial=False, agentic=True), pad_eos_strategy(ctx)),
        prop,
        pinned=[p for p in pinned if pad_eos_allowed(ctx, p[1])] if is_bpe(ctx) else (),
        **special_pad_eos(ctx, agentic=True),
    )


# -- S10 ----------------------------------------------------------------------------------------


@register("S10", "multi_turn")
def check_multi_turn_policy(ctx: Context) -> None:
    """Every assistant turn is trained (or only the last, if declared), no other message; also
    with pad == eos (S10, docs/specification.md#s10)."""
    policy = ctx.decl.turn_policy

    def prop(inputs):
        convs, pad_eos = inputs
        tok = ctx.tokenizer(pad_equals_eos=pad_eos)
        batch, exs, want, segs = collated(ctx, convs, tok, pad_equals_eos=pad_eos,
                                          judge_drops=True)
        for i, (conv, ex, seg) in enumerate(zip(convs, exs, segs)):
            if seg is None:
                continue
            ids = batch["input_ids"][seg.row, seg.start : seg.stop].tolist()
            if ids not in (ex.input_ids, ex.input_ids[:-1]):
                continue  # S1's finding
            got = canonical_labels(batch, seg, labels_shifted=ctx.decl.labels_shifted)
            got += [IGNORE_INDEX] * (len(ex) - len(got))
            full = build_once(conv, tok, policy="all", tokenization=ctx.decl.tokenization,
                              reasoning=ctx.decl.reasoning)
            turns = full.turns
            for k, span in enumerate(turns):
                trained = any(got[t] != IGNORE_INDEX for t in range(span.start, span.stop))
                should = policy == "all" or k == len(turns) - 1
                if trained != should:
                    fail_at_position(
                        ctx,
                        f"S10: assistant turn {k + 1} of {len(turns)} (message "
                        f"{span.message}) is {'trained' if trained else 'not trained'}, "
                        f"but the declared policy is {policy!r} ("
                        + ("every assistant turn" if policy == "all" else "the last only")
                        + ")",
                        tokenizer=tok,
                        example=i,
                        input_ids=ids,
                        got=got,
                        expected=want[i],
                        position=span.start,
                        spec=f"turn policy {policy!r}",
                        conversations=convs,
                        pad_equals_eos=pad_eos,
                        row=seg.row,
                    )
            whole = full if ctx.decl.tokenization == "whole" else build_once(conv, tok)
            messages = content_once(conv, tok) if whole.input_ids == full.input_ids else []
            for j, positions in enumerate(messages):  # (per-turn ids: S3 judges the prompt)
                if conv[j]["role"] == "assistant":
                    continue
                hits = [t for t in positions if got[t] != IGNORE_INDEX]
                if hits:
                    fail_at_position(
                        ctx,
                        f"S10: the {conv[j]['role']} message {j} of a multi-turn "
                        "conversation is trained",
                        tokenizer=tok,
                        example=i,
                        input_ids=ids,
                        got=got,
                        expected=want[i],
                        position=hits[0],
                        spec="only assistant turns are trained",
                        conversations=convs,
                        pad_equals_eos=pad_eos,
                        row=seg.row,
                    )

    conv = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "two"},
    ]
    pinned = [([conv], pad_eos) for pad_eos in (False, True) if pad_eos_allowed(ctx, pad_eos)]
    run_property(
        ctx,
        st.tuples(
            batch_strategy(ctx, max_size=2, min_turns=2, adversarial=False), pad_eos_strategy(ctx)
        ),
        prop,
        pinned=pinned if is_bpe(ctx) else (),
        budget=0.6,
        **special_pad_eos(ctx, multi_turn=True),
    )
