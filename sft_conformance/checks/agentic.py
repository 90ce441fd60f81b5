"""Agentic checks: tool results are never trained (S13), tool-call turns are trained whole, their
end token included (S14), reasoning follows the declared rule (S15)
(docs/specification.md#s13, #s14, #s15).

They draw conversations with tools, single and parallel calls, dict and JSON-string arguments,
empty or ``None`` content beside calls, consecutive tool results, reasoning on some turns and a
real user follow-up (:func:`sft_conformance.strategies.agentic_conversations`), and pin the
standard fixture of the public bug reports. They apply to a target that declares ``tools = True``
(S15: ``reasoning``), on a tokenizer whose template renders tools.
"""

from __future__ import annotations

import copy

from sft_conformance.reference.conversation import messages_of

from ..alignment import IGNORE_INDEX
from ..context import Context
from ..failures import CheckSkipped
from .engine import run_property
from .labels import label_property
from .registry import register

#: the standard example of the public reports (user asks, assistant calls, tool answers,
#: assistant answers), with the schema offered; JSON-string arguments and 9-character call ids,
#: which every bundled template accepts (DeepSeek's raises on dict arguments, Mistral's on
#: other ids; the drawn conversations try both argument forms)
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
WEATHER = {"messages": [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "id": "call00001", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "content": "18C sunny", "name": "get_weather", "tool_call_id": "call00001"},
    {"role": "assistant", "content": "It is 18C and sunny in Paris."}],
    "tools": [WEATHER_TOOL]}

