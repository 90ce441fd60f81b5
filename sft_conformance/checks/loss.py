"""Loss checks: the token mean over the batch (S6), gradient accumulation (S7) and data
parallelism (S7dp)."""

from __future__ import annotations

import collections
import math

import hypothesis.strategies as st
import torch

from sft_conformance.reference import (
    IGNORE_INDEX,
    build_example,
    count_trained,
    oracle_loss,
    sft_loss,
)

from ..context import Context, TargetRaised
from ..failures import CheckSkipped, fail
from ..tolerances import allowed, tolerance
from .engine import (
    batch_strategy,
    require_fits,
    run_property,
)
from .registry import register

# -- S6 -----------------------------------------------------------------------------------------


def loss_tolerance(loss: torch.Tensor, reference: float, *, tokens: int = 1) -> float:
    """The difference from ``reference`` accepted for a value computed in ``loss.dtype``
    (:mod:`sft_conformance.tolerances`: an absolute floor plus a relative term)."""
    return allowed(loss.dtype, reference, tokens=tokens)


#: the loss checks draw random logits over at most this many columns (see compact_labels)
COMPACT_VOCAB = 4096


def compact_labels(labels: list[torch.Tensor], vocab: int):
    """``(labels, columns, table)``: a vocabulary larger than :data:`COMPACT_VOCAB` is mapped
    onto the label ids that occur (sorted; ``table[i]`` is the real id of column ``i``).

    The loss of random logits cannot depend on which ids the labels are, only on which
    positions are trained and how they are averaged, so S6 and S7 judge the same thing on 32
    columns as on 151,665, without drawing, summing and differentiating 151k-wide rows (docs/
    specification.md#s6). Labels of a small vocabulary are returned unchanged (``table`` None).
    """
    if vocab <= COMPACT_VOCAB:
        return labels, vocab, None
    present = torch.cat([lab[lab != IGNORE_INDEX].flatten() for lab in labels])
    table = torch.unique(present) if present.numel() else torch.zeros(1, dtype=torch.long)
    if table.numel() < 2:
        table = torch.cat([table, table.new_tensor([int(table.max()) + 1])])
    mapped = []
    for lab in labels:
        out = lab.clone()
        keep = lab != IGNORE_INDEX
        out[keep] = torch.searchsorted(table, lab[keep].contiguous())
        mapped.append(out)
    return mapped, int(table.numel()), table


def compact_repro(table) -> str:
    """The lines of a reproduction snippet that map labels as :func:`compact_labels` did."""
    if table is None:
        return ""
    return (f"table = torch.tensor({table.tolist()})  # the label ids that occur, sorted\n"
            "keep = batch['labels'] != -100\n"
            "batch['labels'][keep] = torch.searchsorted(table, batch['labels'][keep])\n")


#: the random logits kept once :func:`share_random_logits` is on: ``{(B, T, V, seed): tensor}``
_SHARED_LOGITS: collections.OrderedDict | None = None
_SHARED_BUDGET = 0


def share_random_logits(budget_bytes: int | None = 512 * 2**20) -> None:
    """From now on in this process, :func:`random_logits` hands out a copy of the logits it
    drew before for the same shape and seed (at most ``budget_bytes`` kept, the oldest dropped
    first; ``None`` turns it off and drops them).

    Every row of ``mutants`` draws the same derandomized batches and seeds, and a float64 draw
    of B x T x 4,096 numbers was a tenth of a ``mutants`` row on the bundled vocabulary. The
    values are the same numbers (a copy of the first draw), so no verdict can change. Off by
    default: a user's session keeps no tensors between checks; the ``mutants`` command turns
    it on in its own processes."""
    global _SHARED_LOGITS, _SHARED_BUDGET, _SHARED_ORACLE
    if budget_bytes is None:
        _SHARED_LOGITS, _SHARED_BUDGET, _SHARED_ORACLE = None, 0, None
        return
    if _SHARED_LOGITS is None:
        _SHARED_LOGITS = collections.OrderedDict()
        _SHARED_ORACLE = collections.OrderedDict()
    _SHARED_BUDGET = budget_bytes


