"""One generator of checks, two entry points: :func:`check_target` (structured records) and the
pytest plugin (:mod:`sft_conformance.plugin`), which parametrizes over the same generator."""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from . import profiles
from .assets import vocabulary_size
from .checks import CHECKS, Check, missing_capability
from .checks.engine import JUDGED_FLOOR
from .context import Context, TargetRaised
from .errors import ConfigurationError
from .failures import CheckFailure, CheckSkipped
from .target import Declared, TargetError, declared, load_target  # noqa: F401

STATUSES = ("passed", "failed", "skipped", "xfail", "error")


@dataclass
class CheckResult:
    """The outcome of one check on one target."""

    target: str
    id: str
    check: str
    status: str
    message: str = ""
    counterexample: dict | None = None
    seconds: float = 0.0
    doc: str = ""
    judged: int = 0  # how many drawn examples (batches of conversations) the check judged
    notes: list = field(default_factory=list)  # warnings and notes shown beside the verdict

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TargetRun:
    """Every check of one target, with the header facts of the run."""

    target: str
    spec: str
    tokenizer: str
    profile: str
    results: list[CheckResult] = field(default_factory=list)
    error: str | None = None
    declared: dict = field(default_factory=dict)
    collate_calls: dict | None = None  # with the collate memo: calls asked, calls made

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.status in ("passed", "skipped", "xfail")
                                          for r in self.results)

    def to_json(self) -> dict:
        return {"target": self.target, "spec": self.spec, "tokenizer": self.tokenizer,
                "profile": self.profile, "error": self.error, "declared": self.declared,
                "checks": [r.to_json() for r in self.results]}


def library_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("sft-conformance", "torch", "transformers", "tokenizers", "hypothesis", "trl",
                 "torchtune", "lm-eval", "litgpt", "verl", "ms-swift", "llamafactory",
                 "axolotl", "openrlhf", "tinker-cookbook", "oumi"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def effective_tokenizer(requested: str | None, declared_name: str) -> str:
    """The tokenizer a target runs with: the one asked for, else the one it declares. A target
    meant for a bundled template with ``{% generation %}`` tags (TRL's assistant_only_loss,
    torchtune) runs on a real family's tagged variant (``qwen2.5`` -> ``qwen2.5-generation``:
    the same rendering, tags around what the assistant produces), as its user would configure."""
    if requested is None:
        return declared_name
    from .assets import TEMPLATES
    from .assets.families import generation_variant

    spec = TEMPLATES.get(declared_name)
    if spec is not None and spec.has_generation_tags:
        return generation_variant(requested) or requested
    return requested


def make_context(target, *, spec: str = "", tokenizer: str | None = None,
                 profile: str | None = None, shrink: bool = True,
                 distributed: bool = False, strict: bool = False,
                 max_length: int | None = None, share: RunShare | None = None) -> Context:
    decl = declared(target)
    name = profiles.resolve(profile)
    tokenizer_name = effective_tokenizer(tokenizer, decl.tokenizer)
    return Context(target=target, decl=decl, tokenizer_name=tokenizer_name,
                   spec=spec or decl.name, profile=name, shrink=shrink,
                   distributed=distributed, strict=strict,
                   **({"max_length": max_length, "max_length_given": True}
                      if max_length else {}),
                   **({"_tokenizers": share.tokenizers.setdefault(tokenizer_name, {})}
                      if share is not None else {}))


def _check_keys(check: Check) -> set[str]:
    return {check.id.lower(), check.name.lower(), f"{check.id}-{check.name}".lower()}


def select_checks(only: list[str] | None = None) -> list[Check]:
    """The checks named by ``only``, every check when empty. A check is named by its id (``S4``,
    ``s4``), its name (``end_of_turn_trained``) or both as pytest prints them
    (``S4-end_of_turn_trained``); ConfigurationError for a name that is no check."""
    if not only:
        return list(CHECKS)
    wanted = {o.strip().lower() for o in only}
    known = set().union(*(_check_keys(c) for c in CHECKS))
    unknown = [o for o in only if o.strip().lower() not in known]
    if unknown:
        raise ConfigurationError(f"unknown check(s) {', '.join(unknown)}: expected ids "
                                 f"{', '.join(c.id for c in CHECKS)}, check names or "
                                 "ID-name as pytest prints them (S4-end_of_turn_trained)")
    return [c for c in CHECKS if _check_keys(c) & wanted]


def preflight(ctx: Context) -> None:
    """Configuration errors surface before any check runs (sft_conformance.validation): the
    tokenizer loads and has a chat template, collate takes (conversations, tokenizer,
    max_length), a probe batch is well formed, and the declared option factories build
    targets."""
    from . import validation

    if ctx.decl.missing:
        return  # every check is skipped with the install hint
    try:
        tok = ctx.tokenizer()
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"tokenizer {ctx.tokenizer_name!r} does not load: "
                                 f"{type(exc).__name__}: {exc}") from exc
    validation.tokenizer_ready(tok, ctx.tokenizer_name)
    if ctx.decl.pad_equals_eos:
        tok = ctx.tokenizer(pad_equals_eos=True)
    start = time.perf_counter()
    validation.target_ready(ctx.target, ctx.decl, tok, max_length=ctx.max_length)
    # what one small call costs decides whether batch judging pays (batch_judging.applies); a
    # first call may pay one-off costs (imports, caches), so a slow one is timed again
    seconds = time.perf_counter() - start
    if seconds >= 0.015 and not ctx.decl.missing:
        start = time.perf_counter()
        validation.probe_batch(ctx.target, ctx.decl.name, tok, max_length=ctx.max_length)
        seconds = min(seconds, time.perf_counter() - start)
    ctx.memo["probe_seconds"] = seconds
    for name, factory in ctx.decl.options.items():
        try:
            declared(factory())
        except Exception as exc:
            raise ConfigurationError(f"target {ctx.decl.name!r}: option {name!r} does not "
                                     f"build a target: {type(exc).__name__}: {exc}") from exc


