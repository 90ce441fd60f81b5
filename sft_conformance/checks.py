"""The conformance checks, one named top-level function per requirement S1-S12 of
docs/specification.md (each check's docstring cites its section, e.g. ``#s4``).

Each check takes a :class:`~sft_conformance.context.Context` and returns quietly when the target
conforms, raises :class:`~sft_conformance.failures.CheckFailure` with a readable counterexample
when it does not, or :class:`~sft_conformance.failures.CheckSkipped` when a capability it needs
is missing. Hypothesis draws the inputs and shrinks a failure to a minimal conversation; the
regressions each check exists for are pinned as explicit examples.

Which checks apply is decided by the target's declared capabilities (:data:`NEEDS`), never by
its name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import hypothesis.strategies as st
import torch
from hypothesis import HealthCheck, Phase, Verbosity, example, given, settings

from sft_conformance.reference import (
    build_example,
    count_trained,
    labels_for,
    oracle_loss,
    sft_loss,
)
from sft_conformance.reference import collate as reference_collate
from sft_conformance.reference import forward as reference_forward

from . import profiles
from .alignment import (
    IGNORE_INDEX,
    canonical_labels,
    document_segments,
    match_documents,
    row_segments,
    trained_padding,
)
from .context import Context
from .failures import CheckSkipped, fail, fail_at_position
from .strategies import CHAR_ALPHABET, conversations
from .tables import show_token

# -- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    func: Callable
    needs: tuple[str, ...]
    doc: str


CHECKS: list[Check] = []


def _check(check_id: str, *needs: str):
    def register(func):
        name = func.__name__.removeprefix("check_")
        doc = (func.__doc__ or "").strip().splitlines()[0]
        CHECKS.append(Check(check_id, name, func, ("collate", *needs), doc))
        return func

    return register


#: what each capability means, and the reason given when a target lacks it
NEEDS = {
    "collate": "collate(conversations, tokenizer, max_length)",
    "loss": "a loss(logits, labels, num_items_in_batch=None) method",
    "packs": "packing (declare packs = True)",
    "multi_turn": "multi-turn conversations (the target declares multi_turn = False)",
    "distributed": "a run with distributed=True (--distributed): it spawns 2 processes",
}


def missing_capability(ctx: Context, check: Check) -> str | None:
    d = ctx.decl
    have = {"collate": True, "loss": d.has_loss, "packs": d.packs,
            "multi_turn": getattr(ctx.target, "multi_turn", True),
            "distributed": ctx.distributed}
    for need in check.needs:
        if not have.get(need, False):
            return f"needs {NEEDS[need]}"
    return None


# -- drawing inputs -----------------------------------------------------------------------------


def _conversations(ctx: Context, *, max_turns=3, adversarial=True, min_turns=1):
    char = ctx.tokenizer().name_or_path.endswith("seed001")
    single = not getattr(ctx.target, "multi_turn", True)
    system = False if (char or single or not getattr(ctx.target, "system_prompt", True)) else None
    strategy = conversations(max_turns=1 if single else max_turns, system=system,
                             adversarial=adversarial,
                             alphabet=CHAR_ALPHABET if char else None,
                             roles=("user", "assistant") if char else
                             ("system", "user", "assistant"))
    if min_turns > 1:
        strategy = strategy.filter(lambda c: sum(m["role"] == "assistant" for m in c) >= min_turns)
    return strategy


def _batch(ctx, *, min_size=1, max_size=3, **kwargs):
    return st.lists(_conversations(ctx, **kwargs), min_size=min_size, max_size=max_size)


def run_property(ctx: Context, strategy, prop, *, pinned=(), budget: float = 1.0) -> None:
    """Run ``prop`` on draws of ``strategy`` under the context's Hypothesis profile."""
    base = profiles.profile(ctx.profile)
    max_examples = max(3, int(base.max_examples * budget))

    def test(inputs):
        prop(inputs)

    test = given(strategy)(test)
    for value in reversed(list(pinned)):
        test = example(value)(test)
    phases = base.phases if ctx.shrink else tuple(p for p in base.phases if p != Phase.shrink)
    settings(parent=base, max_examples=max_examples, verbosity=Verbosity.quiet, phases=phases,
             report_multiple_bugs=False, print_blob=False, database=None, deadline=None,
             suppress_health_check=list(HealthCheck))(test)()


def _expected(ctx, convs, tok):
    exs = [build_example(c, tok, policy=ctx.decl.turn_policy, index=i)
           for i, c in enumerate(convs)]
    labels = []
    for ex in exs:
        lab = labels_for(ex)
        if ctx.decl.trains_after_eot:
            for span in ex.turns:
                nxt = (span.end_token or -2) + 1
                if 0 < nxt < len(ex) and not _is_special(tok, ex.input_ids[nxt]):
                    lab[nxt] = ex.input_ids[nxt]
        labels.append(lab)
    return exs, labels


def _is_special(tok, token_id) -> bool:
    return int(token_id) in set(tok.all_special_ids)


def _fits(ctx, convs, tok) -> bool:
    return all(len(build_example(c, tok, policy=ctx.decl.turn_policy)) <= ctx.max_length
               for c in convs)