#: the oracle's loss on shared random logits, while they are shared:
#: ``{(B, T, V, seed, labels_shifted, labels): loss}``, at most ``_SHARED_ORACLE_MAX`` kept
_SHARED_ORACLE: collections.OrderedDict | None = None
_SHARED_ORACLE_MAX = 65536


def oracle_on_random(logits, labels: list[list[int]], labels_shifted: bool, seed: int):
    """``oracle_loss`` on ``logits`` (drawn by :func:`random_logits` with ``seed``) and
    ``labels``; while random logits are shared, the same loss for the same shape, seed and
    labels is computed once (the logits are the same numbers, so is the loss; logits a
    target's loss changed in place are read anew)."""
    shared = _SHARED_ORACLE
    key = None
    drawn = None if _SHARED_LOGITS is None else _SHARED_LOGITS.get((*logits.shape, int(seed)))
    if drawn is None or not torch.equal(drawn, logits.detach()):
        shared = None  # not the shared draw, or changed in place by the target's loss
    if shared is not None:
        key = (*logits.shape, int(seed), bool(labels_shifted), tuple(map(tuple, labels)))
        if key in shared:
            shared.move_to_end(key)
            return shared[key]
    want = oracle_loss(read_logits(logits, labels, labels_shifted), labels,
                       labels_shifted=labels_shifted)
    if shared is not None:
        shared[key] = want
        while len(shared) > _SHARED_ORACLE_MAX:
            shared.popitem(last=False)
    return want


def random_logits(batch, vocab: int, seed: int) -> torch.Tensor:
    """Float64 logits of the batch's shape over ``vocab`` columns, 3 x standard normal, from a
    generator seeded with ``seed`` (a leaf that requires grad; the repro snippets say how to
    draw them again)."""
    B, T = batch["input_ids"].shape
    key = (int(B), int(T), int(vocab), int(seed))
    shared = _SHARED_LOGITS
    if shared is not None and key in shared:
        shared.move_to_end(key)
        return shared[key].clone().requires_grad_()
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, vocab, generator=g, dtype=torch.float64).mul_(3)
    if shared is not None:
        size = logits.numel() * logits.element_size()
        if size <= _SHARED_BUDGET:
            shared[key] = logits.clone()  # the caller's copy may be changed in place
            used = sum(t.numel() * t.element_size() for t in shared.values())
            while used > _SHARED_BUDGET:
                _, dropped = shared.popitem(last=False)
                used -= dropped.numel() * dropped.element_size()
    return logits.requires_grad_()


def read_logits(logits: torch.Tensor, labels: list[list[int]], labels_shifted: bool) -> list:
    """``logits`` as the nested lists the plain-Python oracle reads, with only the rows of
    scores it reads filled in (those that predict a trained label; the others are empty):
    the same values as ``logits.tolist()`` where the oracle looks, without turning a
    (B, T, V) tensor of mostly untrained positions into Python floats."""
    data = logits.detach()
    out = []
    for r, row in enumerate(labels):
        scores: list = [[] for _ in range(data.shape[1])]
        read = [t if labels_shifted else t - 1 for t, label in enumerate(row)
                if label != IGNORE_INDEX and (labels_shifted or t > 0)]
        if read:
            for at, values in zip(read, data[r, read].tolist(), strict=True):
                scores[at] = values
        out.append(scores)
    return out


