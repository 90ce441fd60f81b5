"""The property engine: drawing conversations and running a property under one of our
Hypothesis profiles, passed explicitly."""

from __future__ import annotations

import collections
import copy

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, Verbosity, assume, example, given, settings
from hypothesis.errors import Unsatisfiable, UnsatisfiedAssumption

from sft_conformance.reference import (
    build_example,
)

from .. import profiles
from ..assets import vocabulary_size
from ..context import Context, TargetError, TargetRaised
from ..failures import CheckFailure
from ..strategies import CHAR_ALPHABET, conversations

# -- drawing inputs -----------------------------------------------------------------------------


def conversation_strategy(ctx: Context, *, max_turns=3, adversarial=True, min_turns=1):
    """Drawn plain-chat conversations for a check."""
    char = ctx.tokenizer().name_or_path.endswith("seed001")
    single = not getattr(ctx.target, "multi_turn", True)
    system = False if (char or single or not getattr(ctx.target, "system_prompt", True)) else None
    strategy = conversations(
        max_turns=1 if single else max_turns,
        system=system,
        adversarial=adversarial,
        alphabet=CHAR_ALPHABET if char else None,
        roles=("user", "assistant") if char else ("system", "user", "assistant"),
    )
    if min_turns > 1:
        strategy = strategy.filter(lambda c: sum(m["role"] == "assistant" for m in c) >= min_turns)
    return strategy


def draws_agentic(ctx: Context) -> bool:
    """Whether the checks draw tool conversations for this target: it declares ``tools`` and the
    template renders them (once per check)."""
    if "draws_agentic" not in ctx.memo:
        ok = bool(getattr(ctx.target, "tools", False)) and is_bpe(ctx)
        if ok:
            from .agentic import renders_tools

            ok = renders_tools(ctx.tokenizer()) is None
        ctx.memo["draws_agentic"] = ok
    return ctx.memo["draws_agentic"]


def batch_strategy(ctx, *, min_size=1, max_size=3, agentic=False, **kwargs):
    """Drawn batches. ``agentic``: for a target that declares ``tools`` on a template that
    renders them, each conversation is plain chat or a tool conversation (calls, results,
    reasoning, follow-ups), half and half, the batch's calls sharing one argument type."""
    plain = conversation_strategy(ctx, **kwargs)
    if agentic and draws_agentic(ctx):
        from ..strategies import agentic_batches

        single = not getattr(ctx.target, "multi_turn", True)
        char = ctx.tokenizer().name_or_path.endswith("seed001")
        system = False if (char or single or not getattr(ctx.target, "system_prompt", True)) \
            else None
        return agentic_batches(min_size=min_size, max_size=max_size, plain=plain,
                               max_rounds=1 if single else 2,
                               follow_up=False if single else None, system=system)
    return st.lists(plain, min_size=min_size, max_size=max_size)


#: a check that judged fewer examples than this is an error, never a pass
JUDGED_FLOOR = 5


def require(ctx: Context, condition: bool, reason: str) -> None:
    """Reject this draw (it is not judged) unless ``condition``; the reason is counted and shown
    when too few draws were judged."""
    if not condition:
        ctx.rejections[reason] = ctx.rejections.get(reason, 0) + 1
        assume(False)


