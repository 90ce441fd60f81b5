"""Label alignment: what the specification expects of each example, where each example sits in
the target's batch, and the first position where the two disagree."""

from __future__ import annotations

from sft_conformance.reference import (
    build_example,
    labels_for,
)

from ..alignment import (
    IGNORE_INDEX,
    canonical_labels,
    locate_examples,
)
from ..failures import fail, fail_at_position
from .engine import require_fits


def expected_labels(ctx, convs, tok):
    """The examples the specification expects (the reference's ids and trained positions) and
    their canonical labels."""
    import json

    key = (id(tok), tok.name_or_path, ctx.decl.turn_policy, ctx.decl.tokenization,
           ctx.decl.reasoning, json.dumps(convs, sort_keys=True, default=str))
    memo = ctx.memo.setdefault("expected_labels", {})
    if key not in memo:
        if len(memo) > 4096:
            memo.clear()
        from .engine import build_once

        exs = [
            build_once(
                c, tok, policy=ctx.decl.turn_policy, index=i, tokenization=ctx.decl.tokenization,
                reasoning=ctx.decl.reasoning,
            )
            for i, c in enumerate(convs)
        ]
        memo[key] = (exs, [labels_for(ex) for ex in exs])
    exs, want = memo[key]
    return list(exs), [list(w) for w in want]


def tokenizer_note(ctx, convs, tok) -> None:
    """Note (once per check) when the tokenizer merges template glue with content: training
    and inference cannot agree on the first response token there, whichever convention. The
    note names the example, the assistant turn and the merged token."""
    from ..tables import show_token

    if any(n.startswith("note: the tokenizer") for n in ctx.notes):
        return  # once per check
    for i, c in enumerate(convs):
        whole_ex = build_example(c, tok, policy=ctx.decl.turn_policy)
        whole = whole_ex.input_ids
        per_turn = build_example(
            c, tok, policy=ctx.decl.turn_policy, tokenization="per_turn"
        ).input_ids
        if whole != per_turn:
            t = first_difference(whole, per_turn) or 0
            turn = next((sp for sp in whole_ex.turns if sp.start <= t < sp.stop), None)
            turn = turn or next((sp for sp in whole_ex.turns if sp.start >= t), None)
            where = (f"assistant message {turn.message}" if turn is not None
                     else "an assistant turn")
            merged = show_token(tok, whole[t]) if t < len(whole) else "-"
            split = " + ".join(f"'{show_token(tok, x)}'" for x in per_turn[t:t + 2])
            ctx.notes.append(
                f"note: the tokenizer {tok.name_or_path.split('+')[0]!r} merges template glue "
                f"with content at a prompt/response boundary: in example {i}, {where}, the "
                f"whole conversation tokenizes position {t} as '{merged}' (id {whole[t]}) "
                f"where the prompt and response tokenized apart give {split}. Training and "
                "inference cannot agree on the first response token there: a fact about the "
                f"tokenizer, not the target. The target is held to its declared tokenization "
                f"{ctx.decl.tokenization!r}. Conversation: {c!r}"[:900]
            )
            return


def may_train(ctx, ex, tok) -> set[int]:
    """Positions a target may train or not, as it declares: the glue token right after each
    end-of-turn token (ChatML's newline) under ``trains_after_eot``."""
    if not ctx.decl.trains_after_eot:
        return set()
    out = set()
    for span in ex.turns:
        nxt = (span.end_token if span.end_token is not None else -2) + 1
        if 0 < nxt < len(ex) and not is_special(tok, ex.input_ids[nxt]):
            out.add(nxt)
    return out


def first_difference(a, b) -> int | None:
    """The first index where two sequences differ (the shorter one's end if one is a prefix of
    the other), or None when they are equal."""
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


def is_special(tok, token_id) -> bool:
    return int(token_id) in set(tok.all_special_ids)


def droppable_tails(exs, want) -> list[bool]:
    """Whether each example's last token is untrained glue after its last end token."""
    return [
        bool(len(e)) and w[-1] == IGNORE_INDEX and (not e.turns or e.turns[-1].stop < len(e))
        for e, w in zip(exs, want)
    ]


def segments_for(ctx, batch, exs, convs, *, tok, pad_equals_eos=False, want=None):
    """The segment of the batch holding each example, found by its ids (see
    :func:`sft_conformance.alignment.locate_examples`); None for an example found nowhere."""
    if want is None:
        want = [labels_for(e) for e in exs]
    return locate_examples(
        batch,
        [e.input_ids for e in exs],
        pad_id=tok.pad_token_id,
        droppable_tail=droppable_tails(exs, want),
        splits_documents=ctx.decl.splits_documents,
    )


def collated(ctx, convs, tok, *, pad_equals_eos=False, judge_drops=False):
    """Collate a drawn batch (judged only if every conversation fits ``max_length``) and find
    each expected example in it: ``(batch, examples, labels, segments)``."""
    require_fits(ctx, convs, tok)
    batch = ctx.collate(convs, tok)
    exs, want = expected_labels(ctx, convs, tok)
    segs = segments_for(ctx, batch, exs, convs, tok=tok, pad_equals_eos=pad_equals_eos, want=want)
    if judge_drops:
        judge_dropped(ctx, convs, tok, batch, exs, segs, pad_equals_eos=pad_equals_eos)
    return batch, exs, want, segs