@register("S6", "loss")
def check_loss_equals_oracle(ctx: Context) -> None:
    """The loss is the token mean of -log p(target) over the batch's trained positions
    (S6, docs/specification.md#s6)."""
    tok = ctx.tokenizer()
    V = len(tok)

    def judge(convs, seed, batch, packed_note="", max_length=None):
        (mapped,), columns, table = compact_labels([batch["labels"]], V)
        batch = dict(batch, labels=mapped)
        logits = random_logits(batch, columns, seed)
        got = ctx.loss(logits, batch["labels"])
        labels = batch["labels"].tolist()
        want = oracle_on_random(logits, labels, ctx.decl.labels_shifted, seed)
        if want is None:
            return
        value = float(got.detach())
        tol = loss_tolerance(got, max(1.0, abs(want)))
        if not math.isfinite(value) or abs(value - want) > tol:
            per_seq = [
                oracle_loss([row], [lab], labels_shifted=ctx.decl.labels_shifted)
                for row, lab in zip(read_logits(logits, labels, ctx.decl.labels_shifted),
                                    labels)
            ]
            per_seq = [x for x in per_seq if x is not None]
            hint = (
                f"; the mean of per-sequence (per-row) means would be "
                f"{sum(per_seq) / len(per_seq):.6f}"
                if per_seq
                else ""
            )
            n = count_trained(batch["labels"], labels_shifted=ctx.decl.labels_shifted)
            fail(
                ctx,
                f"S6: loss {value:.6f} != {want:.6f}, the mean of -log p(target) over "
                f"the {n} trained positions of the batch (float64 logits, tolerance "
                f"{tol:g}, loss computed in {got.dtype}){hint}.{packed_note}",
                conversations=convs,
                max_length=max_length,
                extra_repro=(
                    "import torch\n"
                    + compact_repro(table)
                    + f"logits = torch.randn(*batch['input_ids'].shape, {columns}, "
                    f"generator=torch.Generator().manual_seed({seed}), dtype=torch.float64) * 3\n"
                    "print(target.loss(logits, batch['labels']))"
                ),
                loss=value,
                expected_loss=want,
            )

    def prop(inputs):
        convs, seed = inputs
        require_fits(ctx, convs, tok)
        batch = ctx.collate(convs, tok)
        judge(convs, seed, batch)
        if batch["input_ids"].shape[0] < len(convs):
            # the target packs: rows of one max_length hold every document, so a mean of
            # per-row means equals the token mean. Collate again with max_length = the longest
            # document, so the documents spread over rows that train different counts.
            tight = max(len(build_example(c, tok, policy=ctx.decl.turn_policy)) for c in convs)
            try:
                rows = ctx.collate(convs, tok, max_length=tight)
            except TargetRaised:  # an extra probe: a target that refuses it is judged above
                return
            if rows["input_ids"].shape[0] > 1:
                judge(convs, seed, rows,
                      f" The target packs; collated with max_length={tight} (the longest "
                      f"conversation) its {rows['input_ids'].shape[0]} rows train different "
                      "numbers of positions, and a loss averaged per row is no longer the "
                      "token mean.", max_length=tight)

    run_property(
        ctx,
        st.tuples(batch_strategy(ctx, min_size=2, adversarial=False), st.integers(0, 2**16)),
        prop,
        budget=0.4,
    )


# -- S7 -----------------------------------------------------------------------------------------