def run_property(ctx: Context, strategy, prop, *, pinned=(), budget: float = 1.0,
                 special=(), split=None) -> None:
    """Run ``prop`` on draws of ``strategy`` under the context's Hypothesis profile, passed
    explicitly; every draw ``prop`` does not reject (see :func:`require`) counts as judged.

    ``special``: inputs judged first, in every profile, outside Hypothesis (the tokenizer's
    special strings, :func:`special_inputs`); a failing one is narrowed to the first of
    ``split(inputs)`` that fails alone, so the report shows one conversation, not the batch."""
    run_special(ctx, prop, special, split)
    base = profiles.profile(ctx.profile)
    max_examples = max(JUDGED_FLOOR + 2, int(base.max_examples * budget))

    pinned = list(pinned)
    judge = prop
    phases = base.phases if ctx.shrink else tuple(p for p in base.phases if p != Phase.shrink)
    key = _trace_key(ctx, strategy, pinned, max_examples, phases)
    trace = None  # the calls of this run, kept from the Hypothesis run below (if key)

    def prop(inputs):
        # only drawn inputs may be served from chunk calls (sft_conformance.batch_judging):
        # the pinned ones, like the special strings, reach the target as the batch they are
        ctx.drawing = not any(inputs is p or inputs == p for p in pinned)
        entry = None
        if trace is not None:
            entry = [copy.deepcopy(inputs), "raised"]
            trace.append(entry)
        try:
            judge(inputs)
            if entry is not None:
                entry[1] = "judged"
        except UnsatisfiedAssumption:
            if entry is not None:
                entry[1] = "rejected"
            raise
        except TargetRaised:
            # a refusal ends the search like a failure: the refused draw is judged once, and
            # the shrinker's later attempts are not counted (as ``test`` does for a failure)
            if not ctx.failed:
                ctx.judged += 1
                ctx.failed = True
            raise
        except TargetError:
            # a malformed batch: no batch is served from here on (batch_judging), so every
            # later call, the shrinker's and Hypothesis's replay, is the target's own
            ctx.serve_closed = True
            raise
        finally:
            ctx.drawing = False

    # the source of ``test`` seeds the derandomized draws (Hypothesis hashes it): keep it as it
    # is, or every stored verdict is drawn anew
    def test(inputs):
        # a draw is judged when the property ran to a verdict on it: a pass, or the first
        # failure (the shrinker's later attempts are not counted again)
        try:
            prop(inputs)
        except CheckFailure:
            if not ctx.failed:
                ctx.judged += 1
                ctx.failed = True
            raise
        if not ctx.failed:
            ctx.judged += 1

    if key is not None and key in _TRACES and _replay(ctx, test, _TRACES[key]):
        return
    trace = None if key is None else []
    test = given(strategy)(test)
    for value in reversed(list(pinned)):
        test = example(value)(test)
    try:
        settings(
            parent=base,
            max_examples=max_examples,
            verbosity=Verbosity.quiet,
            phases=phases,
            report_multiple_bugs=False,
            print_blob=False,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )(test)()
    except Unsatisfiable:
        pass  # nothing judged: the floor reports it with the reasons
    if trace is not None and not ctx.failed and all(o != "raised" for _, o in trace):
        _TRACES[key] = trace
        while len(_TRACES) > _TRACES_MAX:
            _TRACES.popitem(last=False)


# -- the draws of a passing run, shared between the rows of ``mutants`` --------------------------

#: while on (:func:`share_traces`): ``{key: [(inputs, "judged" | "rejected"), ...]}``, the calls
#: Hypothesis made in a check run that ended without a failure, in order
_TRACES: collections.OrderedDict | None = None
_TRACES_MAX = 4096
#: replays of this process: [ended as kept, came out otherwise]
_REPLAYS = [0, 0]


def share_traces(on: bool = True) -> None:
    """From now on in this process (``on``), a check run that ends without a failure keeps the
    inputs Hypothesis gave its property, in order, with which were judged and which rejected;
    a later run of the same check with the same strategy, settings, declarations (the target's
    name aside), tokenizer and ``max_length`` gives its property those inputs first, and ends
    there when every one comes out as before (``off``: drop them).

    Under a derandomized profile Hypothesis' next input depends only on the strategy, the
    settings and how the earlier ones came out (the premise of batch judging): a run whose
    calls come out as the kept run's did is that run, call for call, so its judged count,
    rejections and verdict are the same. The first call that comes out otherwise (a failure, a
    refusal, another rejection) undoes what the replay counted and the check runs under
    Hypothesis as it always does. Off by default: the ``mutants`` command turns it on in its
    own processes, whose rows are our own targets drawn with the same seeds."""
    global _TRACES
    if not on:
        _TRACES = None
    elif _TRACES is None:
        _TRACES = collections.OrderedDict()


