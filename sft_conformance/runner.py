"""One generator of checks, two entry points: :func:`check_target` (structured records) and the
pytest plugin (:mod:`sft_conformance.plugin`), which parametrizes over the same generator."""

from __future__ import annotations

import platform
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from . import profiles
from .checks import CHECKS, Check, missing_capability
from .context import Context, TargetRaised
from .failures import CheckFailure, CheckSkipped
from .target import Declared, TargetError, declared, load_target

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
                 "torchtune", "lm-eval"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def make_context(target, *, spec: str = "", tokenizer: str | None = None,
                 profile: str | None = None, shrink: bool = True,
                 distributed: bool = False) -> Context:
    decl = declared(target)
    name = profiles.load(profile)
    return Context(target=target, decl=decl, tokenizer_name=tokenizer or decl.tokenizer,
                   spec=spec or decl.name, profile=name, shrink=shrink,
                   distributed=distributed)


def iter_checks(target, *, spec: str = "", tokenizer: str | None = None,
                profile: str | None = None, only: list[str] | None = None,
                shrink: bool = True, distributed: bool = False
                ) -> Iterator[tuple[Context, Check]]:
    """The generator both entry points share: (context, check) for every selected check."""
    ctx = make_context(target, spec=spec, tokenizer=tokenizer, profile=profile, shrink=shrink,
                       distributed=distributed)
    for check in CHECKS:
        if only and check.id not in only and check.name not in only:
            continue
        yield ctx, check


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
    try:
        with warnings.catch_warnings():
            # targets warn about what checks provoke on purpose (dropped examples, empty batches)
            warnings.simplefilter("ignore")
            check.func(ctx)
        if known:
            res.message = f"declared known failure did not occur (remove it?): {known}"
    except CheckFailure as exc:
        res.status, res.message, res.counterexample = "failed", exc.message, exc.counterexample
        if known:
            res.status, res.message = "xfail", f"known failure: {known}\n\n{exc.message}"
    except CheckSkipped as exc:
        res.status, res.message = "skipped", str(exc)
    except (TargetRaised, TargetError) as exc:
        convs = ctx.last_inputs.get("conversations")
        res.status = "error"
        res.message = (f"target {d.name!r}, check {check.id} ({check.name}): {exc}"
                       + (f"\n  on conversations: {convs!r}" if convs is not None else ""))
        res.counterexample = {"conversations": convs}
        if known:
            res.status, res.message = "xfail", f"known failure: {known}\n\n{res.message}"
    except Exception as exc:  # a bug in the check or an unexpected library error
        res.status = "error"
        res.message = (f"target {d.name!r}, check {check.id} ({check.name}) crashed: "
                       f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
    res.seconds = round(time.perf_counter() - start, 3)
    return res


def check_target(target, *, tokenizer: str | None = None, profile: str | None = None,
                 only: list[str] | None = None, spec: str | None = None,
                 shrink: bool = True, distributed: bool = False) -> TargetRun:
    """Run every check on ``target`` (an object, a built-in name or ``module:attr``).

    ``shrink=False`` reports the first counterexample found instead of a minimal one (faster;
    for mutation testing). Returns a :class:`TargetRun` whose ``results`` hold one
    :class:`CheckResult` per check.
    A target that cannot be loaded or does not follow the protocol gives a run with ``error``.
    """
    label = spec or (target if isinstance(target, str) else getattr(target, "name", "target"))
    try:
        obj = load_target(target)
        d = declared(obj)
    except TargetError as exc:
        return TargetRun(str(label), str(label), tokenizer or "", profile or "", error=str(exc))
    run = TargetRun(d.name, str(label), tokenizer or d.tokenizer,
                    profiles.load(profile),
                    declared={k: v for k, v in asdict(d).items()
                              if k not in ("options", "description")}
                    | {"options": sorted(d.options)})
    for ctx, check in iter_checks(obj, spec=str(label), tokenizer=tokenizer, profile=profile,
                                  only=only, shrink=shrink, distributed=distributed):
        run.results.append(run_check(ctx, check))
    return run
