"""Collate once, judge many (issue 24): the label-level checks' batches served from a few large
``collate`` calls.

A target's own per-call cost (a library's datasets map, its template objects, a tokenizer copy)
is paid once per drawn batch when every check calls ``collate`` on each of its draws. Under a
derandomized profile the draws of a check on a target that passes are a fixed sequence, so the
run can learn them first:

1. **Record.** Each label-level check runs once against a stand-in that answers every
   ``collate`` call with the batch the specification expects (the reference's examples, padded
   on the right). The calls are recorded: conversations, tokenizer, ``max_length``.
2. **Collate in chunks.** The recorded conversations, each once, go to the target in chunks of
   :data:`CHUNK` per tokenizer and ``max_length``.
3. **Serve.** When a check asks for a recorded batch of drawn conversations (pinned inputs and
   the special strings always reach the target as the batches they are), it gets the chunk's
   rows of its conversations, provided each one is *clean*: the row holds exactly the expected
   ids of that conversation (the untrained glue after the last end token may be left out) and
   nothing but padding around them. Anything else (a packed row, a dropped or re-tokenized
   conversation, a refused chunk, keys that are not per row) is asked of the target itself.
   When the first chunk call has no clean row, the recording stops there and nothing is
   served (:func:`record_and_prepare`).

The first pass of a check does not shrink. A check that does not pass on it runs again: the same
draws, served up to the batch on which the first pass failed and asked of the target from there
on, shrinking included (sft_conformance.runner._run_served), so every failure, counterexample
and shrink comes from the target's own calls on the check's own batches. The stored verdicts
are reproduced exactly (tests/test_batch_judging.py).
"""

from __future__ import annotations

import copy
import dataclasses

import torch

#: conversations per chunk call
CHUNK = 64
#: the checks whose batches may be served: they judge each example's ids and labels alone
LABEL_LEVEL = ("S1", "S2", "S3", "S4", "S10", "S11", "S13", "S14", "S15")
#: ``SFT_CONFORMANCE_BATCH_JUDGING=0`` turns it off
ENV = "SFT_CONFORMANCE_BATCH_JUDGING"
_ROW_KEYS = ("input_ids", "labels", "attention_mask", "position_ids")


def enabled_by_default() -> bool:
    import os

    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


#: a target whose probe ``collate`` call (the preflight's two plain conversations) took less
#: than this many seconds is not served: the recording pass costs about as much per drawn batch
#: (the expected batch of every draw) as such a call, so serving would only add it (measured on
#: 2 cores: the transformers collators answer in 1-5 ms, a TRL row in 20-100 ms)
CHEAP_CALL = 0.015


def applies(ctx) -> bool:
    """Whether batch judging can help this run: a derandomized profile (the draws are a fixed
    sequence) and a target whose ``collate`` costs more than the recording pass saves.

    A target declares ``batch_judging = False`` to opt out (our reference and its mutants: their
    collate is the expectation itself) or ``True`` to be served whatever its calls cost;
    undeclared, its probe call's time decides (:data:`CHEAP_CALL`). Verdicts, judged counts
    and counterexamples are the same either way (tests/test_batch_judging.py)."""
    from . import profiles

    declared = getattr(ctx.target, "batch_judging", None)
    if declared is False:
        return False
    try:
        if not profiles.profile(ctx.profile).derandomize:
            return False
    except Exception:
        return False
    return declared is True or ctx.memo.get("probe_seconds", float("inf")) >= CHEAP_CALL


