"""How long the suite takes to judge a target (issue 24): ``check_target`` (what
``sft-conformance check`` runs, without the interpreter's start) on the reference, a TRL row and
a TRL packing row, on the bundled tokenizer and on qwen2.5 (151k vocabulary), profile ci, one
round each (a round is seconds to minutes). Measured, not asserted: timings on a shared machine
are no pass/fail gate.

Not collected by the default test run (``testpaths = tests``). Run::

    python -m pytest -p no:xdist -q bench/test_suite_speed.py --benchmark-columns=min,rounds \
        --benchmark-json=reports/bench/suite-speed.json

``SFT_CONFORMANCE_COLLATE_ONCE=0`` measures without the collate memo (as before it);
``SFT_SPEED_TOKENIZERS=bundled`` (comma-separated) narrows the tokenizers; the TRL rows skip
where TRL is not installed. reports/speed.md records the numbers and the vocabulary and profile
sweeps.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("pytest_benchmark")

TARGETS = ["reference", "trl-sft-assistant-only", "trl-sft-packing-bfd"]
TOKENIZERS = os.environ.get("SFT_SPEED_TOKENIZERS", "bundled,qwen2.5").split(",")


@pytest.fixture(scope="module", autouse=True)
def _warm():
    """The real vocabularies are built from their packages at first use (then cached): built
    here, so that no round pays it."""
    from sft_conformance.assets import load_tokenizer

    for name in TOKENIZERS:
        if name != "bundled":
            load_tokenizer(name)
            load_tokenizer(name, pad_equals_eos=True)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
@pytest.mark.parametrize("target", TARGETS)
def test_check_speed(benchmark, target, tokenizer):
    from sft_conformance.runner import check_target
    from sft_conformance.target import declared, load_target

    missing = declared(load_target(target)).missing
    if missing:
        pytest.skip(f"{target} needs {', '.join(missing)}")
    benchmark.group = f"check ({tokenizer})"
    run = benchmark.pedantic(
        check_target, args=(target,),
        kwargs={"tokenizer": None if tokenizer == "bundled" else tokenizer, "profile": "ci"},
        rounds=1, iterations=1, warmup_rounds=0)
    assert run.error is None, run.error
    benchmark.extra_info.update(
        statuses=" ".join(f"{r.id}:{r.status}" for r in run.results),
        judged=sum(r.judged for r in run.results),
        per_check={r.id: r.seconds for r in run.results},
        collate_calls=run.collate_calls)  # None with SFT_CONFORMANCE_COLLATE_ONCE=0
