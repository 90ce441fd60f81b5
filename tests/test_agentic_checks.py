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


# -- reasoning rules (S15): template, last_turn, all_turns ----------------------------------------


def test_the_last_turn_rule_drops_earlier_reasoning_before_rendering():
    from sft_conformance.checks.agentic import REASONING_FOLLOW_UP
    from sft_conformance.reference.conversation import apply_reasoning_rule

    out = apply_reasoning_rule(REASONING_FOLLOW_UP, "last_turn")
    kept = [m.get("reasoning_content") for m in out["messages"] if m["role"] == "assistant"]
    assert kept == [None, "Assume the same."]
    assert apply_reasoning_rule(REASONING_FOLLOW_UP, "template") is REASONING_FOLLOW_UP
    assert REASONING_FOLLOW_UP["messages"][1]["reasoning_content"]  # the user's data untouched


def _reference_with(rule):
    from sft_conformance.targets.reference import ReferenceTarget

    class Rule(ReferenceTarget):
        name = f"reference-reasoning-{rule}"
        reasoning = rule
        tokenizer = "qwen3"

    return Rule()


@pytest.mark.parametrize("rule", ["template", "last_turn"])
def test_the_reference_passes_under_each_rule_it_follows(rule):
    _need("qwen3")
    run = check_target(_reference_with(rule), profile="ci", tokenizer="qwen3",
                       only=["S1", "S15"])
    assert [(r.id, r.status) for r in run.results] == [("S1", "passed"), ("S15", "passed")], \
        [r.message[:300] for r in run.results]


def test_all_turns_fails_where_the_template_drops_reasoning():
    """Qwen3's template drops reasoning before the last user query: a target declaring
    all_turns on it loses reasoning it claims to train (S15 says which message)."""
    _need("qwen3")
    run = check_target(_reference_with("all_turns"), profile="ci", tokenizer="qwen3",
                       only=["S15"], shrink=False)
    (r,) = run.results
    assert r.status == "failed" and "'all_turns'" in r.message and "drops it" in r.message


def test_a_target_that_keeps_earlier_reasoning_fails_the_last_turn_rule():
    """The reference keeping reasoning as the template does, declared last_turn: the ids of
    a tool chain with reasoning on every call differ (S1)."""
    _need("qwen3")

    class Keeps(type(_reference_with("last_turn"))):
        def collate(self, conversations, tokenizer, max_length):
            from sft_conformance.reference import Collator

            return Collator()(conversations, tokenizer, max_length)

    run = check_target(Keeps(), profile="ci", tokenizer="qwen3", only=["S1"], shrink=False)
    assert run.results[0].status == "failed", run.results[0].message[:300]


@pytest.mark.parametrize("only", [["S1", "S15"], pytest.param(
    ["S2", "S3", "S4", "S13", "S14"], marks=pytest.mark.slow)], ids=["rule", "others"])
def test_the_last_turn_correct_target_passes(only):
    _need("qwen3")
    run = check_target("correct-agentic-last-turn-reasoning", profile="ci", tokenizer="qwen3",
                       only=only)
    bad = [(r.id, r.status, r.message[:300]) for r in run.results if r.status != "passed"]
    assert run.error is None and not bad, bad


@pytest.mark.parametrize("name", ["qwen2.5", pytest.param("qwen3", marks=pytest.mark.slow),
                                  pytest.param("chatml-tools", marks=pytest.mark.slow)])
def test_the_per_turn_agentic_correct_target_passes(name):
    """Tool conversations tokenized per turn (pieces cut at the tagged twin's generation spans),
    declared tokenization = "per_turn": every label and tool check passes."""
    _need(name)
    run = check_target("correct-agentic-per-turn", profile="ci", tokenizer=name,
                       only=["S1", "S2", "S3", "S4", "S13", "S14", "S15"])
    bad = [(r.id, r.status, r.message[:300]) for r in run.results if r.status != "passed"]
    assert run.error is None and not bad, bad
