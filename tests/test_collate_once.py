"""The collate memo of ``check_target`` (sft_conformance.runner.CollateOnce): identical calls
are made once, each caller gets its own copy, and the verdicts are those of the run without it."""

from __future__ import annotations

import pytest
import torch

from sft_conformance.runner import COLLATE_ONCE_ENV, CollateOnce, check_target

CONV = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]


class Counting:
    name = "counting"
    labels_shifted = False

    def __init__(self):
        self.made = 0

    def collate(self, conversations, tokenizer, max_length):
        self.made += 1
        ids = torch.arange(len(conversations) * 4).view(len(conversations), 4)
        return {"input_ids": ids, "labels": ids.clone(), "side": tokenizer.padding_side}


def test_identical_calls_are_made_once_and_copied(tok):
    inner = Counting()
    memo = CollateOnce(inner)
    first = memo.collate([CONV], tok, 64)
    first["labels"][0, 0] = -100  # a check that mutates its batch
    second = memo.collate([CONV], tok, 64)
    assert inner.made == 1 and (memo.calls, memo.made) == (2, 1)
    assert second["labels"][0, 0] == 0  # not the first caller's mutation
    second["input_ids"][0, 1] = 99
    assert memo.collate([CONV], tok, 64)["input_ids"][0, 1] == 1
    # another max_length, other conversations: new calls
    memo.collate([CONV], tok, 32)
    memo.collate([CONV, CONV], tok, 64)
    assert inner.made == 3
    # the same tokenizer object in another state: a new call
    side = tok.padding_side
    try:
        tok.padding_side = "left" if side == "right" else "right"
        assert memo.collate([CONV], tok, 64)["side"] == tok.padding_side
        assert inner.made == 4
    finally:
        tok.padding_side = side
    # the target's attributes are the target's
    assert memo.name == "counting" and memo.labels_shifted is False
    memo.extra = 1
    assert inner.extra == 1


def test_a_call_that_raised_raises_again_without_reaching_the_target(tok):
    class Refusing(Counting):
        def collate(self, conversations, tokenizer, max_length):
            self.made += 1
            try:
                {}["missing"]
            except KeyError as cause:
                raise ValueError("nothing to train", self.made) from cause

    inner = Refusing()
    memo = CollateOnce(inner)
    with pytest.raises(ValueError) as first:
        memo.collate([CONV], tok, 64)
    with pytest.raises(ValueError) as again:
        memo.collate([CONV], tok, 64)
    assert inner.made == 1 and (memo.calls, memo.made) == (2, 1)
    # a new object, like the first: same type, message and cause, same innermost frame (where
    # Hypothesis tells one failure from another)
    assert again.value is not first.value and again.value.args == ("nothing to train", 1)
    assert isinstance(again.value.__cause__, KeyError)
    assert again.traceback[-1].lineno == first.traceback[-1].lineno
    assert again.traceback[-1].path == first.traceback[-1].path
    # another call is the target's own
    with pytest.raises(ValueError):
        memo.collate([CONV], tok, 32)
    assert inner.made == 2


def test_a_remembered_refusal_keeps_no_frame_alive(tok):
    """The memo keeps a refusal's exception and the target's frames without their locals: a
    large object the target held when it raised is freed (a kept frame would also keep its
    callers, the whole stack of the check)."""
    import gc
    import weakref

    class Big:
        pass

    refs = []

    class Holding(Counting):
        def collate(self, conversations, tokenizer, max_length):
            held = Big()
            refs.append(weakref.ref(held))
            raise ValueError("refused")

    memo = CollateOnce(Holding())
    with pytest.raises(ValueError):
        memo.collate([CONV], tok, 64)
    gc.collect()
    assert refs[0]() is None
    with pytest.raises(ValueError):  # still replayed
        memo.collate([CONV], tok, 64)
    assert len(refs) == 1