def judge_dropped(ctx, convs, tok, batch, exs, segs, *, pad_equals_eos=False):
    """Fail when the batch silently lost an example that has tokens to train (see
    :mod:`sft_conformance.refusals`): the finding of the check judging the batch."""
    __tracebackhide__ = True
    from ..refusals import dropped_examples

    if ctx.decl.splits_documents:
        return  # a split document is located by S8, not here
    lost = dropped_examples(batch, exs, segs, tok.pad_token_id)
    if lost:
        i = lost[0]
        fail(
            ctx,
            f"{ctx.check_id}: example {i} ({exs[i].n_trained} trainable tokens under "
            f"turn_policy={ctx.decl.turn_policy!r}) is missing from the batch: the target "
            f"silently dropped a conversation that has tokens to train "
            f"({batch['input_ids'].shape[0]} rows for {len(exs)} conversations; its ids "
            "appear nowhere, not even re-tokenized). A filter that drops rows whose labels are "
            "all -100 hides a masking bug this way: the model never sees the conversation.",
            conversations=convs,
            pad_equals_eos=pad_equals_eos,
            example=i,
            trainable=exs[i].n_trained,
        )


def differences(ctx, convs, tok, batch, relevant, *, pad_equals_eos=False):
    """Yield (example, position, got, want, ids, segment) where ``relevant`` holds."""
    exs, want = expected_labels(ctx, convs, tok)
    segs = segments_for(ctx, batch, exs, convs, tok=tok, pad_equals_eos=pad_equals_eos, want=want)
    for i, (ex, seg) in enumerate(zip(exs, segs)):
        if seg is None:
            continue  # an example found nowhere in the batch: S1 reports it
        got = canonical_labels(batch, seg, labels_shifted=ctx.decl.labels_shifted)
        ids = batch["input_ids"][seg.row, seg.start : seg.stop].tolist()
        if ids != ex.input_ids:
            # S1 reports the ids; here judge the tokens both sequences share, in the template's
            # coordinates. A template token the target lacks (a missing end token) is "absent".
            got, ids = aligned(ex.input_ids, ids, got), ex.input_ids
        optional = may_train(ctx, ex, tok)
        for t in range(len(ex)):
            g = IGNORE_INDEX if got[t] is None else got[t]
            if t in optional and g in (IGNORE_INDEX, ex.input_ids[t]):
                continue  # declared: may be trained or not
            if (g != want[i][t] or got[t] is None) and relevant(t, got[t], want[i][t], ex):
                if got[t] is None and want[i][t] == IGNORE_INDEX:
                    continue  # an untrained template token the target lacks: S1's business
                yield i, t, got, want[i], ids, seg


def aligned(expected_ids, got_ids, got_labels):
    """The target's labels moved onto the template's token positions (None where absent)."""
    import difflib

    out = [None] * len(expected_ids)
    matcher = difflib.SequenceMatcher(None, expected_ids, got_ids, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            out[a + k] = got_labels[b + k]
    return out


def compare_labels(ctx, convs, tok, batch, relevant, *, what, spec, pad_equals_eos=False,
                   judge_drops=False):
    """Fail at the first position where ``relevant(pos, got, want, example)`` holds
    (``judge_drops``: first, fail on a trainable example the batch lost)."""
    __tracebackhide__ = True
    if judge_drops:
        exs, want = expected_labels(ctx, convs, tok)
        segs = segments_for(ctx, batch, exs, convs, tok=tok, want=want)
        judge_dropped(ctx, convs, tok, batch, exs, segs, pad_equals_eos=pad_equals_eos)
    for i, t, got, want, ids, seg in differences(
        ctx, convs, tok, batch, relevant, pad_equals_eos=pad_equals_eos
    ):
        fail_at_position(
            ctx,
            what,
            tokenizer=tok,
            example=i,
            input_ids=ids,
            got=got,
            expected=want,
            position=t,
            spec=spec,
            conversations=convs,
            pad_equals_eos=pad_equals_eos,
            row=seg.row,
        )


def label_property(ctx, relevant, *, what: str, spec: str, with_pad_eos: bool = False,
                   judge_drops: bool = False):
    """A property over a batch of conversations: the labels agree with the reference wherever
    ``relevant`` says the difference is this check's business. ``with_pad_eos``: the property
    takes ``(conversations, pad_equals_eos)`` and runs with that pad configuration."""

    def prop(inputs):
        convs, pad_eos = inputs if with_pad_eos else (inputs, False)
        tok = ctx.tokenizer(pad_equals_eos=pad_eos)
        require_fits(ctx, convs, tok)
        compare_labels(
            ctx,
            convs,
            tok,
            ctx.collate(convs, tok),
            relevant,
            what=what + (" (pad == eos)" if pad_eos else ""),
            spec=spec,
            pad_equals_eos=pad_eos,
            judge_drops=judge_drops,
        )

    return prop


def end_tokens(ex) -> set[int]:
    return {s.end_token for s in ex.turns if s.end_token is not None} | (
        {s.stop - 1 for s in ex.turns}
    )