def iter_checks(target, *, spec: str = "", tokenizer: str | None = None,
                profile: str | None = None, only: list[str] | None = None,
                shrink: bool = True, distributed: bool = False, strict: bool = False,
                max_length: int | None = None,
                share: RunShare | None = None) -> Iterator[tuple[Context, Check]]:
    """The generator both entry points share: (context, check) for every selected check.
    Configuration errors (unknown check, profile or tokenizer, broken options) raise
    ConfigurationError before the first pair is yielded."""
    checks = select_checks(only)
    ctx = make_context(target, spec=spec, tokenizer=tokenizer, profile=profile, shrink=shrink,
                       distributed=distributed, strict=strict, max_length=max_length,
                       share=share)
    preflight(ctx)
    adapt_max_length(ctx)
    for check in checks:
        yield ctx, check


def adapt_max_length(ctx: Context) -> None:
    """For a target that declares ``tools``, on a template that renders them, and no
    ``max_length`` chosen: the template's fixed text with the drawn tool schemas, measured,
    plus a budget for the turns (docs/specification.md#agentic), so that every check judges
    without ``--max-length``; never below the default."""
    if ctx.max_length_given or not ctx.decl.tools or ctx.decl.missing:
        return
    from .checks.agentic import adapted_max_length, renders_tools

    tok = ctx.tokenizer()
    if renders_tools(tok) is None:
        ctx.max_length = adapted_max_length(ctx, tok)