def test_a_call_made_while_handling_an_exception_is_not_replayed(tok):
    """Inside an ``except`` block an exception takes the handled one as its context (where
    Hypothesis looks too): such a call reaches the target, and its refusal is not kept."""

    class Refusing(Counting):
        def collate(self, conversations, tokenizer, max_length):
            self.made += 1
            raise ValueError("refused")

    inner = Refusing()
    memo = CollateOnce(inner)
    for _ in range(2):
        try:
            raise KeyError("handled")
        except KeyError:
            with pytest.raises(ValueError) as info:
                memo.collate([CONV], tok, 64)
            assert isinstance(info.value.__context__, KeyError)
    assert inner.made == 2
    with pytest.raises(ValueError):  # outside a handler: made, remembered, then replayed
        memo.collate([CONV], tok, 64)
    with pytest.raises(ValueError) as info:
        memo.collate([CONV], tok, 64)
    assert inner.made == 3 and info.value.__context__ is None


def test_an_exception_that_cannot_be_copied_is_not_remembered(tok):
    class Odd(Exception):
        def __init__(self, message, code):
            super().__init__(message)  # args hold the message only: a copy cannot be built
            self.code = code

    class Raising(Counting):
        def collate(self, conversations, tokenizer, max_length):
            self.made += 1
            raise Odd("refused", 7)

    inner = Raising()
    memo = CollateOnce(inner)
    for _ in range(2):
        with pytest.raises(Odd):
            memo.collate([CONV], tok, 64)
    assert inner.made == 2


def test_a_run_share_goes_on_from_the_first_run(tok):
    from sft_conformance.runner import RunShare
    from sft_conformance.target import load_target

    share, target = RunShare(), load_target("reference")  # one target object, two runs
    first = check_target(target, profile="ci", only=["S4"], share=share)
    again = check_target(target, profile="ci", only=["S4"], share=share)
    alone = check_target("reference", profile="ci", only=["S4"])
    assert first.collate_calls["made"] > 0 and again.collate_calls["made"] == 0
    assert _verdicts(again) == _verdicts(alone)
    assert list(share.tokenizers) == ["chatml"]


def test_switch_off(monkeypatch):
    run = check_target("reference", profile="ci", only=["S4"], collate_once=False)
    assert run.collate_calls is None
    monkeypatch.setenv(COLLATE_ONCE_ENV, "0")
    assert check_target("reference", profile="ci", only=["S4"]).collate_calls is None
    monkeypatch.delenv(COLLATE_ONCE_ENV)
    on = check_target("reference", profile="ci", only=["S4"])
    assert on.collate_calls["calls"] >= on.collate_calls["made"] > 0


def _verdicts(run) -> list:
    return [(r.id, r.status, r.judged, r.message) for r in run.results]


FAST = ["reference", "textbook-seed000", "mutant-eos-masked-by-value"]


@pytest.mark.parametrize("target", FAST)
def test_verdicts_with_and_without_the_memo_on_a_few_checks(target):
    only = ["S2", "S4", "S10"]
    with_memo = check_target(target, profile="ci", only=only, collate_once=True)
    without = check_target(target, profile="ci", only=only, collate_once=False)
    assert with_memo.error is None and _verdicts(with_memo) == _verdicts(without)


#: the reference, two textbooks and five mutants of different checks (label-level, packing,
#: truncation, loss)
NEUTRAL = ["reference", "textbook-seed000", "textbook-seed003", "mutant-off-by-one-late",
           "mutant-eos-masked-by-value", "mutant-packing-cross-document-target",
           "mutant-truncate-drops-end-token", "mutant-header-first-occurrence"]


@pytest.mark.slow  # every check on eight targets, twice: minutes on 2 cores
@pytest.mark.parametrize("target", NEUTRAL)
def test_the_memo_is_verdict_neutral(target):
    with_memo = check_target(target, profile="ci", collate_once=True)
    without = check_target(target, profile="ci", collate_once=False)
    assert with_memo.error == without.error
    assert _verdicts(with_memo) == _verdicts(without)