class _Expected:
    """The stand-in target of the recording pass: records each call and answers with the
    batch the specification expects."""

    def __init__(self, ctx, target):
        self.ctx = ctx
        self.calls = []
        self._target = target

    def __getattr__(self, key):  # the target's declarations, as the checks read them
        return getattr(self._target, key)

    def collate(self, conversations, tokenizer, max_length):
        from .checks.labels import expected_labels

        if self.ctx.drawing:  # pinned and special inputs always reach the target as they are
            self.calls.append((copy.deepcopy(conversations), tokenizer, max_length))
        exs, want = expected_labels(self.ctx, conversations, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        width = max((len(e.input_ids) for e in exs), default=1) or 1
        ids, labels, mask = [], [], []
        for e, w in zip(exs, want):
            n = len(e.input_ids)
            lab = list(w)
            if self.ctx.decl.labels_shifted:
                lab = lab[1:] + [-100]
            ids.append(list(e.input_ids) + [pad] * (width - n))
            labels.append(lab + [-100] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {"input_ids": torch.tensor(ids, dtype=torch.long),
                "labels": torch.tensor(labels, dtype=torch.long),
                "attention_mask": torch.tensor(mask, dtype=torch.long)}


def record(ctx, checks, keep_going=None) -> list:
    """The ``collate`` calls the label-level ``checks`` make on a target that passes them.
    ``keep_going(calls)``, asked after each check, may end the recording early (False): then
    the calls recorded so far are returned."""
    from .failures import CheckFailure, CheckSkipped

    stand_in = _Expected(ctx, ctx.target)
    rec = dataclasses.replace(ctx, target=stand_in, shrink=False, notes=[], rejections={},
                              judged=0, failed=False, last_inputs={})
    stand_in.ctx = rec
    for check in checks:
        rec.check_id, rec.judged, rec.failed, rec.notes, rec.rejections = \
            check.id, 0, False, [], {}
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check.func(rec)
        except (CheckFailure, CheckSkipped):
            pass  # a declaration the stand-in does not follow: later draws are asked directly
        except Exception:
            pass
        if keep_going is not None and not keep_going(stand_in.calls):
            break
    return stand_in.calls


def _groups(calls) -> dict:
    """``{(id(tokenizer), max_length): (tokenizer, max_length, {repr: conversation})}``: the
    recorded conversations, each once, per tokenizer and ``max_length``, in the order of the
    calls (the chunk calls of :func:`prepare`)."""
    groups: dict = {}
    for convs, tok, max_length in calls:
        g = groups.setdefault((id(tok), max_length), (tok, max_length, {}))
        for c in convs:
            g[2].setdefault(repr(c), c)
    return groups


def first_chunk(calls):
    """``(tokenizer, max_length, conversations)`` of the first chunk call :func:`prepare` makes
    on these calls, once they fix it (:data:`CHUNK` distinct conversations of the first call's
    tokenizer and ``max_length``: calls recorded later only add chunks after it); else None."""
    groups = _groups(calls)
    if not groups:
        return None
    tok, max_length, unique = next(iter(groups.values()))
    if len(unique) < CHUNK:
        return None
    return tok, max_length, list(unique.values())[:CHUNK]


def record_and_prepare(ctx, inner, checks) -> dict:
    """:func:`record` then :func:`prepare`, giving up as soon as the first chunk call comes back
    with no clean row (the target refused it, packs its rows, or re-tokenizes): such a target
    is asked for every batch itself, and recording the remaining checks' calls would be time
    lost (a TRL row on qwen2.5 lost 3 s to it). The chunk calls are those :func:`prepare` makes
    on the full recording, the first one made once."""
    tried: dict = {}

    def keep_going(calls) -> bool:
        if tried:
            return True
        chunk = first_chunk(calls)
        if chunk is None:
            return True
        tok, max_length, convs = chunk
        tried["rows"] = chunk_rows(ctx, inner, convs, tok, max_length)
        tried["key"] = (id(tok), max_length, 0)
        return bool(tried["rows"])

    calls = record(ctx, checks, keep_going)
    if tried and not tried["rows"]:
        return {}
    return prepare(ctx, inner, calls, done={tried["key"]: tried["rows"]} if tried else None)


def _row_content(batch, r, pad_id):
    """``(ids, padded)``: the ids of row ``r`` without its padding, and whether what is left
    out around them is padding only (attention mask 0, else the pad id)."""
    ids = batch["input_ids"][r].tolist()
    mask = batch.get("attention_mask")
    if mask is not None:
        m = mask[r].tolist()
        on = [t for t, v in enumerate(m) if v]
        if not on or on[-1] - on[0] + 1 != len(on):
            return None
        return ids[on[0]:on[-1] + 1], True
    start = 0
    while pad_id is not None and start < len(ids) and ids[start] == pad_id:
        start += 1
    return ids[start:], False


def _matches(content, expected, droppable, pad_id) -> bool:
    ids, masked = content
    for want in ([expected, expected[:-1]] if droppable and len(expected) > 1 else [expected]):
        if masked and ids == want:
            return True
        if not masked and ids[:len(want)] == want and all(x == pad_id for x in ids[len(want):]):
            return True
    return False


def chunk_rows(ctx, inner, convs, tok, max_length) -> dict:
    """``{repr(conversation): (batch, row)}`` for the conversations of one chunk call whose
    row is clean (see the module docstring); empty when the target refuses the chunk."""
    from .checks.labels import droppable_tails, expected_labels
    from .context import validate_batch

    try:
        batch = validate_batch(inner.collate(copy.deepcopy(convs), tok, max_length),
                               ctx.decl.name)
    except Exception:
        return {}
    n_rows, width = batch["input_ids"].shape
    for key, value in batch.items():
        if key in _ROW_KEYS:
            continue
        if not (isinstance(value, torch.Tensor) and value.dim() == 2
                and tuple(value.shape) == (n_rows, width)):
            return {}  # a key the chunk's rows cannot be cut from
    exs, want = expected_labels(ctx, convs, tok)
    drop = droppable_tails(exs, want)
    pad = tok.pad_token_id
    contents = [_row_content(batch, r, pad) for r in range(n_rows)]
    by_head: dict = {}
    for r, content in enumerate(contents):
        if content is not None:
            by_head.setdefault(tuple(content[0][:8]), []).append(r)
    out, used = {}, set()
    for i, (conv, ex) in enumerate(zip(convs, exs)):
        for r in by_head.get(tuple(ex.input_ids[:8]), ()):
            if r not in used and _matches(contents[r], list(ex.input_ids), drop[i], pad):
                out[repr(conv)] = (batch, r)
                used.add(r)
                break
    return out


def prepare(ctx, inner, calls, done: dict | None = None) -> dict:
    """``{call key: batch}``: each recorded call whose conversations all have clean rows in
    the chunk calls, cut from them. ``done``: ``{(id(tokenizer), max_length, start): rows}``
    of chunk calls already made (:func:`record_and_prepare`)."""
    rows: dict = {}
    for (tid, max_length), (tok, _, unique) in _groups(calls).items():
        convs = list(unique.values())
        for k in range(0, len(convs), CHUNK):
            made = (done or {}).get((tid, max_length, k))
            if made is None:
                made = chunk_rows(ctx, inner, convs[k:k + CHUNK], tok, max_length)
            for key, where in made.items():
                rows[(tid, max_length, key)] = where
    served = {}
    for convs, tok, max_length in calls:
        located = [rows.get((id(tok), max_length, repr(c))) for c in convs]
        if not convs or any(x is None for x in located) or len(
                {(id(b), r) for b, r in located}) != len(located):
            continue
        first = located[0][0]
        if all(b is first for b, _ in located):  # one chunk: its rows, as they are
            batch = {key: torch.stack([b[key][r] for b, r in located]) for key in first}
        else:
            batch = _stack_rows(located, tok.pad_token_id)
            if batch is None:
                continue
        served[_key(convs, tok, max_length)] = (tok, batch)
    if served and not _verified(inner, calls, served, ctx.decl.name):
        return {}
    return served


#: how many served batches are asked of the target too, and compared, before any is served
VERIFY = 8


def _verified(inner, calls, served, name) -> bool:
    """Whether the target, asked itself for :data:`VERIFY` of the served batches (the first of
    one conversation, the first of several, the largest and some spread over the run), returns
    the same rows: a target whose rows depend on the batch they sit in (a bug of row 0 only, or
    of a batch of one, labels longer than the ids that a wider batch pads away, rows reordered)
    is never served, since a chunk call would hide that."""
    from .context import validate_batch

    picks = []
    for want in (lambda c: len(c) == 1, lambda c: len(c) > 1):
        for convs, tok, max_length in calls:
            if want(convs) and _key(convs, tok, max_length) in served:
                picks.append((convs, tok, max_length))
                break
    ranked = sorted((c for c in calls if _key(*c) in served), key=lambda c: -len(c[0]))
    picks += ranked[:1]
    spread = [c for c in calls if _key(*c) in served]  # and some spread over the whole run
    step = max(1, len(spread) // (VERIFY - len(picks) or 1))
    picks += spread[step // 2::step]
    seen = set()
    for convs, tok, max_length in picks[:VERIFY]:
        key = _key(convs, tok, max_length)
        if key in seen:
            continue
        seen.add(key)
        try:
            own = validate_batch(inner.collate(copy.deepcopy(convs), tok, max_length), name)
        except Exception:
            return False
        if not _same_rows(own, served[key][1], len(convs), tok.pad_token_id):
            return False
    return True


def _row_span(batch, r, pad_id):
    """``{key: values}`` of row ``r`` over its content (padding left out), or None."""
    content = _row_content(batch, r, pad_id)
    if content is None:
        return None
    ids = batch["input_ids"][r].tolist()
    n = len(content[0])
    start = next(t for t in range(len(ids) - n + 1) if ids[t:t + n] == content[0]) \
        if n else 0
    return {k: batch[k][r][start:start + n].tolist() for k in _ROW_KEYS if k in batch}


def _same_rows(a, b, n, pad_id) -> bool:
    if a["input_ids"].shape[0] != n or b["input_ids"].shape[0] != n:
        return False
    for r in range(n):
        sa, sb = _row_span(a, r, pad_id), _row_span(b, r, pad_id)
        if sa is None or sb is None or any(sa[k] != sb[k] for k in ("input_ids", "labels")):
            return False
        if "position_ids" in sa and sa.get("position_ids") != sb.get("position_ids"):
            return False
    return True


def _key(convs, tok, max_length) -> tuple:
    """The key of a ``collate`` call, as :class:`sft_conformance.runner.CollateOnce` makes it."""
    from .runner import call_key

    return call_key(convs, tok, max_length)


def _stack_rows(located, pad_id):
    """Rows from several chunk batches, padded on the right to one width (attention mask 0,
    labels -100, the pad id) — only when every chunk has an attention mask."""
    keys = set(located[0][0])
    if any(set(b) != keys for b, _ in located) or "attention_mask" not in keys:
        return None
    width = max(b["input_ids"].shape[1] for b, _ in located)
    fill = {"labels": -100, "attention_mask": 0}
    out = {}
    for key in keys:
        rows = []
        for b, r in located:
            row = b[key][r]
            if row.shape[0] < width:
                if key == "input_ids":
                    value = pad_id if pad_id is not None else 0
                elif key == "position_ids":
                    value = 0
                else:
                    value = fill.get(key, 0)
                row = torch.cat([row, row.new_full((width - row.shape[0],), value)])
            rows.append(row)
        out[key] = torch.stack(rows)
    return out