#: two calls in parallel, two consecutive results, content beside the calls, a follow-up
PARALLEL = {"messages": [
    {"role": "user", "content": "Weather in Paris and Lyon?"},
    {"role": "assistant", "content": "Let me check both.", "tool_calls": [
        {"type": "function", "id": "call00002", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"type": "function", "id": "call00003", "function": {
            "name": "get_weather", "arguments": '{"city": "Lyon"}'}}]},
    {"role": "tool", "content": "18C", "name": "get_weather", "tool_call_id": "call00002"},
    {"role": "tool", "content": "21C", "name": "get_weather", "tool_call_id": "call00003"},
    {"role": "assistant", "content": "Paris 18C, Lyon 21C."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome."}],
    "tools": [WEATHER_TOOL]}

REASONING = {"messages": [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "I need the weather tool.",
     "tool_calls": [{"type": "function", "id": "call00004", "function": {
         "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "content": "18C sunny", "name": "get_weather", "tool_call_id": "call00004"},
    {"role": "assistant", "content": "It is 18C.", "reasoning_content": "Answer now."}],
    "tools": [WEATHER_TOOL]}


#: reasoning on a turn before a real user follow-up: Qwen3's template drops it there (the
#: last-query rule) and keeps the last turn's
REASONING_FOLLOW_UP = {"messages": [
    {"role": "user", "content": "Is it warm in Paris?"},
    {"role": "assistant", "content": "Yes, 18C.", "reasoning_content": "Recall the weather."},
    {"role": "user", "content": "And tomorrow?"},
    {"role": "assistant", "content": "Also warm.", "reasoning_content": "Assume the same."}],
    "tools": [WEATHER_TOOL]}


#: consecutive assistant messages after the last user query, the last with reasoning: a data
#: path that renders the prompt without the last message (OpenRLHF's preprocess_data) gives the
#: earlier one Qwen3's empty think block and slices the last turn's reasoning away
#: (OpenRLHF#1080). S15 judges it as a batch of its own, so a target that refuses consecutive
#: assistant messages does not hide the other fixtures from it
CONSECUTIVE_REASONING = {"messages": [
    {"role": "user", "content": "Is it warm in Paris?"},
    {"role": "assistant", "content": "Let me think."},
    {"role": "assistant", "content": "Yes, 18C.", "reasoning_content": "Recall the weather."}],
    "tools": [WEATHER_TOOL]}


def renders_tools(tok) -> str | None:
    """None when the template renders the standard tool conversation (the call's name and the
    tool's result both show), else why not."""
    from sft_conformance.reference.agentic import render

    try:
        text = render(tok, WEATHER["messages"], WEATHER["tools"])
    except Exception as exc:
        return f"its chat template cannot render a tool conversation ({type(exc).__name__}: " \
               f"{str(exc)[:120]})"
    if "get_weather" not in text.split("What is the weather")[-1] or "18C sunny" not in text:
        return "its chat template does not render tool calls and tool results"
    return None


def applicable(ctx: Context, tok) -> None:
    why = renders_tools(tok)
    if why:
        raise CheckSkipped(f"the tokenizer {tok.name_or_path!r}: {why}; run with a tokenizer "
                           "whose template renders tools (chatml-tools, qwen2.5, qwen3, "
                           "deepseek, mistral, llama3.1)")


def agentic_batches(ctx, *, reasoning: bool = True, max_size: int = 2):
    from ..strategies import agentic_batches as batches

    single = not getattr(ctx.target, "multi_turn", True)
    return batches(reasoning=reasoning, follow_up=False if single else None,
                   system=False if not getattr(ctx.target, "system_prompt", True) else None,
                   min_size=1, max_size=max_size)


def note_unrendered(ctx, convs, tok) -> None:
    """A field the template does not render is reported, never lost in silence."""
    from .labels import expected_labels

    if any(n.startswith("note: the template does not render") for n in ctx.notes):
        return
    exs, _ = expected_labels(ctx, convs, tok)
    for i, ex in enumerate(exs):
        for j, field in ex.unrendered:
            ctx.notes.append(
                f"note: the template does not render {field} of example {i}'s message {j} "
                f"({messages_of(convs[i])[j]['role']}): it is in the data but not in the "
                "text the model sees (a fact about the template, not the target)")
            return


def tool_positions(ex) -> set[int]:
    """Tokens inside the rendered content of a tool message."""
    out = set()
    for k, region in ex.regions.items():
        if ex.roles.get(k) == "tool":
            out.update(ex.positions(region))
    return out


def call_turn_positions(ex) -> set[int]:
    """Tokens of the trained spans of assistant turns that carry tool calls."""
    return {t for span in ex.turns if span.message in ex.calls
            for t in range(span.start, span.stop)}


def reasoning_positions(ex) -> set[int]:
    return {t for region in ex.reasoning.values() for t in ex.positions(region)}


def _agentic_property(ctx, relevant, *, what, spec, check=None):
    prop = label_property(ctx, relevant, what=what, spec=spec, judge_drops=True)
    tok = ctx.tokenizer()

    def run(convs):
        from .engine import require_fits

        require_fits(ctx, convs, tok)  # drawn conversations the template refuses: not judged
        note_unrendered(ctx, convs, tok)
        if check is not None:
            check(ctx, convs, tok)
        prop(convs)

    return run


#: tokens the drawn turns may take beyond the template's fixed text with the tool schemas
TURN_BUDGET = 512


def preamble_length(tok) -> int:
    """Tokens of the fixed text the template renders for the largest drawn set of tool schemas
    (three tools) around a one-word exchange: the system prompt of tools alone can be thousands
    of tokens on a real template."""
    from sft_conformance.reference.agentic import render

    from ..strategies import _ARG_NAMES, _TOOL_NAMES

    tools = [{"type": "function", "function": {
        "name": name, "description": f"{name.replace('_', ' ')} tool",
        "parameters": {"type": "object", "properties": {p: {"type": "string"}
                                                        for p in _ARG_NAMES[:2]},
                       "required": list(_ARG_NAMES[:1])}}}
        for name in sorted(_TOOL_NAMES, key=len, reverse=True)[:3]]
    conv = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    try:
        return len(tok(render(tok, conv, tools), add_special_tokens=False)["input_ids"])
    except Exception:
        return 0


def adapted_max_length(ctx, tok) -> int:
    """The max_length the agentic checks judge with: the user's, when given; else the
    template's fixed text with the tools, measured, plus a budget for the drawn turns, so that
    a long preamble does not leave every draw over-long (never below the default)."""
    if ctx.max_length_given:
        return ctx.max_length
    return max(ctx.max_length, preamble_length(tok) + TURN_BUDGET)


def _judge(ctx, relevant, *, what, spec, reasoning=True, check=None, extra=()):
    from .engine import agentic_inputs, fits

    tok = ctx.tokenizer()
    applicable(ctx, tok)
    if not ctx.max_length_given:  # adapted by the runner (runner.adapt_max_length)
        ctx.notes.append(f"max_length {ctx.max_length}: the template's fixed text with three "
                         f"tool schemas ({preamble_length(tok)} tokens) plus {TURN_BUDGET} for "
                         "the drawn turns, at least the default 512 (pass --max-length to "
                         "choose)")
    fixtures = agentic_inputs(ctx, tok)  # the pinned fixtures the template renders
    for conv in extra:  # a check's own pinned batches, where the template renders them
        if fixtures and getattr(ctx.target, "multi_turn", True) and _renders(ctx, conv, tok) \
                and fits(ctx, [conv], tok):
            fixtures = fixtures + [[copy.deepcopy(conv)]]
            ctx.notes.append("judged 1 more pinned tool conversation as a batch of its own "
                             "(consecutive assistant messages after the last user query, the "
                             "last with reasoning: OpenRLHF#1080)")
    run_property(ctx, agentic_batches(ctx, reasoning=reasoning),
                 _agentic_property(ctx, relevant, what=what, spec=spec, check=check),
                 special=fixtures, budget=0.6)


# -- S13 ----------------------------------------------------------------------------------------


@register("S13", "tools")
def check_tool_results_never_trained(ctx: Context) -> None:
    """No token of a tool result is trained, whatever the template renders it as
    (S13, docs/specification.md#s13)."""
    _judge(
        ctx,
        lambda t, got, want, ex: t in tool_positions(ex) and got is not None
        and got != IGNORE_INDEX,
        what="S13: a token of a tool result is trained: the model learns to write what the "
        "environment returns",
        spec="tool results are never targets (a Qwen user turn, a Llama ipython header, "
        "Mistral's [TOOL_RESULTS], DeepSeek's tool outputs)",
        reasoning=False,
    )


# -- S14 ----------------------------------------------------------------------------------------


@register("S14", "tools")
def check_tool_call_turns_trained(ctx: Context) -> None:
    """Every rendered token of an assistant turn that calls tools is trained: each call's name,
    arguments and wrappers, the content beside them, and the turn's end token
    (S14, docs/specification.md#s14)."""
    _judge(
        ctx,
        lambda t, got, want, ex: t in call_turn_positions(ex) and want != IGNORE_INDEX
        and got is not None,
        what="S14: a token of a tool-call turn is not trained (a call's name, arguments or "
        "wrapper, or the turn's end token)",
        spec="every rendered byte of every call and the turn's terminator are targets",
        reasoning=False,
    )


# -- S15 ----------------------------------------------------------------------------------------


@register("S15", "tools", "reasoning")
def check_reasoning_follows_the_rule(ctx: Context) -> None:
    """Reasoning is rendered where the declared rule puts it and trained wherever it is
    rendered inside a trained turn (S15, docs/specification.md#s15)."""
    rule = getattr(ctx.target, "reasoning", None) or "template"
    _judge(
        ctx,
        lambda t, got, want, ex: t in reasoning_positions(ex) and got != want,
        what="S15: a reasoning token is not labelled as the declared reasoning rule says "
        "(trained inside a trained turn where the rule keeps it)",
        spec=f"reasoning rule {rule!r}: " + RULES[rule],
        check=_all_turns_rendered if rule == "all_turns" else None,
        extra=(CONSECUTIVE_REASONING,),
    )


def _renders(ctx, conv, tok) -> bool:
    from sft_conformance.reference import TemplateError, build_example

    try:
        build_example(conv, tok, policy=ctx.decl.turn_policy, reasoning=ctx.decl.reasoning)
        return True
    except TemplateError:
        return False


#: what each reasoning rule says, in the words of the specification
RULES = {
    "template": "reasoning is kept where the chat template renders it and trained inside a "
                "trained assistant turn",
    "last_turn": "reasoning is kept on the last assistant turn only (dropped from the others "
                 "before rendering) and trained there",
    "all_turns": "reasoning is kept on every assistant turn that has it and trained there",
}


def _all_turns_rendered(ctx, convs, tok) -> None:
    """Under ``reasoning = "all_turns"``, every assistant message's reasoning must reach the
    text the model sees: a template that drops it (Qwen3 before the last user query) loses it."""
    from ..failures import fail
    from .labels import expected_labels

    exs, _ = expected_labels(ctx, convs, tok)
    for i, ex in enumerate(exs):
        lost = [j for j, field in ex.unrendered if field == "reasoning_content"]
        if lost:
            j = lost[0]
            fail(ctx, f"S15: example {i}: the reasoning of assistant message {j} is not in the "
                      "rendered text, but the declared reasoning rule is 'all_turns' (every "
                      "assistant turn keeps its reasoning): the chat template drops it "
                      f"(reasoning_content {messages_of(convs[i])[j]['reasoning_content'][:60]!r})."
                      " Declare reasoning = 'template' (or 'last_turn'), or use a template "
                      "that renders reasoning on every turn (verl#3477, TRL#6361).",
                 conversations=convs)
