"""Regression tests of how verdicts are reached (issue 11): no vacuous pass, refusals shown,
strict mode, declarations validated, notes about the tokenizer. The false alarms on correct
code are pinned by tests/test_correct_catalogue.py, the misses by the mutants."""

from __future__ import annotations

import pytest

from sft_conformance import check_target
from sft_conformance.cli import main


def only(run, check_id):
    (result,) = [r for r in run.results if r.id == check_id]
    return result


def test_a_check_that_judges_nothing_is_an_error_with_the_reason():
    # every drawn conversation is longer than 8 tokens (as with a template whose preamble is
    # long): before, S2 returned early on each and passed having judged nothing
    run = check_target("mutant-off-by-one-late", profile="ci", only=["S2"], max_length=8)
    r = only(run, "S2")
    assert r.status == "error" and r.judged < 5, r
    assert "judged only" in r.message and "longer than max_length=8" in r.message
    assert "--max-length" in r.message


def test_every_check_reports_how_many_examples_it_judged(capsys):
    run = check_target("reference", profile="ci", only=["S1", "S6"])
    assert all(r.judged >= 5 for r in run.results), [(r.id, r.judged) for r in run.results]
    assert main(["check", "reference", "--check", "S1", "--profile", "ci"]) == 0
    assert "judged" in capsys.readouterr().out


def test_check_exits_1_when_conversations_never_fit(capsys):
    assert main(["check", "reference", "--check", "S3", "--profile", "ci",
                 "--max-length", "8"]) == 1
    assert "longer than max_length=8" in capsys.readouterr().out


def test_pad_eos_attention_mask_from_ids_is_named():
    r = only(check_target("mutant-attention-mask-from-pad-id", profile="ci", only=["S5"],
                          shrink=False), "S5")
    assert r.status == "failed"
    assert "attention mask hides a real token" in r.message
    assert "pad == eos with attention_mask = ids != pad" in r.message


def test_a_refusal_of_a_batch_with_nothing_to_train_is_shown():
    r = only(check_target("correct-own-exception", profile="ci", only=["S9"]), "S9")
    assert r.status == "passed", r.message
    assert any("ValueError: nothing to train" in n for n in r.notes), r.notes


@pytest.mark.parametrize("strict, status", [(False, "passed"), (True, "failed")])
def test_strict_mode_fails_a_stale_known_failure(strict, status):
    from sft_conformance.targets.reference import ReferenceTarget

    class Stale(ReferenceTarget):
        name = "stale"
        known_failures = {"S1": "we used to double the BOS"}

    r = only(check_target(Stale(), profile="ci", only=["S1"], strict=strict), "S1")
    assert r.status == status and "did not occur" in r.message


def test_an_unknown_declaration_value_is_a_configuration_error():
    from sft_conformance.targets.reference import ReferenceTarget

    class Odd(ReferenceTarget):
        tokenization = "sentencewise"

    run = check_target(Odd(), profile="ci", only=["S1"])
    assert run.error and "tokenization must be one of" in run.error


def test_a_tokenizer_that_merges_glue_with_content_gets_a_note():
    r = only(check_target("reference", profile="ci", only=["S1"]), "S1")
    assert r.status == "passed"
    assert any("merges template glue with content" in n for n in r.notes), r.notes
