"""The random logits of the loss checks (S6, S7, S9): what a repro snippet draws, and the
same numbers when the ``mutants`` command shares them between its rows."""

import torch

import sft_conformance.checks.loss as loss_checks
from sft_conformance.checks.loss import random_logits, share_random_logits


def _as_the_repro_draws(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 3


def test_random_logits_are_what_the_repro_snippet_draws():
    batch = {"input_ids": torch.zeros(3, 17, dtype=torch.long)}
    got = random_logits(batch, 50, 7)
    assert got.is_leaf and got.requires_grad
    assert torch.equal(got.detach(), _as_the_repro_draws((3, 17, 50), 7))
    assert loss_checks._SHARED_LOGITS is None  # off unless a command turns it on


def test_shared_random_logits_are_the_same_numbers_and_never_the_callers_tensor():
    batch = {"input_ids": torch.zeros(3, 17, dtype=torch.long)}
    one = 3 * 17 * 50 * 8
    try:
        share_random_logits(budget_bytes=2 * one)
        first = random_logits(batch, 50, 7)
        first.detach().zero_()  # a target that writes into its logits
        again = random_logits(batch, 50, 7)
        assert again.is_leaf and again.requires_grad
        assert torch.equal(again.detach(), _as_the_repro_draws((3, 17, 50), 7))
        random_logits(batch, 50, 8)
        random_logits(batch, 50, 9)  # over the budget: the oldest goes
        assert (3, 17, 50, 7) not in loss_checks._SHARED_LOGITS
        assert len(loss_checks._SHARED_LOGITS) == 2
    finally:
        share_random_logits(None)
    assert loss_checks._SHARED_LOGITS is None
