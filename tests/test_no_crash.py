"""No crash inside a check (issue 21, item 3): every check, on targets whose batches have odd
shapes, reports a verdict (passed, failed, skipped) or the target's own error, never a crash of
the suite itself."""

from __future__ import annotations

import pytest
import torch

from sft_conformance import check_target
from sft_conformance.reference import IGNORE_INDEX
from sft_conformance.targets.reference import ReferenceTarget

KEYS = ("input_ids", "labels", "attention_mask", "position_ids")


class _Odd(ReferenceTarget):
    def odd(self, batch, tokenizer):  # pragma: no cover - overridden
        return batch

    def collate(self, conversations, tokenizer, max_length):
        return self.odd(dict(super().collate(conversations, tokenizer, max_length)), tokenizer)


class OneTokenFewer(_Odd):
    """Every row one position shorter: each example's last token is gone."""

    name = "odd-one-token-fewer"

    def odd(self, batch, tokenizer):
        return {k: v[:, :-1] for k, v in batch.items() if k in KEYS}


class OneTokenMore(_Odd):
    """An extra untrained token (the pad id) after every row, attended."""

    name = "odd-one-token-more"

    def odd(self, batch, tokenizer):
        B = batch["input_ids"].shape[0]
        extra = {"input_ids": torch.full((B, 1), tokenizer.eos_token_id),
                 "labels": torch.full((B, 1), IGNORE_INDEX),
                 "attention_mask": torch.ones(B, 1, dtype=torch.long),
                 "position_ids": batch["position_ids"][:, -1:] + 1}
        return {k: torch.cat([v, extra[k]], 1) for k, v in batch.items() if k in KEYS}


class EmptyRow(_Odd):
    """An extra row with no real token (all padding, masked)."""

    name = "odd-empty-row"

    def odd(self, batch, tokenizer):
        T = batch["input_ids"].shape[1]
        extra = {"input_ids": torch.full((1, T), tokenizer.pad_token_id),
                 "labels": torch.full((1, T), IGNORE_INDEX),
                 "attention_mask": torch.zeros(1, T, dtype=torch.long),
                 "position_ids": torch.zeros(1, T, dtype=torch.long)}
        return {k: torch.cat([v, extra[k]], 0) for k, v in batch.items() if k in KEYS}


class ZeroWidth(_Odd):
    """Every tensor of width 0."""

    name = "odd-zero-width"

    def odd(self, batch, tokenizer):
        return {k: v[:, :0] for k, v in batch.items() if k in KEYS}


class Int32(_Odd):
    """input_ids and labels as int32."""

    name = "odd-int32"

    def odd(self, batch, tokenizer):
        return dict(batch, input_ids=batch["input_ids"].int(), labels=batch["labels"].int())


class LabelsOnMeta(_Odd):
    """labels on another device (the meta device: no values at all)."""

    name = "odd-labels-on-meta"

    def odd(self, batch, tokenizer):
        return dict(batch, labels=batch["labels"].to("meta"))


ODD = [OneTokenFewer, OneTokenMore, EmptyRow, ZeroWidth, Int32, LabelsOnMeta]


def _crashes(run):
    return [r for r in run.results if r.status == "error" and "crashed" in r.message]


#: malformed on every batch: refused before any check runs, in one line (validation.py)
MALFORMED = {ZeroWidth, LabelsOnMeta}


@pytest.mark.parametrize("cls", ODD, ids=lambda c: c.name)
def test_no_check_crashes_on_odd_batches(cls):
    run = check_target(cls(), profile="ci", shrink=False)
    if cls in MALFORMED:
        assert run.error and "malformed batch" in run.error and "\n" not in run.error
        return
    assert run.error is None, run.error
    crashed = _crashes(run)
    assert not crashed, "\n\n".join(f"{r.id}: {r.message}" for r in crashed)
    # and something was said about each: a verdict or the target's own error
    assert all(r.status in ("passed", "failed", "skipped", "error") for r in run.results)


def test_int32_batches_pass_like_the_reference():
    run = check_target(Int32(), profile="ci", only=["S1", "S2", "S3", "S4"])
    assert all(r.status == "passed" for r in run.results), [
        (r.id, r.status, r.message[:300]) for r in run.results]


def test_ids_longer_than_the_template_are_judged_not_crashed():
    """LitGPT's SFTDataset shape: the target's ids longer than the template's, so the expected
    labels are shorter than the ids (S12 used to crash drawing its token table)."""
    run = check_target(OneTokenMore(), profile="ci", only=["S1", "S2", "S12"], shrink=False)
    assert not _crashes(run)
    assert {r.status for r in run.results} <= {"passed", "failed"}


def test_token_table_of_unequal_lengths():
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.tables import token_table

    tok = load_tokenizer("chatml")
    table = token_table(tok, [2, 3, 4, 5], [-100, 3], [-100, 3, 4], mark=3)
    assert "absent" in table and ">>" in table