@register("S7", "loss")
def check_gradient_accumulation(ctx: Context) -> None:
    """k micro-batches with num_items_in_batch give the full batch's loss and gradient
    (S7, docs/specification.md#s7)."""
    tok = ctx.tokenizer()
    V = len(tok)
    shifted = ctx.decl.labels_shifted

    def prop(inputs):
        convs, split, seed = inputs
        require_fits(ctx, convs, tok)
        split = max(1, min(split, len(convs) - 1))
        groups = [convs[:split], convs[split:]]
        micro = [ctx.collate(g, tok) for g in groups]
        mapped, columns, _ = compact_labels([mb["labels"] for mb in micro], V)
        micro = [dict(mb, labels=lab) for mb, lab in zip(micro, mapped)]
        N = sum(count_trained(mb["labels"], labels_shifted=shifted) for mb in micro)
        if N == 0:
            return
        got_total, want_total = 0.0, 0.0
        for k, mb in enumerate(micro):
            logits = random_logits(mb, columns, seed + k)
            loss = ctx.loss(logits, mb["labels"], num_items_in_batch=N)
            loss.backward()
            ref_logits = logits.detach().clone().requires_grad_()
            ref = sft_loss(ref_logits, mb["labels"], labels_shifted=shifted, num_items_in_batch=N)
            ref.backward()
            got_total += float(loss)
            want_total += float(ref)
            diff = (logits.grad - ref_logits.grad).abs().max()
            # an absolute floor scaled to the dtype and the step's N trained tokens (each
            # logit's gradient is at most 1/N), plus the relative term (tolerances.py)
            tol = loss_tolerance(loss, float(ref_logits.grad.abs().max()), tokens=N)
            if not torch.isfinite(diff) or float(diff) > tol:
                fail(
                    ctx,
                    f"S7: micro-batch {k} of {len(micro)}: the gradient differs from the "
                    f"full-batch token mean's by up to {float(diff):.3g} (tolerance "
                    f"{tol:.3g}, loss computed in {loss.dtype}) "
                    f"(num_items_in_batch={N} trained positions in the whole step). A "
                    "loss that divides by its own micro-batch's count weights a token of "
                    "a short micro-batch more than one of a long micro-batch.",
                    conversations=convs,
                    micro_batches=[len(g) for g in groups],
                )
        if abs(got_total - want_total) > loss_tolerance(loss, max(1.0, abs(want_total))):
            fail(
                ctx,
                f"S7: the sum of micro-batch losses is {got_total:.6f}, the full batch's "
                f"token mean is {want_total:.6f} (num_items_in_batch={N}).",
                conversations=convs,
            )

    run_property(
        ctx,
        st.tuples(
            batch_strategy(ctx, min_size=2, max_size=4, adversarial=False),
            st.integers(1, 3),
            st.integers(0, 2**16),
        ),
        prop,
        budget=0.4,
    )


# -- S7 across ranks ---------------------------------------------------------------------------


@register("S7dp", "loss", "distributed")
def check_data_parallel_normalization(ctx: Context) -> None:
    """Under torch.distributed, ranks' averaged gradient equals the full batch's (S7dp,
    docs/specification.md#s7dp)."""
    from ..distributed import CONVERSATIONS, run_data_parallel

    if ":" not in ctx.spec and ctx.spec not in _builtin_names():
        raise CheckSkipped(
            "the distributed check loads the target by name in each rank: "
            "pass it as a built-in name or module:attr"
        )
    result = run_data_parallel(ctx.spec, tokenizer_name=ctx.tokenizer_name)
    diff = float((result["grads"] - result["want"]).abs().max())
    scale = float(result["want"].abs().max())
    # the tiny model's parameter gradients: the whole-model relative term of the logit
    # comparisons, with the float32 absolute floor per trained token (tolerances.py)
    tol = 1e-4 * scale + tolerance(torch.float32).atol / max(1, result["count"])
    if not math.isfinite(diff) or diff > tol:
        fail(
            ctx,
            f"S7 (data parallel): with {result['world_size']} ranks ({result['backend']}), "
            f"each with its own micro-batch, the all-reduced gradient differs from the "
            f"full batch's by up to {diff:.3g} (relative {diff / max(scale, 1e-30):.3g}, "
            f"tolerance {tol:.3g}); summed loss "
            f"{result['loss']:.6f} against the full batch's token mean "
            f"{result['want_loss']:.6f} ({result['count']} trained positions). A loss "
            "normalized by each rank's local token count, averaged by the all-reduce, is "
            "a mean of per-rank means: pass the global count as num_items_in_batch.",
            conversations=None,
            backend=result["backend"],
            relative=diff / max(scale, 1e-30),
        )
    # judged: every conversation of every rank's micro-batch, compared with the full batch
    ctx.judged = len(CONVERSATIONS)
    ctx.notes.append(
        f"S7dp judged {result['world_size']} ranks ({result['backend']}), one micro-batch "
        f"each, {len(CONVERSATIONS)} conversations and {result['count']} trained positions "
        "in all, against the full batch's gradient"
    )


def _builtin_names():
    from ..targets import builtin_targets

    return builtin_targets()