def _segments(ctx, batch, exs, convs, *, tok, pad_equals_eos=False):
    """The segment of the batch holding each example (row i for non-packed targets)."""
    if ctx.decl.packs:
        matches, _ = match_documents(batch, [e.input_ids for e in exs])
        return matches
    B = batch["input_ids"].shape[0]
    if B != len(exs):
        fail(ctx, f"the batch has {B} rows for {len(exs)} conversations: the target dropped, "
                  "split or merged examples (S1 expects one row per conversation)",
             conversations=convs, pad_equals_eos=pad_equals_eos)
    return row_segments(batch, [len(e) for e in exs])


def _differences(ctx, convs, tok, batch, relevant, *, pad_equals_eos=False):
    """Yield (example, position, got, want, ids, segment) where ``relevant`` holds."""
    exs, want = _expected(ctx, convs, tok)
    segs = _segments(ctx, batch, exs, convs, tok=tok, pad_equals_eos=pad_equals_eos)
    for i, (ex, seg) in enumerate(zip(exs, segs)):
        if seg is None:
            continue  # a packed document not found: S1/S8 report it
        got = canonical_labels(batch, seg, labels_shifted=ctx.decl.labels_shifted)
        ids = batch["input_ids"][seg.row, seg.start:seg.stop].tolist()
        if ids != ex.input_ids:
            # S1 reports the ids; here judge the tokens both sequences share, in the template's
            # coordinates. A template token the target lacks (a missing end token) is "absent".
            got, ids = _aligned(ex.input_ids, ids, got), ex.input_ids
        for t in range(len(ex)):
            g = IGNORE_INDEX if got[t] is None else got[t]
            if (g != want[i][t] or got[t] is None) and relevant(t, got[t], want[i][t], ex):
                if got[t] is None and want[i][t] == IGNORE_INDEX:
                    continue  # an untrained template token the target lacks: S1's business
                yield i, t, got, want[i], ids, seg