def run_check(ctx: Context, check: Check) -> CheckResult:
    """Run one check; never raises for a target's misbehaviour (that is a result)."""
    d: Declared = ctx.decl
    start = time.perf_counter()
    res = CheckResult(d.name, check.id, check.name, "passed", doc=check.doc)
    known = d.known_failures.get(check.id)
    if d.missing:
        res.status = "skipped"
        res.message = (f"needs {', '.join(d.missing)} (not installed)"
                       + (f": {d.install_hint}" if d.install_hint else ""))
        return res
    reason = missing_capability(ctx, check)
    if reason:
        res.status, res.message = "skipped", f"the target has no such capability: {reason}"
        return res
    ctx.judged, ctx.rejections, ctx.notes, ctx.failed = 0, {}, [], False
    ctx.serve_closed = False
    ctx.check_id = check.id
    try:
        with warnings.catch_warnings():
            # targets warn about what checks provoke on purpose (dropped examples, empty batches)
            warnings.simplefilter("ignore")
            check.func(ctx)
        if ctx.judged < JUDGED_FLOOR and not check.judges_itself:
            raise TooFewJudged(ctx.judged, ctx.rejections)
        if known:
            res.message = f"declared known failure did not occur (remove it?): {known}"
            if ctx.strict:
                res.status = "failed"
                res.message = (f"{check.id}: declared known failure did not occur, and strict "
                               f"mode fails a stale declaration: {known!r}. The target passes "
                               f"{check.id} now: remove it from known_failures.")
    except CheckFailure as exc:
        res.status, res.message, res.counterexample = "failed", exc.message, exc.counterexample
        if known:
            res.status, res.message = "xfail", f"known failure: {known}\n\n{exc.message}"
    except CheckSkipped as exc:
        res.status, res.message = "skipped", str(exc)
    except TooFewJudged as exc:
        res.status, res.message = "error", f"{check.id}: {exc}"
    except TargetRaised as exc:
        lost = _lost_to_refusal(ctx, exc)
        if lost:  # trainable data refused: the finding of the check that was judging it
            from .refusals import refusal_message

            res.status = "failed"
            res.message = refusal_message(ctx, check, exc, lost,
                                          ctx.last_inputs.get("max_length"))
            res.counterexample = {"conversations": ctx.last_inputs.get("conversations"),
                                  "lost": [{"example": i, "trainable": n} for i, n in lost],
                                  "exception": f"{type(exc.original).__name__}: "
                                               f"{exc.original}"}
            if known:
                res.status, res.message = "xfail", f"known failure: {known}\n\n{res.message}"
            if not ctx.judged:
                ctx.judged = 1  # the refused batch was judged
        else:
            _target_error(res, ctx, check, exc, known)
    except TargetError as exc:
        _target_error(res, ctx, check, exc, known)
    except Exception as exc:  # a bug in the check or an unexpected library error
        res.status = "error"
        res.message = (f"target {d.name!r}, check {check.id} ({check.name}) crashed: "
                       f"{type(exc).__name__}: {exc}\n{innermost_traceback(exc)}")
    res.seconds = round(time.perf_counter() - start, 3)
    res.judged, res.notes = ctx.judged, list(dict.fromkeys(ctx.notes))
    return res


def _lost_to_refusal(ctx: Context, exc: TargetRaised) -> list:
    """The trainable examples a refusal of ``collate`` lost (empty for another method's error or
    a batch with nothing left to train)."""
    if not exc.where.startswith("collate"):
        return []
    from .refusals import trainable_counts

    inputs = ctx.last_inputs
    tok = inputs.get("tokenizer")
    if tok is None or not inputs.get("conversations"):
        return []
    return trainable_counts(ctx, inputs["conversations"], tok, inputs.get("max_length"))


def _target_error(res, ctx, check, exc, known) -> None:
    """An error the suite cannot judge as a finding: a malformed batch, a method that cannot
    be called, an exception outside collate, a refusal that lost nothing trainable."""
    d = ctx.decl
    convs = ctx.last_inputs.get("conversations")
    res.status = "error"
    res.message = (f"target {d.name!r}, check {check.id} ({check.name}): {exc}"
                   + (f"\n  on conversations: {convs!r}" if convs is not None else ""))
    res.counterexample = {"conversations": convs}
    if known:
        res.status, res.message = "xfail", f"known failure: {known}\n\n{res.message}"


class TooFewJudged(Exception):
    """A check that judged (almost) nothing: an error with the reasons, never a pass."""

    def __init__(self, judged: int, rejections: dict):
        reasons = "; ".join(f"{n}x {why}" for why, n in sorted(rejections.items(),
                                                                key=lambda kv: -kv[1]))
        super().__init__(f"judged only {judged} example(s), fewer than {JUDGED_FLOOR}: "
                         f"a verdict on so few is no verdict. Draws not judged: "
                         f"{reasons or 'none recorded'}")


