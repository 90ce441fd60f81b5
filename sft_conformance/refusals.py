"""Refusals judged by what they lose (docs/specification.md#refusals).

A target that raises on a batch, or silently leaves an example out of it, loses that example's
training signal. When the example had tokens to train under the target's own declarations (its
turn policy, tokenization and over-long policy at the batch's ``max_length``), losing it is a
finding of the check that was judging the batch: ``failed``, with the example, its trainable
token count and the exception. Only a refusal of a batch with nothing left to train is
conformant (S9), and ``error`` is kept for the suite's own failures and for inputs the suite
cannot judge.
"""

from __future__ import annotations

import difflib

from .alignment import IGNORE_INDEX  # noqa: F401  (re-exported for checks)


def trainable_counts(ctx, conversations, tokenizer, max_length) -> list[tuple[int, int]]:
    """``(example, trainable tokens)`` for each conversation that keeps something to train at
    ``max_length`` under the target's declared policies (raise and drop keep nothing of an
    over-long example; the truncations keep what the reference's truncation keeps)."""
    from sft_conformance.reference import build_example, truncate

    decl = ctx.decl
    out = []
    for i, conv in enumerate(conversations or []):
        try:
            ex = build_example(conv, tokenizer, policy=decl.turn_policy, index=i,
                               tokenization=decl.tokenization, reasoning=decl.reasoning)
        except Exception:
            continue  # the suite cannot judge it: not counted as lost
        if len(ex) > max_length:
            if decl.overlong in ("raise", "drop"):
                continue
            policy = "truncate_prompt" if decl.overlong == "truncate_prompt" \
                else "truncate_response"
            if policy == "truncate_prompt" and ex.turns and \
                    len(ex) - ex.turns[-1].start > max_length:
                continue
            ex = truncate(ex, max_length, policy)
            if ex is None:
                continue
        if ex.n_trained:
            out.append((i, ex.n_trained))
    return out


def describe_lost(lost: list[tuple[int, int]]) -> str:
    shown = ", ".join(f"example {i} ({n} trainable token{'s' if n != 1 else ''})"
                      for i, n in lost[:5])
    more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
    return shown + more


def refusal_message(ctx, check, exc, lost, max_length) -> str:
    """The failure of ``check`` for a target that raised on a batch holding trainable data."""
    from .failures import repro_snippet

    cause = exc.original if hasattr(exc, "original") else exc
    first = (str(cause).splitlines() or [""])[0]
    d = ctx.decl
    convs = ctx.last_inputs.get("conversations")
    pad_eos = bool(ctx.last_inputs.get("pad_equals_eos"))
    return (
        f"{check.id}: the target refused a batch that has tokens to train: "
        f"{describe_lost(lost)} at max_length={max_length}, under its declarations "
        f"(turn_policy={d.turn_policy!r}, overlong={d.overlong!r}, "
        f"tokenization={d.tokenization!r}). collate raised {type(cause).__name__}: {first}\n"
        "  Losing a conversation that has tokens to train is a finding, not a configuration "
        "error: the model never sees it. Only a batch with nothing left to train may be refused "
        "(S9). A filter that drops rows whose labels are all -100 hides a masking bug this way."
        "\n\nReproduce:\n"
        + repro_snippet(ctx, convs, pad_equals_eos=pad_eos, max_length=max_length)
    )


def _real_runs(batch, covered, pad_id) -> list[list[int]]:
    """Runs of real tokens of the batch that no located example covers."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    runs = []
    for r in range(ids.shape[0]):
        row = ids[r].tolist()
        real = (mask[r].bool().tolist() if mask is not None
                else [t != pad_id for t in row])
        run: list[int] = []
        for t, tok in enumerate(row):
            if real[t] and (r, t) not in covered:
                run.append(tok)
            elif run:
                runs.append(run)
                run = []
        if run:
            runs.append(run)
    return runs


def dropped_examples(batch, exs, segs, pad_id) -> list[int]:
    """Examples with trained positions that are not in the batch at all: not located by their
    ids, and no run of unclaimed real tokens holds most of them (an example whose ids merely
    differ, re-tokenized or with an extra BOS, is S1's finding, not a drop)."""
    missing = [i for i, s in enumerate(segs) if s is None and exs[i].n_trained]
    if not missing:
        return []
    covered = {(s.row, t) for s in segs if s is not None for t in range(s.start, s.stop)}
    runs = _real_runs(batch, covered, pad_id)
    out = []
    for i in missing:
        want = exs[i].input_ids
        best = 0.0
        for run in runs:
            matcher = difflib.SequenceMatcher(None, want, run, autojunk=False)
            best = max(best, sum(b.size for b in matcher.get_matching_blocks()) / len(want))
        if best < 0.6:
            out.append(i)
    return out