def _aligned(expected_ids, got_ids, got_labels):
    """The target's labels moved onto the template's token positions (None where absent)."""
    import difflib

    out = [None] * len(expected_ids)
    matcher = difflib.SequenceMatcher(None, expected_ids, got_ids, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            out[a + k] = got_labels[b + k]
    return out


def _compare_labels(ctx, convs, tok, batch, relevant, *, what, spec, pad_equals_eos=False):
    """Fail at the first position where ``relevant(pos, got, want, example)`` holds."""
    __tracebackhide__ = True
    for i, t, got, want, ids, seg in _differences(ctx, convs, tok, batch, relevant,
                                                  pad_equals_eos=pad_equals_eos):
        fail_at_position(ctx, what, tokenizer=tok, example=i, input_ids=ids, got=got,
                         expected=want, position=t, spec=spec, conversations=convs,
                         pad_equals_eos=pad_equals_eos, row=seg.row)


def _label_property(ctx, relevant, *, what: str, spec: str):
    """A property over a batch of conversations: the labels agree with the reference wherever
    ``relevant`` says the difference is this check's business."""
    tok = ctx.tokenizer()

    def prop(convs):
        if not _fits(ctx, convs, tok):
            return
        _compare_labels(ctx, convs, tok, ctx.collate(convs, tok), relevant, what=what,
                        spec=spec)

    return prop


def _end_tokens(ex) -> set[int]:
    return {s.end_token for s in ex.turns if s.end_token is not None} | (
        {s.stop - 1 for s in ex.turns})


# -- S1 -----------------------------------------------------------------------------------------


@_check("S1")
def check_template_parity(ctx: Context) -> None:
    """Input ids equal the chat template's tokenization of the whole conversation (S1)."""
    tok = ctx.tokenizer()

    def prop(convs):
        if not _fits(ctx, convs, tok):
            return
        batch = ctx.collate(convs, tok)
        exs, _ = _expected(ctx, convs, tok)
        if ctx.decl.packs:
            matches, unmatched = match_documents(batch, [e.input_ids for e in exs])
            for i, m in enumerate(matches):
                if m is None and not ctx.decl.splits_documents:
                    fail(ctx, f"S1: the input ids of example {i} appear nowhere in the packed "
                              "batch as one document: they differ from the chat template's "
                              "tokenization (or the document was split)",
                         conversations=convs, expected_ids=exs[i].input_ids)
            return
        segs = _segments(ctx, batch, exs, convs, tok=tok)
        for i, (ex, seg) in enumerate(zip(exs, segs)):
            got = batch["input_ids"][seg.row, seg.start:seg.stop].tolist()
            if got == ex.input_ids:
                continue
            t = next((k for k in range(min(len(got), len(ex))) if got[k] != ex.input_ids[k]),
                     min(len(got), len(ex)))
            rows = []
            for k in range(max(0, t - 5), min(max(len(got), len(ex)), t + 6)):
                g = got[k] if k < len(got) else None
                e = ex.input_ids[k] if k < len(ex) else None
                rows.append([">>" if k == t else "", k,
                             show_token(tok, g) if g is not None else "-", g,
                             show_token(tok, e) if e is not None else "-", e])
            from tabulate import tabulate

            table = tabulate(rows, headers=["", "pos", "token", "input_id", "expected token",
                                            "expected id"], tablefmt="github")
            reason = ("an extra BOS" if t == 0 and len(got) == len(ex) + 1 else
                      "re-tokenization at a prompt/response boundary" if len(got) != len(ex)
                      else "different tokens")
            fail(ctx, f"S1: example {i} (batch row {seg.row}): input ids differ from the chat "
                      f"template's tokenization of the whole conversation at position {t} "
                      f"({reason}; {len(got)} tokens, the template gives {len(ex)}). "
                      "Inference sees the template's tokens; training must see the same.",
                 conversations=convs, table=table, example=i, position=t)

    pinned = [[[{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "the answer"}]]]
    run_property(ctx, _batch(ctx), prop, pinned=pinned if _bpe(ctx) else ())


def _pad_eos(ctx):
    """pad == eos or not: both unless the target declares which one it is built for."""
    declared = getattr(ctx.target, "pad_equals_eos", None)
    return st.booleans() if declared is None else st.just(bool(declared))


def _pad_eos_allowed(ctx, value: bool) -> bool:
    declared = getattr(ctx.target, "pad_equals_eos", None)
    return declared is None or bool(declared) == value


def _bpe(ctx) -> bool:
    return not ctx.tokenizer().name_or_path.endswith("seed001")


# -- S2 -----------------------------------------------------------------------------------------


@_check("S2")
def check_first_response_token_trained(ctx: Context) -> None:
    """Every token of every assistant turn is trained, the first one included (S2)."""
    prop = _label_property(
        ctx,
        # a token absent from the target's ids (re-tokenized) is S1's finding, not S2's
        lambda t, got, want, ex: (want != IGNORE_INDEX and got is not None
                                  and t not in _end_tokens(ex)),
        what="S2: an assistant token is not trained (or is trained with the wrong label)",
        spec="every token of the assistant's content is a target, the first included")

    pinned = [[[{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "the answer"}]],
              [[{"role": "user", "content": "hello"},
                {"role": "assistant", "content": "olleh"}]]]
    run_property(ctx, _batch(ctx, adversarial=False), prop,
                 pinned=pinned[:1] if _bpe(ctx) else pinned[1:])


# -- S3 -----------------------------------------------------------------------------------------


@_check("S3")
def check_no_prompt_or_glue_trained(ctx: Context) -> None:
    """No token outside assistant turns is trained: system, user, headers, glue (S3)."""
    prop = _label_property(
        ctx, lambda t, got, want, ex: want == IGNORE_INDEX,
        what="S3: a token outside the assistant's turns is trained",
        spec="system, user, role headers and template glue are never targets")

    pinned = [[[{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "the answer"}]]]
    run_property(ctx, _batch(ctx, adversarial=False), prop, pinned=pinned if _bpe(ctx) else ())


# -- S4 -----------------------------------------------------------------------------------------


@_check("S4")
def check_end_of_turn_trained(ctx: Context) -> None:
    """The end-of-turn token of every assistant turn is trained, also when pad == eos (S4)."""

    def prop(inputs):
        convs, pad_eos = inputs
        tok = ctx.tokenizer(pad_equals_eos=pad_eos)
        if not _fits(ctx, convs, tok):
            return
        batch = ctx.collate(convs, tok)
        _compare_labels(
            ctx, convs, tok, batch,
            lambda t, got, want, ex: t in _end_tokens(ex) and want != IGNORE_INDEX,
            what="S4: the end-of-turn token is not trained: the model never learns to stop"
                 + (" (pad == eos)" if pad_eos else ""),
            spec=f"the end-of-turn token {tok.eos_token!r} of each assistant turn is a target",
            pad_equals_eos=pad_eos)

    pinned = [([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}],
                [{"role": "user", "content": "a longer question here"},
                 {"role": "assistant", "content": "sure"}]], True)]
    run_property(ctx, st.tuples(_batch(ctx, adversarial=False), _pad_eos(ctx)), prop,
                 pinned=[p for p in pinned if _pad_eos_allowed(ctx, p[1])] if _bpe(ctx) else ())


# -- S5 -----------------------------------------------------------------------------------------