def innermost_traceback(exc: BaseException, frames: int = 8) -> str:
    """The traceback's innermost frames (where it failed), not its outermost ones."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__,
                                              limit=-frames))


#: ``SFT_CONFORMANCE_COLLATE_ONCE=0`` turns the collate memo of :func:`check_target` off
COLLATE_ONCE_ENV = "SFT_CONFORMANCE_COLLATE_ONCE"


def _tokenizer_state(tok) -> tuple:
    """What a check could change on a tokenizer object between two identical calls."""
    template = getattr(tok, "chat_template", None)
    return tuple(getattr(tok, a, None) for a in (
        "padding_side", "truncation_side", "pad_token_id", "eos_token_id", "bos_token_id",
        "model_max_length", "add_bos_token", "add_eos_token")) + (
        vocabulary_size(tok) if hasattr(tok, "__len__") else None,
        hash(template) if isinstance(template, str) else repr(template))


def call_key(conversations, tokenizer, max_length) -> tuple:
    """What makes two ``collate`` calls identical: the conversations, the tokenizer object in
    the same state and ``max_length`` (the collate memo's and batch judging's key)."""
    return (repr(conversations), id(tokenizer), _tokenizer_state(tokenizer), max_length)


class CollateOnce:
    """A target whose identical ``collate`` calls are made once per run of the checks: the
    same conversations, the same tokenizer object (in the same state) and the same
    ``max_length`` give a deep copy of the batch the first call returned (no check can mutate
    another's input). A call that raised raises again, without reaching the target: a copy of
    its exception (same type, message and cause) on its own traceback, so the innermost frame,
    where Hypothesis tells one failure from another, is the target's own (a shrink tries the
    same refused batch many times over, across checks). An exception that cannot be copied is
    not remembered. Everything else is the target's.

    ``store``: the memo of an earlier run of the same target object to go on from
    (:class:`RunShare`). ``calls``: the calls the checks made; ``made``: those that reached the
    target."""

    def __init__(self, inner, store: dict | None = None):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_memo", {} if store is None else store)
        object.__setattr__(self, "calls", 0)
        object.__setattr__(self, "made", 0)
        # batch judging (sft_conformance.batch_judging): batches cut from chunk calls, served
        # to the label-level checks while ``serving`` is on
        object.__setattr__(self, "served", {})
        object.__setattr__(self, "serving", False)
        object.__setattr__(self, "served_now", 0)
        object.__setattr__(self, "served_total", 0)
        object.__setattr__(self, "gate", lambda: True)  # whether the input now may be served
        object.__setattr__(self, "serve_limit", None)  # at most this many served in a check
        object.__setattr__(self, "last_served", False)  # the latest call was served

    def __getattr__(self, key):
        return getattr(self._inner, key)

    def __setattr__(self, key, value):
        setattr(self._inner, key, value)

    def collate(self, conversations, tokenizer, max_length):
        import copy

        object.__setattr__(self, "calls", self.calls + 1)
        try:
            key = call_key(conversations, tokenizer, max_length)
        except Exception:  # an unusual tokenizer: no memo for it
            key = None
        object.__setattr__(self, "last_served", False)
        if self.serving and key is not None and self.gate() and (
                self.serve_limit is None or self.served_now < self.serve_limit):
            cut = self.served.get(key)
            if cut is not None and cut[0] is tokenizer:
                object.__setattr__(self, "served_now", self.served_now + 1)
                object.__setattr__(self, "served_total", self.served_total + 1)
                object.__setattr__(self, "last_served", True)
                return copy.deepcopy(cut[1])
        hit = self._memo.get(key) if key is not None else None
        # a call made while an exception is being handled gets that one as the context of
        # whatever it raises: its refusals are neither remembered nor replayed
        handling = sys.exc_info()[1] is not None
        if hit is not None and hit[0] is tokenizer:
            if not isinstance(hit[1], _Raised):
                return copy.deepcopy(hit[1])
            if not handling:
                raise hit[1].again()
        object.__setattr__(self, "made", self.made + 1)
        try:
            batch = self._inner.collate(conversations, tokenizer, max_length)
        except Exception as exc:
            if key is not None and not handling:
                raised = _Raised.remember(exc)
                if raised is not None:
                    self._memo[key] = (tokenizer, raised)
            raise
        if key is not None:
            try:  # the tokenizer is held, so its id is not reused by another object
                self._memo[key] = (tokenizer, copy.deepcopy(batch))
            except Exception:  # a batch that cannot be copied is not remembered
                pass
        return batch


class _Raised:
    """What a remembered ``collate`` call raised (:class:`CollateOnce`): a copy of the exception
    and the target's part of its traceback, the frames' locals cleared (a frame keeps its
    caller, so a kept traceback would keep the whole stack of the call, batches and trainer
    objects included, alive for the run)."""

    __slots__ = ("exc", "tb")

    def __init__(self, exc: Exception, tb):
        self.exc, self.tb = exc, tb

    @staticmethod
    def _copy(exc: Exception) -> Exception:
        import copy

        new = copy.copy(exc)
        if type(new) is not type(exc) or new.args != exc.args:
            raise TypeError("not a faithful copy")
        new.__cause__, new.__context__ = exc.__cause__, exc.__context__
        new.__suppress_context__ = exc.__suppress_context__
        if getattr(exc, "__notes__", None) is not None:
            new.__notes__ = list(exc.__notes__)
        return new

    @classmethod
    def remember(cls, exc: Exception) -> _Raised | None:
        """``exc``, as :class:`CollateOnce` caught it, ready to raise again; None when a
        faithful copy cannot be built (a constructor that does not take its own ``args``)."""
        try:
            kept = cls._copy(exc)
        except Exception:
            return None
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # the target's
        seen: set = set()
        chained: BaseException | None = exc
        while chained is not None and id(chained) not in seen:  # and those of its causes
            seen.add(id(chained))
            traceback.clear_frames(tb if chained is exc else chained.__traceback__)
            chained = chained.__cause__ or chained.__context__
        return cls(kept, tb)

    def again(self) -> Exception:
        """A new exception like the remembered one, on the remembered traceback (re-raising the
        one object would grow its traceback with every call)."""
        return self._copy(self.exc).with_traceback(self.tb)


@dataclass
class RunShare:
    """What successive runs of the checks on **one target object** in one process share (a
    report row and its hand-loop re-run of S5 and S8, sft_conformance.report.run_row): the
    tokenizer objects each tokenizer name loaded to, and the collate memo, so a batch the first
    run asked for is not asked of the target again. Only for runs whose targets' ``collate`` is
    that one object's."""

    tokenizers: dict = field(default_factory=dict)  # tokenizer name -> Context._tokenizers
    collates: dict = field(default_factory=dict)  # the CollateOnce store


