"""Every check can pass: correct SFT implementations written differently from the reference
(issue 11, item 1) pass every check that applies to them."""

from __future__ import annotations

import pytest
import torch

from sft_conformance import check_target
from sft_conformance.assets import load_tokenizer, tiny_model
from sft_conformance.reference import build_example, collate, labels_for, sft_loss
from sft_conformance.reference import forward as reference_forward
from sft_conformance.target import declared, load_target
from sft_conformance.targets.correct import HOW, REGISTRY


def test_catalogue_is_large_and_described():
    assert len(REGISTRY) >= 12
    assert all(name.startswith("correct-") for name in REGISTRY)
    assert set(HOW) == set(REGISTRY) and all(HOW.values())


@pytest.mark.parametrize("name", list(REGISTRY))
def test_correct_target_passes_every_check(name):
    run = check_target(name, profile="ci")
    assert run.error is None, run.error
    bad = [r for r in run.results if r.status not in ("passed", "skipped")]
    assert not bad, f"{name} ({HOW[name]}) is correct, but:\n" + "\n\n".join(
        f"{r.id} {r.status}: {r.message}" for r in bad)


#: the label and template checks, cheap enough to run under the dev profile in the default run
LABEL_CHECKS = ["S1", "S2", "S3", "S4", "S10", "S11"]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_correct_target_passes_the_label_checks_under_dev(name):
    run = check_target(name, profile="dev", only=LABEL_CHECKS)
    assert run.error is None, run.error
    bad = [r for r in run.results if r.status not in ("passed", "skipped")]
    assert not bad, f"{name} ({HOW[name]}) is correct, but under dev:\n" + "\n\n".join(
        f"{r.id} {r.status}: {r.message}" for r in bad)


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["dev", "thorough"])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_correct_target_passes_every_check_slow(name, profile):
    run = check_target(name, profile=profile)
    bad = [r for r in run.results if r.status not in ("passed", "skipped")]
    assert run.error is None and not bad, "\n\n".join(
        f"{r.id} {r.status}: {r.message}" for r in bad)


# -- the catalogue is right by the reference, whatever the checks say -------------------------
# Judged independently of the suite's row assumptions: each conversation is found in the batch
# by its ids (any row, any offset), its labels compared with the reference's, and no label may
# train a token outside the conversations.

_CONVERSATIONS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a longer question"},
     {"role": "assistant", "content": "sure"}, {"role": "user", "content": "more"},
     {"role": "assistant", "content": " two turns \n"}],
    [{"role": "user", "content": "say <|im_start|>assistant\nok"},
     {"role": "assistant", "content": ""}],
]


def _find(row: list[int], ids: list[int], used: set[int]) -> int | None:
    for start in range(len(row) - len(ids) + 1):
        if start not in used and row[start:start + len(ids)] == ids:
            return start
    return None


@pytest.mark.parametrize("name", list(REGISTRY))
def test_correct_target_agrees_with_the_reference(name):
    target = load_target(name)
    d = declared(target)
    tok = load_tokenizer(d.tokenizer)
    batch = target.collate(_CONVERSATIONS, tok, 512)
    ids, labels = batch["input_ids"].tolist(), batch["labels"].tolist()
    starts: set[tuple[int, int]] = set()  # (row, start) of the documents found
    inside: set[tuple[int, int]] = set()  # (row, position) of their tokens
    for conv in _CONVERSATIONS:
        ex = build_example(conv, tok, policy=d.turn_policy, tokenization=d.tokenization)
        want = labels_for(ex)
        hit = None
        for cut in (0, 1):  # a target may drop the untrained newline after the last end token
            doc = ex.input_ids[:len(ex) - cut]
            for r, row in enumerate(ids):
                start = _find(row, doc, {s for rr, s in starts if rr == r})
                if start is not None:
                    hit = (r, start, doc)
                    break
            if hit:
                break
        assert hit, f"{name}: the ids of {conv!r} are not in the batch"
        r, start, doc = hit
        starts.add((r, start))
        inside.update((r, start + t) for t in range(len(doc)))
        for t in range(1, len(doc)):  # no logits of this document precede its first token
            got = labels[r][start + t - 1] if d.labels_shifted else labels[r][start + t]
            assert got == want[t], (name, conv, t, got, want[t])
    for r, row in enumerate(labels):
        for i, lab in enumerate(row):
            pos = i + 1 if d.labels_shifted else i
            assert lab == -100 or (r, pos) in inside, f"{name}: row {r} trains position {pos}"
    # the loss on the tiny model equals the reference's on the reference batch
    model = tiny_model(tok)
    with torch.no_grad():
        logits = target.forward(model, batch) if d.has_forward else model(
            **{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")
               if k in batch}).logits
        got = float(target.loss(logits, batch["labels"]))
        ref_batch = collate(_CONVERSATIONS, tok, 512, policy=d.turn_policy)
        want = float(sft_loss(reference_forward(model, ref_batch), ref_batch["labels"]))
    tol = 2e-2 if logits.dtype == torch.bfloat16 else 1e-4
    if d.tokenization == "whole":  # per-turn ids are other tokens: another loss, by design
        assert abs(got - want) <= tol * max(1.0, abs(want)), (name, got, want)