@_check("S5")
def check_padding_invariance(ctx: Context) -> None:
    """Padding is never trained and changes neither labels nor real tokens' logits (S5)."""

    def prop(inputs):
        convs, pad_eos = inputs
        tok = ctx.tokenizer(pad_equals_eos=pad_eos)
        if not _fits(ctx, convs, tok):
            return
        batch = ctx.collate(convs, tok)
        exs, _ = _expected(ctx, convs, tok)
        segs = _segments(ctx, batch, exs, convs, tok=tok, pad_equals_eos=pad_eos)
        shifted = ctx.decl.labels_shifted
        real = document_segments(batch) if ctx.decl.packs else [s for s in segs if s is not None]
        padded = trained_padding(batch, real, labels_shifted=shifted)
        if padded:
            r, i = padded[0]
            fail(ctx, f"S5: padding is trained: batch row {r}, label index {i} is "
                      f"{int(batch['labels'][r, i])} but its target is a padding position. "
                      "Padding must always carry the ignore index (-100).",
                 conversations=convs, pad_equals_eos=pad_eos)
        if ctx.decl.packs:
            return  # documents of a packed row are judged against each other by S8
        model = ctx.model()
        with torch.no_grad():
            logits = ctx.forward(batch)
            for i, (conv, seg) in enumerate(zip(convs, segs)):
                if seg is None:
                    continue
                single = ctx.collate([conv], tok)
                sseg = _segments(ctx, single, exs[i:i + 1], [conv], tok=tok)[0]
                got_labels = canonical_labels(batch, seg, labels_shifted=shifted)
                alone_labels = canonical_labels(single, sseg, labels_shifted=shifted)
                if got_labels != alone_labels:
                    t = next(k for k in range(min(len(got_labels), len(alone_labels)))
                             if got_labels[k] != alone_labels[k])
                    fail_at_position(ctx, "S5: batching with padding changed the labels",
                                     tokenizer=tok, example=i,
                                     input_ids=batch["input_ids"][seg.row,
                                                                  seg.start:seg.stop].tolist(),
                                     got=got_labels, expected=alone_labels, position=t,
                                     spec="the same labels as the example collated alone",
                                     conversations=convs, pad_equals_eos=pad_eos, row=seg.row)
                n = len(seg)
                if "position_ids" in batch:
                    pos = batch["position_ids"][seg.row, seg.start:seg.stop].tolist()
                    if pos != list(range(n)):
                        fail(ctx, f"S5: the position ids of example {i} (batch row {seg.row}) "
                                  f"start at {pos[0]}, not 0: padding shifted the positions of "
                                  f"the real tokens ({pos[:6]}...). Left padding needs "
                                  "position ids counted from the first real token.",
                             conversations=convs, pad_equals_eos=pad_eos, example=i)
                ids = batch["input_ids"][seg.row, seg.start:seg.stop]
                plain = model(input_ids=ids[None]).logits[0]  # the example with no padding
                a = logits[seg.row, seg.start:seg.stop]
                diff = (a.float() - plain.float()).abs().amax(dim=-1)
                if float(diff.max()) > 1e-4 * max(1.0, float(plain.abs().max())):
                    t = int(diff.argmax())
                    fail(ctx, f"S5: padding changes the logits of real tokens: example {i} "
                              f"(batch row {seg.row}), position {t} (token "
                              f"'{show_token(tok, ids[t])}'): max |logit difference| "
                              f"{float(diff.max()):.3g} against the example with no padding. "
                              "Check the attention mask and position ids"
                              + (" (pad == eos: an attention mask computed as input_ids != "
                                 "pad_id hides the real end tokens)" if pad_eos else "") + ".",
                         conversations=convs, pad_equals_eos=pad_eos, example=i, position=t)

    run_property(ctx, st.tuples(_batch(ctx, min_size=2, max_turns=2), _pad_eos(ctx)), prop,
                 budget=0.3)


# -- S6 -----------------------------------------------------------------------------------------