def _trace_key(ctx, strategy, pinned, max_examples, phases):
    """What decides the inputs of a check run, or None while traces are not kept."""
    if _TRACES is None:
        return None
    import dataclasses
    import json

    declared = dataclasses.replace(ctx.decl, name="", description="", install_hint="")
    try:
        pins = json.dumps(pinned, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return None
    return (ctx.check_id, repr(strategy), repr(declared), _tokenizer_identity(ctx.tokenizer()),
            ctx.tokenizer_name, ctx.max_length, ctx.profile, max_examples, tuple(phases), pins,
            bool(getattr(ctx.target, "multi_turn", True)),
            bool(getattr(ctx.target, "system_prompt", True)),
            bool(getattr(ctx.target, "tools", False)))


def _replay(ctx, test, trace) -> bool:
    """Give ``test`` the kept inputs in order; True when each came out as it did (the run is
    done), else False with the context as it was before (the caller runs Hypothesis)."""
    saved = (ctx.judged, ctx.failed, dict(ctx.rejections), list(ctx.notes), ctx.serve_closed,
             ctx.last_inputs, ctx.drawing)
    for inputs, outcome in trace:
        try:
            test(copy.deepcopy(inputs))
            got = "judged"
        except UnsatisfiedAssumption:
            got = "rejected"
        except Exception:
            got = "raised"
        if got != outcome:
            (ctx.judged, ctx.failed, rejections, notes, ctx.serve_closed, ctx.last_inputs,
             ctx.drawing) = saved
            ctx.rejections.clear()
            ctx.rejections.update(rejections)
            ctx.notes[:] = notes
            _REPLAYS[1] += 1
            return False
    _REPLAYS[0] += 1
    return True


def _judge_once(ctx, prop, inputs) -> bool:
    """Run ``prop`` on ``inputs``; True when judged (not rejected by :func:`require`)."""
    from hypothesis.errors import UnsatisfiedAssumption

    try:
        prop(inputs)
    except UnsatisfiedAssumption:
        return False
    return True


def run_special(ctx: Context, prop, special, split=None) -> None:
    """Judge the pinned special-string inputs (see :mod:`sft_conformance.special_strings`)."""
    split = split or (lambda convs: [[c] for c in convs])
    for inputs in special:
        try:
            judged = _judge_once(ctx, prop, inputs)
        except (CheckFailure, TargetRaised) as exc:
            ctx.judged += 1
            ctx.failed = True
            for smaller in split(inputs):  # one conversation that fails alone, if any
                try:
                    _judge_once(ctx, prop, smaller)
                except CheckFailure as narrow:
                    raise narrow from None
                except TargetRaised:
                    raise  # refused alone: judged as a refusal (runner), on one conversation
                except Exception:
                    continue
            if isinstance(exc, TargetRaised):  # every one alone is fine: the batch was refused
                ctx.collate(inputs[0] if isinstance(inputs, tuple) else inputs,
                            ctx.last_inputs.get("tokenizer"))
            raise exc
        ctx.judged += judged


def agentic_inputs(ctx: Context, tok) -> list:
    """The agentic fixtures (a tool call and its result; parallel calls with consecutive
    results and a follow-up; reasoning) as one pinned batch, for a target that declares
    ``tools`` on a template that renders them."""
    if not getattr(ctx.target, "tools", False) or not is_bpe(ctx):
        return []
    from .agentic import PARALLEL, REASONING, REASONING_FOLLOW_UP, WEATHER, renders_tools

    if renders_tools(tok):
        return []
    from sft_conformance.reference import TemplateError

    def renders(conv):
        try:
            build_example(conv, tok)
            return True
        except TemplateError:
            return False

    batch = [c for c in (WEATHER, PARALLEL, REASONING, REASONING_FOLLOW_UP)
             if (getattr(ctx.target, "multi_turn", True)
                 or c not in (PARALLEL, REASONING_FOLLOW_UP)) and renders(c)]

    batch = copy.deepcopy(batch)
    if batch and fits(ctx, batch, tok):
        ctx.notes.append(f"judged {len(batch)} pinned tool conversation(s) (a call and its "
                         "result, parallel calls, reasoning, reasoning before a follow-up)")
        return [batch]
    return []


def special_inputs(ctx: Context, tok, *, multi_turn: bool = False, kinds=None,
                   compact: bool = False, agentic: bool = False) -> list:
    """The pinned special-string batches for this target and tokenizer, as lists of
    conversations (none on the seed-001 character tokenizer, whose alphabet has no such
    strings); a note says how many conversations they hold."""
    if not is_bpe(ctx):
        return []
    from ..special_strings import cached_pinned_batches

    batches = cached_pinned_batches(
        tok,
        multi_turn=multi_turn and getattr(ctx.target, "multi_turn", True),
        system=getattr(ctx.target, "system_prompt", True),
        kinds=tuple(kinds) if kinds else None,
        compact=compact,
    )
    batches = [b for b in batches if fits(ctx, b, tok)]
    extra = agentic_inputs(ctx, tok) if agentic else []
    if batches:
        n = sum(len(b) for b in batches)
        ctx.notes.append(
            f"judged {n} pinned conversation(s) in {len(batches)} batch(es) that put the "
            "tokenizer's own special strings (pad, eos, end of turn, markers, look-alikes) at "
            "the start, middle and end of each role's content"
        )
    return batches + extra


#: ``build_example`` results of this process (:func:`built`), oldest first
_BUILT: collections.OrderedDict = collections.OrderedDict()
_BUILT_MAX = 32768


def _tokenizer_identity(tok) -> tuple:
    """What ``build_example`` reads of a tokenizer, as a key that two loads of the same
    tokenizer share (every run loads its own tokenizer objects)."""
    template = getattr(tok, "chat_template", None)
    return (type(tok).__name__, tok.name_or_path, vocabulary_size(tok), tok.pad_token_id,
            tok.eos_token_id, tok.bos_token_id,
            hash(template) if isinstance(template, str) else repr(template))


def _once(key: tuple, compute):
    """``compute()`` once per process under ``key`` (kept in ``_BUILT``, the oldest dropped
    first); raises as it did the first time."""
    if key in _BUILT:
        _BUILT.move_to_end(key)
    else:
        try:
            _BUILT[key] = (True, compute())
        except Exception as exc:
            _BUILT[key] = (False, exc)
        while len(_BUILT) > _BUILT_MAX:
            _BUILT.popitem(last=False)
    ok, value = _BUILT[key]
    if not ok:
        raise value
    return value


def content_once(conv, tok) -> list[list[int]]:
    """``content_tokens(conv, tok)`` once per process (it renders every prefix of the
    conversation), keyed as :func:`build_once`; read-only."""
    import json

    from sft_conformance.reference.masks import content_tokens

    return _once(("content_tokens", _tokenizer_identity(tok),
                  json.dumps(conv, sort_keys=True, default=str)),
                 lambda: content_tokens(conv, tok))


def build_once(conv, tok, *, policy: str = "all", index: int = 0, tokenization: str = "whole",
               reasoning: str | None = None):
    """``build_example`` once per process: the checks ask for the same conversation again and
    again, and every row of ``report`` or ``mutants`` draws the same derandomized
    conversations; raises as it does. Keyed by the tokenizer's name, size, special ids and
    template, not by the object (each run loads its own tokenizer objects)."""
    import json

    key = (_tokenizer_identity(tok), policy, index, tokenization, reasoning,
           json.dumps(conv, sort_keys=True, default=str))
    return _once(key, lambda: build_example(conv, tok, policy=policy, index=index,
                                            tokenization=tokenization, reasoning=reasoning))


def built(ctx, conv, tok):
    """``build_example(conv, tok)`` under the target's turn policy and reasoning rule
    (:func:`build_once`)."""
    return build_once(conv, tok, policy=ctx.decl.turn_policy, reasoning=ctx.decl.reasoning)


def fits(ctx, convs, tok) -> bool:
    return all(len(built(ctx, c, tok)) <= ctx.max_length for c in convs)


def require_renders(ctx, convs, tok) -> None:
    """Judge only conversations the chat template renders: a template may refuse a drawn tool
    conversation (Llama 3.1 on parallel calls, DeepSeek on dict arguments), which is the
    template's rule, not the target's finding; counted with the reason."""
    from sft_conformance.reference import TemplateError

    if not any(isinstance(c, dict) for c in convs):
        return
    for c in convs:
        try:
            built(ctx, c, tok)
        except TemplateError as exc:
            require(ctx, False, f"the chat template refuses a drawn tool conversation "
                                f"({str(exc).split(': ')[-1][:80]})")


def require_fits(ctx, convs, tok) -> None:
    """Judge only conversations that fit ``max_length``; count the others with the reason."""
    require_renders(ctx, convs, tok)
    if not fits(ctx, convs, tok):
        longest = max(len(built(ctx, c, tok)) for c in convs)
        require(
            ctx,
            False,
            f"a drawn conversation is longer than max_length={ctx.max_length} "
            f"(up to {longest} tokens with this template): pass --max-length",
        )


def pad_eos_strategy(ctx):
    """pad == eos or not: both unless the target declares which one it is built for."""
    declared = getattr(ctx.target, "pad_equals_eos", None)
    return st.booleans() if declared is None else st.just(bool(declared))


def pad_eos_allowed(ctx, value: bool) -> bool:
    declared = getattr(ctx.target, "pad_equals_eos", None)
    return declared is None or bool(declared) == value


def is_bpe(ctx) -> bool:
    return not ctx.tokenizer().name_or_path.endswith("seed001")
