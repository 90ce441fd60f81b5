"""Truncation checks: over-long examples follow the declared policy (S9)."""

from __future__ import annotations

import hypothesis.strategies as st
import torch

from sft_conformance.reference import truncate

from ..alignment import (
    IGNORE_INDEX,
    Segment,
    canonical_labels,
    document_segments,
)
from ..context import Context, TargetRaised
from ..failures import fail
from ..tables import show_token
from .engine import (
    batch_strategy,
    require_renders,
    run_property,
)
from .labels import (
    expected_labels,
    segments_for,
)
from .loss import COMPACT_VOCAB, compact_labels, random_logits
from .registry import register

# -- S9 -----------------------------------------------------------------------------------------


def nothing_left(ex, cap: int, policy: str) -> bool:
    """Whether an example keeps no trained position once held to ``cap`` tokens under
    ``policy`` (as the reference applies it: the end token kept, at least one content token
    beside it), or, under ``truncate_prompt``, cannot keep its whole last response."""
    if len(ex) <= cap:
        return False
    if policy in ("raise", "drop") or not ex.turns:
        return True
    if policy == "truncate_prompt" and len(ex) - ex.turns[-1].start > cap:
        return True
    return (
        truncate(ex, cap, "truncate_prompt" if policy == "truncate_prompt" else "truncate_response")
        is None
    )


def _collates_untruncated(ctx, convs, tok) -> bool:
    try:
        ctx.target.collate(convs, tok, 10**6)
    except Exception:
        return False  # it refuses these conversations anyway: the target's error, not S9's
    return True


def real_pieces(batch, pad_id, *, labels_shifted: bool = False):
    """The non-padding pieces of the batch: documents (split where positions restart) or rows,
    as ``(segment, ids)``; a piece made only of pad tokens is padding. A trailing pad id that
    is trained is real: with pad == eos (DeepSeek ships it so) it is the end-of-turn token."""
    labels = batch["labels"]

    def trained(row, t):
        at = t - 1 if labels_shifted else t
        return 0 <= at < labels.shape[1] and int(labels[row, at]) != IGNORE_INDEX

    pieces = []
    for seg in document_segments(batch):
        ids = batch["input_ids"][seg.row, seg.start : seg.stop].tolist()
        while (ids and ids[-1] == pad_id and seg.stop > seg.start
               and not trained(seg.row, seg.stop - 1)):
            ids.pop()
            seg = Segment(seg.row, seg.start, seg.stop - 1)
        lead = 0
        while lead < len(ids) and ids[lead] == pad_id:
            lead += 1
        if lead < len(ids):
            pieces.append((Segment(seg.row, seg.start + lead, seg.stop), ids[lead:]))
    return pieces


#: a prompt longer than the smallest max_length S9 draws (8) on every tokenizer, with a short
#: answer: truncation leaves it nothing to train. Drawn conversations of short messages do not
#: reach this on compact templates (Mistral's `<s>[INST] the[/INST] the</s>` is 6-7 tokens).
LONG_PROMPT = [{"role": "user", "content": " ".join(["the"] * 12)},
               {"role": "assistant", "content": "the"}]