def collate_once_default() -> bool:
    import os

    return os.environ.get(COLLATE_ONCE_ENV, "1").strip().lower() not in ("0", "false", "no",
                                                                        "off")


def check_target(target, *, tokenizer: str | None = None, profile: str | None = None,
                 only: list[str] | None = None, spec: str | None = None,
                 shrink: bool = True, distributed: bool = False, strict: bool = False,
                 max_length: int | None = None,
                 collate_once: bool | None = None,
                 batch_judging: bool | None = None,
                 share: RunShare | None = None) -> TargetRun:
    """Run every check on ``target`` (an object, a built-in name or ``module:attr``).

    ``shrink=False`` reports the first counterexample found instead of a minimal one (faster;
    for mutation testing). Returns a :class:`TargetRun` whose ``results`` hold one
    :class:`CheckResult` per check.
    A target that cannot be loaded or does not follow the protocol gives a run with ``error``.

    ``collate_once`` (default on; ``SFT_CONFORMANCE_COLLATE_ONCE=0`` turns it off): identical
    ``collate`` calls within this run are made once (:class:`CollateOnce`); ``run.collate_calls``
    says how many calls the checks made and how many reached the target.

    ``batch_judging`` (default on with the memo; ``SFT_CONFORMANCE_BATCH_JUDGING=0`` turns it
    off): the label-level checks judge many conversations from one ``collate`` call
    (:mod:`sft_conformance.batch_judging`); ``run.collate_calls["served"]`` counts the batches
    served that way.

    ``share`` (:class:`RunShare`): the tokenizer objects and collate memo of an earlier run on
    the same target object, gone on from (the memo only when ``collate_once`` is on).
    """
    label = spec or (target if isinstance(target, str) else getattr(target, "name", "target"))
    try:
        obj = load_target(target)
        d = declared(obj)
        pairs = list(iter_checks(obj, spec=str(label), tokenizer=tokenizer, profile=profile,
                                 only=only, shrink=shrink, distributed=distributed,
                                 strict=strict, max_length=max_length, share=share))
    except ConfigurationError as exc:
        return TargetRun(str(label), str(label), tokenizer or "", profile or "", error=str(exc))
    run = TargetRun(d.name, str(label), effective_tokenizer(tokenizer, d.tokenizer),
                    profiles.resolve(profile),
                    declared={k: v for k, v in asdict(d).items()
                              if k not in ("options", "description")}
                    | {"options": sorted(d.options)})
    memo = None
    if collate_once is None:
        collate_once = collate_once_default()
    if batch_judging is None:
        from .batch_judging import enabled_by_default

        batch_judging = enabled_by_default()
    if pairs and collate_once and not d.missing:
        ctx = pairs[0][0]  # one context for every check of the run
        memo = ctx.target = CollateOnce(ctx.target,
                                        store=share.collates if share is not None else None)
        if batch_judging:
            _prepare_batch_judging(ctx, memo, [c for _, c in pairs])
    for ctx, check in pairs:
        run.results.append(_run_served(ctx, check, memo))
    if memo is not None:
        run.collate_calls = {"calls": memo.calls, "made": memo.made,
                             "served": memo.served_total}
        ctx.target = memo._inner
    return run


