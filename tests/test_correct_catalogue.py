"""Every check can pass: correct SFT implementations written differently from the reference
(issue 11, item 1) pass every check that applies to them."""

from __future__ import annotations

import pytest

from sft_conformance import check_target
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
