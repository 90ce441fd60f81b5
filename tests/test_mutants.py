"""Every check can fail: each mutant is killed by the check meant for it."""

from __future__ import annotations

import pytest

from sft_conformance import check_target
from sft_conformance.mutants import BUGS, KILLS


def test_catalogue_is_large_and_covers_every_check():
    assert len(KILLS) >= 20
    assert {f"S{i}" for i in range(1, 13)} <= set(KILLS.values())
    assert all(BUGS[name] for name in KILLS)


@pytest.mark.parametrize("mutant", list(KILLS))
def test_mutant_is_killed_by_its_check(mutant):
    meant = KILLS[mutant]
    run = check_target(mutant, profile="ci", only=[meant], shrink=False)
    (result,) = run.results
    assert result.status == "failed", f"{mutant} survived {meant}: {result.status} {result.message}"
    assert result.message.startswith(meant + ":")
    assert "Reproduce:" in result.message or result.counterexample.get("repro")


def test_failure_message_is_readable():
    run = check_target("mutant-off-by-one-late", profile="ci", only=["S2"])
    msg = run.results[0].message
    assert "example 0" in msg and "position" in msg
    for column in ("token", "input_id", "label", "expected", "trained"):
        assert column in msg
    assert "load_target('mutant-off-by-one-late')" in msg
    cex = run.results[0].counterexample
    assert cex["label"] == -100 and cex["expected_label"] != -100
    # the reproduction snippet really reproduces it
    namespace: dict = {"print": lambda *args, **kwargs: None}
    exec(cex["repro"], namespace)  # noqa: S102
    batch = namespace["batch"]
    assert int(batch["labels"][cex["row"], cex["position"]]) == -100


@pytest.mark.slow
def test_full_kill_table():
    from sft_conformance.cli import main

    assert main(["mutants", "--profile", "ci"]) == 0