def _prepare_batch_judging(ctx, memo, checks) -> None:
    """Record the label-level checks' calls and cut their batches from chunk calls
    (:mod:`sft_conformance.batch_judging`)."""
    from . import batch_judging

    inner = memo._inner
    probe = dataclasses.replace(ctx, target=inner)
    if not batch_judging.applies(probe):
        return
    label = [c for c in checks if c.id in batch_judging.LABEL_LEVEL
             and not missing_capability(probe, c)]
    if not label:
        return
    try:
        object.__setattr__(memo, "served", batch_judging.record_and_prepare(probe, inner, label))
        object.__setattr__(memo, "gate",
                           lambda: ctx.drawing and not ctx.failed and not ctx.serve_closed)
    except Exception:  # never a verdict: without it every batch is asked of the target
        object.__setattr__(memo, "served", {})
    ctx.memo.pop("draws_agentic", None)


def _run_served(ctx, check, memo) -> CheckResult:
    """:func:`run_check` with the label-level batches served from chunk calls.

    The first pass serves every recorded drawn batch and does not shrink. A check that passes
    is done. One that does not runs again with nothing served, shrinking included, so its
    verdict, counterexample and judged count are those of a run without batch judging (and
    Hypothesis never sees one input answered twice, once served and once by the target)."""
    from .batch_judging import LABEL_LEVEL

    if memo is None or not memo.served or check.id not in LABEL_LEVEL:
        return run_check(ctx, check)
    shrink = ctx.shrink
    object.__setattr__(memo, "serving", True)
    object.__setattr__(memo, "served_now", 0)
    object.__setattr__(memo, "serve_limit", None)
    ctx.shrink = False
    try:
        res = run_check(ctx, check)
        passed = res.status in ("passed", "skipped") and not (
            res.status == "passed" and res.message.startswith("declared known failure"))
        if passed or (memo.served_now == 0 and not shrink):
            return res
        object.__setattr__(memo, "serving", False)
        ctx.shrink = shrink
        return run_check(ctx, check)
    finally:
        ctx.shrink = shrink
        object.__setattr__(memo, "serving", False)
        object.__setattr__(memo, "serve_limit", None)