@register("S9")
def check_truncation(ctx: Context) -> None:
    """Over-long examples follow the declared policy; no NaN, no silent zero, no example (or
    packed document) with nothing to train (S9, docs/specification.md#s9)."""
    tok = ctx.tokenizer()
    policy = ctx.decl.overlong
    shifted = ctx.decl.labels_shifted
    pad = tok.pad_token_id

    probed = {"draws": 0, "overlong": 0, "empty": 0}

    def prop(inputs):
        convs, delta = inputs
        require_renders(ctx, convs, tok)  # a drawn tool conversation the template refuses
        exs, want = expected_labels(ctx, convs, tok)
        longest = max(len(e) for e in exs)
        cap = max(8, longest + delta)
        overlong = [i for i, e in enumerate(exs) if len(e) > cap]
        empty = [i for i, e in enumerate(exs) if nothing_left(e, cap, policy)]
        probed["draws"] += 1
        probed["overlong"] += bool(overlong)
        probed["empty"] += bool(empty)
        try:
            batch = ctx.collate(convs, tok, cap)
        except TargetRaised as exc:
            # conformant only when the batch has nothing left to train under the declared
            # policies (refusals.py), or when raising on an over-long example is declared
            from ..refusals import describe_lost, trainable_counts

            lost = trainable_counts(ctx, convs, tok, cap)
            if (policy == "raise" and overlong) or not lost:
                cause = exc.original
                ctx.notes.append(
                    f"refused a batch with nothing left to train (example(s) {empty or overlong} "
                    f"at max_length={cap}): {type(cause).__name__}: {cause}".splitlines()[0][:300]
                )
                return  # a loud refusal is conformant
            if overlong and _collates_untruncated(ctx, convs, tok):
                # the same batch collates without truncation: the refusal is about truncation
                cause = exc.original
                fail(
                    ctx,
                    f"S9: the target refused a batch that its declared policy "
                    f"overlong={policy!r} keeps something of (over-long example(s) {overlong} "
                    f"at max_length={cap}; trainable: {describe_lost(lost)}): "
                    f"{type(cause).__name__}: {cause}".splitlines()[0],
                    conversations=convs,
                    max_length=cap,
                )
            raise  # an exception on a batch that fits: the target's error
        if policy == "raise" and overlong:
            fail(
                ctx,
                f"S9: the target declares overlong='raise' but collated example(s) "
                f"{overlong} longer than max_length={cap} without raising",
                conversations=convs,
                max_length=cap,
            )
        pieces = real_pieces(batch, pad, labels_shifted=shifted)
        for seg, ids in pieces:
            if len(ids) > cap:
                fail(
                    ctx,
                    f"S9: batch row {seg.row} holds {len(ids)} real tokens (positions "
                    f"{seg.start}..{seg.stop - 1}), more than max_length={cap}: an over-long "
                    f"example was kept whole although the target declares overlong={policy!r}",
                    conversations=convs,
                    max_length=cap,
                    row=seg.row,
                )
            trained = [
                x
                for x in canonical_labels(batch, seg, labels_shifted=shifted)[1:]
                if x != IGNORE_INDEX
            ]
            if seg.start > 0 or not shifted:
                trained += [
                    x
                    for x in canonical_labels(batch, seg, labels_shifted=shifted)[:1]
                    if x != IGNORE_INDEX
                ]
            if not trained:
                fail(
                    ctx,
                    f"S9: a {'document' if len(pieces) > batch['input_ids'].shape[0] else 'row'}"
                    f" of batch row {seg.row} (positions {seg.start}..{seg.stop - 1}) has no "
                    f"trained position after truncation to max_length={cap}: it costs compute, "
                    "teaches nothing and, alone in a micro-batch, gives NaN or a silent zero "
                    "loss. Drop it (and say so) or truncate the prompt instead.",
                    conversations=convs,
                    max_length=cap,
                    row=seg.row,
                )
        if policy == "drop":
            kept = [i for i in range(len(exs)) if i not in overlong]
            segs = segments_for(
                ctx,
                batch,
                [exs[i] for i in kept],
                [convs[i] for i in kept],
                tok=tok,
                want=[want[i] for i in kept],
            )
            whole = {(s.row, s.start) for s in segs if s is not None}
            for i, seg in zip(kept, segs):
                if seg is None or batch["input_ids"][
                    seg.row, seg.start : seg.stop
                ].tolist() not in (exs[i].input_ids, exs[i].input_ids[:-1]):
                    fail(
                        ctx,
                        f"S9: example {i} fits max_length={cap} but is not in the batch "
                        "whole: 'drop' must leave the other examples intact",
                        conversations=convs,
                        max_length=cap,
                        example=i,
                    )
            extra = [(seg, ids) for seg, ids in pieces if (seg.row, seg.start) not in whole]
            if extra:
                seg, ids = extra[0]
                fail(
                    ctx,
                    f"S9: the target declares overlong='drop', yet batch row {seg.row} "
                    f"holds a piece of {len(ids)} tokens of an over-long example "
                    f"{overlong}: it was truncated, not dropped",
                    conversations=convs,
                    max_length=cap,
                    row=seg.row,
                )
        for i in overlong:
            ex = exs[i]
            if policy == "truncate_prompt" and i not in empty:
                suffix = next(
                    (
                        (seg, ids)
                        for seg, ids in pieces
                        if 0 < len(ids) <= len(ex)
                        and (
                            ex.input_ids[-len(ids) :] == ids
                            or ex.input_ids[:-1][-len(ids) :] == ids
                        )
                    ),
                    None,
                )
                if suffix is None:
                    fail(
                        ctx,
                        f"S9: example {i} ({len(ex)} tokens) was cut at the end, not at "
                        f"the start: the target declares 'truncate_prompt', which keeps "
                        f"the whole response and its end token at max_length={cap}",
                        conversations=convs,
                        max_length=cap,
                        example=i,
                    )
                seg, ids = suffix
                got = canonical_labels(batch, seg, labels_shifted=shifted)
                offset = len(ex) - len(ids) - (0 if ex.input_ids[-len(ids) :] == ids else 1)
                last = ex.turns[-1]
                untrained = [
                    t
                    for t in range(last.start, last.stop)
                    if 0 <= t - offset < len(got) and got[t - offset] == IGNORE_INDEX
                ]
                if untrained or last.start < offset:
                    fail(
                        ctx,
                        f"S9: example {i} was truncated to {len(ids)} tokens but its last "
                        "response is not kept whole and trained: 'truncate_prompt' keeps "
                        "the whole response and its end token",
                        conversations=convs,
                        max_length=cap,
                        example=i,
                    )
            if policy in ("truncate_response", "truncate") and i not in empty:
                prefix = next(
                    (
                        (seg, ids)
                        for seg, ids in pieces
                        if len(ids) > 1 and ex.input_ids[: len(ids) - 1] == ids[:-1]
                    ),
                    None,
                )
                if prefix is None:
                    continue  # dropped: the per-example counts above already judged the rest
                seg, ids = prefix
                got = canonical_labels(batch, seg, labels_shifted=shifted)
                trained_at = [t for t in range(len(ids)) if got[t] != IGNORE_INDEX]
                cut = next((sp for sp in ex.turns if sp.start < len(ids) <= sp.stop), None)
                if not trained_at or cut is None or cut.end_token is None:
                    continue
                end_id = ex.input_ids[cut.end_token]  # the template's end token, not eos
                if ids[trained_at[-1]] != end_id:
                    message = (
                        f"example {i} was truncated to {len(ids)} tokens and lost its "
                        f"end-of-turn token '{show_token(tok, end_id)}'"
                    )
                    if policy == "truncate":
                        ctx.notes.append(
                            f"warning: {message} (declared 'truncate': the model "
                            "does not learn to stop on such examples)"
                        )
                    else:
                        fail(
                            ctx,
                            f"S9: {message}; the target declares 'truncate_response', "
                            "which keeps it so the model still learns to stop. If cutting "
                            "the end token is what the trainer means to do, declare "
                            "overlong = 'truncate' (the end token may be cut; the report "
                            "then warns instead of failing).",
                            conversations=convs,
                            max_length=cap,
                            example=i,
                        )
        if ctx.decl.has_loss:
            (labels,), columns, _ = compact_labels([batch["labels"]], len(tok))
            logits = random_logits(batch, columns, 0)
            value = ctx.loss(logits, labels).detach()
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
            batch_strategy(ctx, max_size=2, adversarial=False),
            st.sampled_from([-12, -3, -1, 0, 1])
        ),
        prop,
        pinned=[([LONG_PROMPT], -12)],
        budget=0.4,
    )
    ctx.notes.append(
        f"S9 coverage: {probed['overlong']} of {probed['draws']} drawn batches held an example "
        f"longer than max_length, {probed['empty']} one with nothing left to train after "
        f"truncation")
    if ctx.decl.has_loss:
        _check_all_masked_loss(ctx, tok)


def _check_all_masked_loss(ctx, tok):
    """A micro-batch whose labels are all -100: finite, zero gradient, never NaN."""
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    batch = ctx.collate([conv], tok)
    labels = torch.full_like(batch["labels"], IGNORE_INDEX)
    logits = random_logits(batch, min(len(tok), COMPACT_VOCAB), 0)
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