#: relative tolerance by the dtype the target computed its loss in (as torch.testing does)
TOLERANCE = {torch.float64: 1e-7, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _tolerance(loss: torch.Tensor) -> float:
    return TOLERANCE.get(loss.dtype, 2e-5)


def _random_logits(batch, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    B, T = batch["input_ids"].shape
    return (torch.randn(B, T, vocab, generator=g, dtype=torch.float64) * 3).requires_grad_()


@_check("S6", "loss")
def check_loss_equals_oracle(ctx: Context) -> None:
    """The loss is the token mean of -log p(target) over the batch's trained positions (S6)."""
    tok = ctx.tokenizer()
    V = len(tok)

    def prop(inputs):
        convs, seed = inputs
        if not _fits(ctx, convs, tok):
            return
        batch = ctx.collate(convs, tok)
        logits = _random_logits(batch, V, seed)
        got = ctx.loss(logits, batch["labels"])
        labels = batch["labels"].tolist()
        want = oracle_loss(logits.detach().tolist(), labels,
                           labels_shifted=ctx.decl.labels_shifted)
        if want is None:
            return
        value = float(got.detach())
        tol = max(1e-6, _tolerance(got))
        if not math.isfinite(value) or abs(value - want) > tol * max(1.0, abs(want)):
            per_seq = [oracle_loss([row], [lab], labels_shifted=ctx.decl.labels_shifted)
                       for row, lab in zip(logits.detach().tolist(), labels)]
            per_seq = [x for x in per_seq if x is not None]
            hint = (f"; the mean of per-sequence means would be "
                    f"{sum(per_seq) / len(per_seq):.6f}" if per_seq else "")
            n = count_trained(batch["labels"], labels_shifted=ctx.decl.labels_shifted)
            fail(ctx, f"S6: loss {value:.6f} != {want:.6f}, the mean of -log p(target) over "
                      f"the {n} trained positions of the batch (float64 logits, tolerance "
                      f"{tol:g}, loss computed in {got.dtype}){hint}.",
                 conversations=convs, extra_repro=(
                     "import torch\n"
                     f"logits = torch.randn(*batch['input_ids'].shape, {V}, "
                     f"generator=torch.Generator().manual_seed({seed}), dtype=torch.float64) * 3\n"
                     "print(target.loss(logits, batch['labels']))"),
                 loss=value, expected_loss=want)

    run_property(ctx, st.tuples(_batch(ctx, min_size=2, adversarial=False),
                                st.integers(0, 2**16)), prop, budget=0.4)


# -- S7 -----------------------------------------------------------------------------------------


@_check("S7", "loss")
def check_gradient_accumulation(ctx: Context) -> None:
    """k micro-batches with num_items_in_batch give the full batch's loss and gradient (S7)."""
    tok = ctx.tokenizer()
    V = len(tok)
    shifted = ctx.decl.labels_shifted

    def prop(inputs):
        convs, split, seed = inputs
        if not _fits(ctx, convs, tok):
            return
        split = max(1, min(split, len(convs) - 1))
        groups = [convs[:split], convs[split:]]
        micro = [ctx.collate(g, tok) for g in groups]
        N = sum(count_trained(mb["labels"], labels_shifted=shifted) for mb in micro)
        if N == 0:
            return
        got_total, want_total = 0.0, 0.0
        for k, mb in enumerate(micro):
            logits = _random_logits(mb, V, seed + k)
            loss = ctx.loss(logits, mb["labels"], num_items_in_batch=N)
            loss.backward()
            ref_logits = logits.detach().clone().requires_grad_()
            ref = sft_loss(ref_logits, mb["labels"], labels_shifted=shifted,
                           num_items_in_batch=N)
            ref.backward()
            got_total += float(loss)
            want_total += float(ref)
            diff = (logits.grad - ref_logits.grad).abs().max()
            tol = _tolerance(loss) * max(1e-12, float(ref_logits.grad.abs().max()))
            if not torch.isfinite(diff) or float(diff) > tol:
                fail(ctx, f"S7: micro-batch {k} of {len(micro)}: the gradient differs from the "
                          f"full-batch token mean's by up to {float(diff):.3g} "
                          f"(num_items_in_batch={N} trained positions in the whole step). A "
                          "loss that divides by its own micro-batch's count weights a token of "
                          "a short micro-batch more than one of a long micro-batch.",
                     conversations=convs, micro_batches=[len(g) for g in groups])
        if abs(got_total - want_total) > _tolerance(loss) * max(1.0, abs(want_total)):
            fail(ctx, f"S7: the sum of micro-batch losses is {got_total:.6f}, the full batch's "
                      f"token mean is {want_total:.6f} (num_items_in_batch={N}).",
                 conversations=convs)

    run_property(ctx, st.tuples(_batch(ctx, min_size=2, max_size=4, adversarial=False),
                                st.integers(1, 3), st.integers(0, 2**16)), prop, budget=0.4)


# -- S8 -----------------------------------------------------------------------------------------


@_check("S8", "packs")
def check_packing_equivalence(ctx: Context) -> None:
    """Packed documents restart positions, never attend or predict across a boundary (S8)."""
    tok = ctx.tokenizer()
    shifted = ctx.decl.labels_shifted

    def prop(convs):
        if not _fits(ctx, convs, tok):
            return
        exs, want = _expected(ctx, convs, tok)
        # a cap that forces at least two rows, so packing must decide where documents go
        lengths = [len(e) for e in exs]
        cap = max(max(lengths), math.ceil(sum(lengths) * 0.6))
        batch = ctx.collate(convs, tok, cap)
        matches, unmatched = match_documents(batch, [e.input_ids for e in exs])
        for i, seg in enumerate(matches):
            if seg is None and not ctx.decl.splits_documents:
                pieces = [(s.row, s.start, s.stop) for s in unmatched]
                fail(ctx, f"S8: example {i} is not one whole document of the packed batch: it "
                          f"was split across rows or positions (pieces (row, start, stop): "
                          f"{pieces[:6]}). A split document loses its beginning as context.",
                     conversations=convs, example=i)
        with torch.no_grad():
            logits = ctx.forward(batch)
            for i, seg in enumerate(matches):
                if seg is None:
                    continue
                n = len(seg)
                if "position_ids" not in batch:
                    fail(ctx, "S8: a packed batch without position_ids: documents after the "
                              "first get positions that continue across the boundary",
                         conversations=convs)
                pos = batch["position_ids"][seg.row, seg.start:seg.stop].tolist()
                if pos != list(range(n)):
                    fail(ctx, f"S8: positions of example {i} (row {seg.row}, tokens "
                              f"{seg.start}..{seg.stop - 1}) do not restart at 0: {pos[:8]}...",
                         conversations=convs, example=i)
                got = canonical_labels(batch, seg, labels_shifted=shifted)
                ids = exs[i].input_ids
                if seg.start > 0 and got[0] != IGNORE_INDEX:
                    fail_at_position(
                        ctx, "S8: a target crosses a document boundary: the first token of a "
                             "document is predicted from the previous document's last position",
                        tokenizer=tok, example=i, input_ids=ids, got=got, expected=want[i],
                        position=0, spec="no target crosses a document boundary",
                        conversations=convs, row=seg.row)
                single = ctx.collate([convs[i]], tok, cap)
                sseg, _ = match_documents(single, [ids])
                if sseg[0] is not None:
                    alone_labels = canonical_labels(single, sseg[0], labels_shifted=shifted)
                    for t in range(n):
                        if got[t] != alone_labels[t]:
                            fail_at_position(
                                ctx, "S8: packing changed a document's labels", tokenizer=tok,
                                example=i, input_ids=ids, got=got, expected=alone_labels,
                                position=t, spec="the labels of the document collated alone",
                                conversations=convs, row=seg.row)
                alone = reference_collate([convs[i]], tok, 10**6, policy=ctx.decl.turn_policy)
                ref = reference_forward(ctx.model(), alone)[0, :n]
                diff = (logits[seg.row, seg.start:seg.stop].float() - ref.float()).abs().amax(-1)
                if float(diff.max()) > 1e-4 * max(1.0, float(ref.abs().max())):
                    t = int(diff.argmax())
                    fail(ctx, f"S8: attention crosses document boundaries: the logits of example "
                              f"{i} (row {seg.row}) at position {t} differ by "
                              f"{float(diff.max()):.3g} from the document run alone. Packed "
                              "rows need a block-diagonal causal mask (or varlen attention with "
                              "cu_seqlens); position_ids alone do not isolate documents under "
                              "sdpa/eager attention.",
                         conversations=convs, example=i, position=t,
                         call_convention="target.forward" if ctx.decl.has_forward else
                         "model(input_ids, attention_mask, position_ids)")

    run_property(ctx, _batch(ctx, min_size=2, max_size=5, max_turns=2, adversarial=False), prop,
                 budget=0.3)


# -- S9 -----------------------------------------------------------------------------------------


@_check("S9")
def check_truncation(ctx: Context) -> None:
    """Over-long examples follow the declared policy: no NaN, no silent zero, no empty example
    (S9)."""
    tok = ctx.tokenizer()
    policy = ctx.decl.overlong
    shifted = ctx.decl.labels_shifted

    def prop(inputs):
        convs, delta = inputs
        exs, _ = _expected(ctx, convs, tok)
        longest = max(len(e) for e in exs)
        cap = max(8, longest + delta)
        overlong = [i for i, e in enumerate(exs) if len(e) > cap]
        try:
            batch = ctx.collate(convs, tok, cap)
        except Exception as exc:
            if policy == "raise" and overlong:
                return  # declared
            if policy == "raise" and not overlong:
                raise
            cause = getattr(exc, "original", exc)
            if type(cause).__name__ in ("NoTrainedPositionError",):
                return  # a loud refusal of a batch with nothing to train is conformant
            raise
        if policy == "raise" and overlong:
            fail(ctx, f"S9: the target declares overlong='raise' but collated example(s) "
                      f"{overlong} longer than max_length={cap} without raising",
                 conversations=convs, max_length=cap)
        labels = batch["labels"]
        width = batch["input_ids"].shape[1]
        if width > cap and not ctx.decl.packs:
            fail(ctx, f"S9: the batch is {width} tokens wide, more than max_length={cap}",
                 conversations=convs, max_length=cap)
        if ctx.decl.packs:
            longest = max((len(seg) for seg in document_segments(batch)), default=0)
            if longest > cap:
                fail(ctx, f"S9: a packed document of {longest} tokens exceeds max_length={cap}: "
                          f"the over-long example was kept whole, although the target declares "
                          f"overlong={policy!r}", conversations=convs, max_length=cap)
        for r in range(labels.shape[0]):
            n_row = count_trained(labels[r:r + 1], labels_shifted=shifted)
            if n_row == 0:
                fail(ctx, f"S9: batch row {r} has no trained position after truncation to "
                          f"max_length={cap}: it costs compute, teaches nothing and, alone in a "
                          "micro-batch, gives NaN or a silent zero loss. Drop it (and say so) "
                          "or truncate the prompt instead.",
                     conversations=convs, max_length=cap, row=r)
        if policy == "truncate_response" and not ctx.decl.packs:
            for seg in row_segments(batch, [cap] * labels.shape[0]):
                ids = batch["input_ids"][seg.row, seg.start:seg.stop].tolist()
                i = next((k for k in overlong if exs[k].input_ids[:len(ids) - 1] == ids[:-1]),
                         None)
                if i is None:
                    continue  # a row that was not truncated
                got = canonical_labels(batch, seg, labels_shifted=shifted)
                trained_ids = [ids[t] for t in range(len(ids)) if got[t] != IGNORE_INDEX]
                if trained_ids and trained_ids[-1] != tok.eos_token_id:
                    fail(ctx, f"S9: example {i} was truncated to {cap} tokens and lost its "
                              f"end-of-turn token {tok.eos_token!r}; the target declares "
                              "'truncate_response', which keeps it so the model still learns "
                              "to stop.", conversations=convs, max_length=cap, example=i)
        if ctx.decl.has_loss:
            logits = _random_logits(batch, len(tok), 0)
            value = ctx.loss(logits, labels)
            value = value.detach()
            if not torch.isfinite(value) or float(value) == 0.0:
                fail(ctx, f"S9: the loss of the truncated batch is {float(value)} (NaN or a "
                          "silent zero)", conversations=convs, max_length=cap)

    run_property(ctx, st.tuples(_batch(ctx, max_size=2, adversarial=False),
                                st.sampled_from([-12, -3, -1, 0, 1])), prop, budget=0.4)
    if ctx.decl.has_loss:
        _check_all_masked_loss(ctx, tok)


def _check_all_masked_loss(ctx, tok):
    """A micro-batch whose labels are all -100: finite, zero gradient, never NaN."""
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    batch = ctx.collate([conv], tok)
    labels = torch.full_like(batch["labels"], IGNORE_INDEX)
    logits = _random_logits(batch, len(tok), 0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = ctx.loss(logits, labels)
        value_n = ctx.loss(logits.detach().clone().requires_grad_(), labels, num_items_in_batch=7)
    for v, how in ((value, "without"), (value_n, "with")):
        if not torch.isfinite(v):
            fail(ctx, f"S9: the loss of a micro-batch with no trained position is {float(v)} "
                      f"({how} num_items_in_batch); one such micro-batch makes the whole step "
                      "NaN. Return a graph-connected zero.", conversations=[conv],
                 extra_repro="import torch\nlabels = torch.full_like(batch['labels'], -100)\n"
                             "print(target.loss(torch.randn(*labels.shape, len(tokenizer)), "
                             "labels))")


# -- S10 ----------------------------------------------------------------------------------------


@_check("S10", "multi_turn")
def check_multi_turn_policy(ctx: Context) -> None:
    """Every assistant turn is trained (or only the last, if declared), no other message (S10)."""
    from sft_conformance.reference.masks import content_tokens

    tok = ctx.tokenizer()
    policy = ctx.decl.turn_policy

    def prop(convs):
        if not _fits(ctx, convs, tok):
            return
        batch = ctx.collate(convs, tok)
        exs, want = _expected(ctx, convs, tok)
        segs = _segments(ctx, batch, exs, convs, tok=tok)
        for i, (conv, ex, seg) in enumerate(zip(convs, exs, segs)):
            if seg is None:
                continue
            ids = batch["input_ids"][seg.row, seg.start:seg.stop].tolist()
            if ids != ex.input_ids:
                continue
            got = canonical_labels(batch, seg, labels_shifted=ctx.decl.labels_shifted)
            turns = build_example(conv, tok, policy="all").turns
            for k, span in enumerate(turns):
                trained = any(got[t] != IGNORE_INDEX for t in range(span.start, span.stop))
                should = policy == "all" or k == len(turns) - 1
                if trained != should:
                    fail_at_position(
                        ctx, f"S10: assistant turn {k + 1} of {len(turns)} (message "
                             f"{span.message}) is {'trained' if trained else 'not trained'}, "
                             f"but the declared policy is {policy!r} ("
                             + ("every assistant turn" if policy == "all" else "the last only")
                             + ")", tokenizer=tok, example=i, input_ids=ids, got=got,
                        expected=want[i], position=span.start,
                        spec=f"turn policy {policy!r}", conversations=convs, row=seg.row)
            for j, positions in enumerate(content_tokens(conv, tok)):
                if conv[j]["role"] == "assistant":
                    continue
                hits = [t for t in positions if got[t] != IGNORE_INDEX]
                if hits:
                    fail_at_position(
                        ctx, f"S10: the {conv[j]['role']} message {j} of a multi-turn "
                             "conversation is trained", tokenizer=tok, example=i, input_ids=ids,
                        got=got, expected=want[i], position=hits[0],
                        spec="only assistant turns are trained", conversations=convs,
                        row=seg.row)

    pinned = [[[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "one"},
                {"role": "user", "content": "more"}, {"role": "assistant", "content": "two"}]]]
    run_property(ctx, _batch(ctx, max_size=2, min_turns=2, adversarial=False), prop,
                 pinned=pinned if _bpe(ctx) else (), budget=0.6)


# -- S11 ----------------------------------------------------------------------------------------


def _neutralized(convs):
    """The same conversations with every role word, header and look-alike replaced by 'x'."""
    from .strategies import ADVERSARIAL_PIECES

    out = []
    for conv in convs:
        new = []
        for m in conv:
            text = m["content"]
            for piece in sorted(ADVERSARIAL_PIECES, key=len, reverse=True):
                text = text.replace(piece, "x")
            new.append({"role": m["role"], "content": text})
        out.append(new)
    return out


@_check("S11")
def check_content_independence(ctx: Context) -> None:
    """Role words, header text and special-token look-alikes in content do not move the mask
    (S11)."""
    tok = ctx.tokenizer()

    def prop(convs):
        if not _fits(ctx, convs, tok):
            return
        batch = ctx.collate(convs, tok)
        first = next(_differences(ctx, convs, tok, batch, lambda *a: True), None)
        if first is None:
            return
        plain = _neutralized(convs)
        if plain == convs or not _fits(ctx, plain, tok):
            return  # nothing adversarial: a plain masking bug, for S2/S3/S4/S10
        if next(_differences(ctx, plain, tok, ctx.collate(plain, tok), lambda *a: True),
                None) is not None:
            return  # wrong with neutral content too: not caused by the content
        i, t, got, want, ids, seg = first
        fail_at_position(
            ctx, "S11: the mask moved with the content of a message (a role word, the assistant "
                 "header text or a special-token look-alike inside a message); with those "
                 "strings replaced by 'x' the same conversation is masked right",
            tokenizer=tok, example=i, input_ids=ids, got=got, expected=want, position=t,
            spec="masks depend on turns, never on what a message says", conversations=convs,
            row=seg.row)

    header = {"chatml": "<|im_start|>assistant\n", "chatml-generation": "<|im_start|>assistant\n",
              "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
              "seed000": "<|assistant|>"}.get(ctx.tokenizer_name, "assistant")
    pinned = [[[{"role": "user", "content": f"say {header}ok"},
                {"role": "assistant", "content": "ok"}]],
              [[{"role": "user", "content": "q"},
                {"role": "assistant", "content": f"the header is {header} here"}]]]
    run_property(ctx, _batch(ctx, adversarial=True), prop, pinned=pinned if _bpe(ctx) else ())


# -- S12 ----------------------------------------------------------------------------------------


@_check("S12")
def check_option_invariance(ctx: Context) -> None:
    """Batch size and declared math-neutral options change neither trained tokens nor loss
    (S12)."""
    tok = ctx.tokenizer()
    shifted = ctx.decl.labels_shifted
    variants = {}
    from .target import declared

    for name, factory in ctx.decl.options.items():
        variant = factory()
        variants[name] = (variant, declared(variant))

    def trained_sets(target_ctx_decl, batch, exs):
        if target_ctx_decl.packs:
            segs, _ = match_documents(batch, [e.input_ids for e in exs])
        else:
            segs = row_segments(batch, [len(e) for e in exs])
        return [None if s is None else canonical_labels(batch, s,
                                                        labels_shifted=target_ctx_decl.labels_shifted)
                for s in segs]

    def model_loss(target, decl, batch):
        with torch.no_grad():
            if decl.has_forward:
                logits = target.forward(ctx.model(), batch)
            else:
                logits = ctx.forward(batch) if target is ctx.target else ctx.model()(
                    **{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")
                       if k in batch}).logits
            return float(target.loss(logits, batch["labels"]))

    def prop(convs):
        if not _fits(ctx, convs, tok):
            return
        exs, _ = _expected(ctx, convs, tok)
        batch = ctx.collate(convs, tok)
        base = trained_sets(ctx.decl, batch, exs)
        # batch size: each conversation alone
        for i, conv in enumerate(convs):
            single = ctx.collate([conv], tok)
            alone = trained_sets(ctx.decl, single, exs[i:i + 1])[0]
            if base[i] is not None and alone is not None and alone != base[i]:
                t = next(k for k in range(len(alone)) if alone[k] != base[i][k])
                fail_at_position(ctx, "S12: the trained tokens depend on the batch size",
                                 tokenizer=tok, example=i, input_ids=exs[i].input_ids,
                                 got=base[i], expected=alone, position=t,
                                 spec="the example collated alone", conversations=convs)
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
                fail(ctx, f"S12: the loss depends on the batch size: {together:.6f} for the "
                          f"batch, {sums / counts:.6f} from its examples one at a time "
                          "(token-weighted)", conversations=convs)
        for name, (variant, vdecl) in variants.items():
            try:
                vbatch = validate_variant(variant, convs, tok, ctx)
            except Exception as exc:
                fail(ctx, f"S12: option {name!r} raised in collate: {exc}", conversations=convs)
            vsets = trained_sets(vdecl, vbatch, exs)
            for i, (a, b) in enumerate(zip(base, vsets)):
                if a is not None and b is not None and a != b:
                    t = next(k for k in range(len(a)) if a[k] != b[k])
                    fail_at_position(ctx, f"S12: option {name!r} changes the trained tokens",
                                     tokenizer=tok, example=i, input_ids=exs[i].input_ids,
                                     got=b, expected=a, position=t,
                                     spec="the same labels as without the option",
                                     conversations=convs)
            if ctx.decl.has_loss and vdecl.has_loss:
                a, b = model_loss(ctx.target, ctx.decl, batch), model_loss(variant, vdecl, vbatch)
                if abs(a - b) > 1e-4 * max(1.0, abs(a)):
                    fail(ctx, f"S12: option {name!r} changes the loss of the tiny model on the "
                              f"same conversations: {b:.6f} with it, {a:.6f} without",
                         conversations=convs, option=name)

    run_property(ctx, _batch(ctx, min_size=2, max_turns=2, adversarial=False), prop, budget=0.3)


def validate_variant(variant, convs, tok, ctx):
    from .context import validate_batch

    return validate_batch(variant.collate(convs, tok, ctx.max_length),
                          getattr(variant, "name", "option"))


# -- S7 across ranks ---------------------------------------------------------------------------


@_check("S7dp", "loss", "distributed")
def check_data_parallel_normalization(ctx: Context) -> None:
    """Under torch.distributed, ranks' averaged gradient equals the full batch's (S7, DP)."""
    from .distributed import run_data_parallel

    if ":" not in ctx.spec and ctx.spec not in _builtin_names():
        raise CheckSkipped("the distributed check loads the target by name in each rank: "
                           "pass it as a built-in name or module:attr")
    result = run_data_parallel(ctx.spec, tokenizer_name=ctx.tokenizer_name)
    diff = float((result["grads"] - result["want"]).abs().max())
    scale = float(result["want"].abs().max())
    if not math.isfinite(diff) or diff > 1e-4 * max(scale, 1e-12):
        fail(ctx, f"S7 (data parallel): with {result['world_size']} ranks ({result['backend']}), "
                  f"each with its own micro-batch, the all-reduced gradient differs from the "
                  f"full batch's by up to {diff:.3g} (relative {diff / scale:.3g}); summed loss "
                  f"{result['loss']:.6f} against the full batch's token mean "
                  f"{result['want_loss']:.6f} ({result['count']} trained positions). A loss "
                  "normalized by each rank's local token count, averaged by the all-reduce, is "
                  "a mean of per-rank means: pass the global count as num_items_in_batch.",
             conversations=None, backend=result["backend"], relative=diff / scale)


def _builtin_names():
    from .targets import builtin_targets

    return builtin_targets()


CHECK_IDS = [c.id for c in CHECKS]
BY_ID = {c.id: c for c in CHECKS}
