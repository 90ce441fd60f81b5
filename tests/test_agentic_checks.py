"""The agentic checks (issue 23): each agentic mutant is killed by the check meant for it and the
agentic correct-but-different target passes, on the bundled tool template and the real
families; templates without tools skip the checks with the reason."""

from __future__ import annotations

import pytest
from samples import need_tokenizer  # noqa: E402

from sft_conformance import check_target
from sft_conformance.assets import load_tokenizer
from sft_conformance.mutants import AGENTIC, KILLS, not_applicable

TOKENIZERS = ["chatml-tools", "qwen2.5", "qwen3", "mistral", "deepseek"]


def _need(name):
    return need_tokenizer(name)


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("mutant", AGENTIC)
def test_agentic_mutant_is_killed(mutant, name):
    why = not_applicable(mutant, _need(name))
    if why:
        pytest.skip(f"{mutant} under {name}: {why}")
    meant = KILLS[mutant]
    run = check_target(mutant, profile="ci", only=[meant], tokenizer=name, shrink=False)
    (r,) = run.results
    assert r.status == "failed", f"{mutant} survived {meant} under {name}: {r.status} {r.message}"
    assert r.message.startswith(meant + ":")


#: where the tagged twin and the reference disagree, with the reason (data, not silence)
NOT_YET = {
    "mistral": {"S2": "an empty answer renders '[/INST] </s>': the reference trains the lone "
                      "'▁' (the space's token, where the content would start), the tagged "
                      "twin leaves the space outside its tags; open question for the spec"},
}


@pytest.mark.parametrize("name", [pytest.param(t, marks=pytest.mark.slow)
                                  if t in ("mistral", "deepseek") else t for t in TOKENIZERS])
def test_agentic_correct_target_passes(name):
    _need(name)
    only = [c for c in ["S1", "S2", "S3", "S4", "S13", "S14", "S15"]
            if c not in NOT_YET.get(name, {})]
    run = check_target("correct-agentic-generation-tags", profile="ci", tokenizer=name,
                       only=only)
    bad = [(r.id, r.status, r.message[:400]) for r in run.results if r.status != "passed"]
    assert run.error is None and not bad, bad
    assert all(r.judged >= 5 for r in run.results)


@pytest.mark.parametrize("name", ["qwen2.5", "qwen3", "mistral", "deepseek"])
def test_reference_judges_agentic_draws(name):
    _need(name)
    run = check_target("reference", profile="ci", tokenizer=name, only=["S13", "S14", "S15"])
    assert [(r.id, r.status) for r in run.results] == [
        ("S13", "passed"), ("S14", "passed"), ("S15", "passed")], [r.message for r in run.results]
    assert all(r.judged >= 10 for r in run.results)


def test_agentic_checks_skip_on_a_template_without_tools():
    run = check_target("reference", profile="ci", tokenizer="chatml", only=["S13", "S14"])
    assert all(r.status == "skipped" and "render" in r.message for r in run.results)


def test_agentic_checks_need_the_tools_declaration():
    run = check_target("correct-plain", profile="ci", tokenizer="chatml-tools",
                       only=["S13", "S15"])
    assert all(r.status == "skipped" and "tools = True" in r.message for r in run.results)


def test_a_long_tool_preamble_adapts_max_length():
    from sft_conformance.checks.agentic import preamble_length

    assert preamble_length(load_tokenizer("chatml-tools")) > 400  # the schemas alone
    run = check_target("reference", profile="ci", tokenizer="chatml-tools", only=["S13"])
    (r,) = run.results
    assert r.status == "passed" and r.judged >= 10
    assert any(n.startswith("max_length") for n in r.notes)
