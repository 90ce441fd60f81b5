"""pytest plugin, registered through the ``pytest11`` entry point.

* ``pytest --sft-target TARGET [--sft-target ...] [--sft-tokenizer NAME] [--sft-profile ci]``
  adds one test item per check and target to the session (no test file needed). The items are
  collected like any others: ``--collect-only`` lists them, ``-k "S4-"`` selects one check, and
  a node id printed by pytest (``"::sft-conformance[reference]::S4-end_of_turn_trained"``) can be
  passed back on the command line to re-run that check alone.
* :func:`parametrize_checks` is the parametrizer for a user's own test file::

      from sft_conformance import parametrize_checks

      @parametrize_checks("my_pkg.sft:MyTarget", expected_failures={"S9": "we raise on long"})
      def test_sft_conformance(sft_check):
          sft_check()

A quiet plugin: without ``--sft-*`` options, the fixtures or :func:`parametrize_checks`, it
changes nothing in the user's session: no environment variables, no Hypothesis profile loaded,
no items. Our Hypothesis profiles are namespaced (``sft-conformance-ci``, ...) and passed to our
properties explicitly. ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` are set only around the suite's
own calls, and only when the user has not set them.
"""

from __future__ import annotations

import contextlib
import os

import pytest

NODE_PREFIX = "sft-conformance["
_OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@contextlib.contextmanager
def offline():
    """Hub and datasets offline for the suite's own calls, unless the user set the variables."""
    added = [k for k in _OFFLINE if k not in os.environ]
    for k in added:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def pytest_addoption(parser):
    group = parser.getgroup("sft-conformance", "SFT conformance checks (S1-S15)")
    group.addoption("--sft-target", action="append", default=[], metavar="TARGET",
                    help="run the conformance checks on TARGET: a built-in name or module:attr "
                         "(class, instance or zero-argument factory); repeatable")
    group.addoption("--sft-tokenizer", default=None, metavar="NAME|PATH",
                    help="bundled template name or local tokenizer directory (default: the "
                         "target's declared tokenizer)")
    group.addoption("--sft-profile", default=None, choices=("ci", "dev", "thorough"),
                    help="hypothesis profile of the checks, passed to them explicitly "
                         "(default: ci when CI is set, else dev)")
    group.addoption("--sft-check", action="append", default=[], metavar="ID",
                    help="run only these checks (S1..S12 or a check name); repeatable")
    group.addoption("--sft-max-length", type=int, default=None, metavar="N",
                    help="max_length passed to the target's collate (default 512)")
    group.addoption("--sft-strict", action="store_true", default=False,
                    help="fail a declared known failure that no longer fails")
    group.addoption("--sft-update-snapshots", action="store_true", default=False,
                    help="rewrite the mask snapshots compared by the sft_snapshot fixture")


def pytest_configure(config):
    config.addinivalue_line("markers", "sft_check(id): a conformance check of sft-conformance")
    if not config.getoption("--sft-target"):
        return
    # node ids of our items given on the command line select them; they are no paths
    ours = [a.removeprefix("::") for a in config.args
            if a.removeprefix("::").startswith(NODE_PREFIX)]
    if ours:
        config.args[:] = [a for a in config.args
                          if not a.removeprefix("::").startswith(NODE_PREFIX)]
    config._sft_selected = ours  # noqa: SLF001


def pytest_report_header(config):
    targets = config.getoption("--sft-target")
    if not targets:
        return None
    from .profiles import default_profile
    from .runner import library_versions

    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    return [f"sft-conformance targets: {', '.join(targets)}",
            f"sft-conformance tokenizer: {config.getoption('--sft-tokenizer') or 'declared'}; "
            f"profile: sft-conformance-{config.getoption('--sft-profile') or default_profile()}"
            f"{'; strict' if config.getoption('--sft-strict') else ''}",
            f"sft-conformance versions: {versions}"]


class ConformanceFailure(Exception):
    """Raised by a check item; its message is the check's readable failure."""


class TargetCollector(pytest.Collector):
    """The checks of one ``--sft-target``: one :class:`CheckItem` per check."""

    def __init__(self, *, spec, pairs, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.pairs = spec, pairs

    def collect(self):
        for ctx, check in self.pairs:
            yield CheckItem.from_parent(self, name=f"{check.id}-{check.name}", ctx=ctx,
                                        check=check)


class CheckItem(pytest.Item):
    def __init__(self, *, ctx, check, **kwargs):
        super().__init__(**kwargs)
        self.ctx, self.check = ctx, check
        self.add_marker(pytest.mark.sft_check(check.id))

    def runtest(self):
        __tracebackhide__ = True
        with offline():
            _raise_for(self.ctx, self.check)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ConformanceFailure):
            return (f"{excinfo.value}\n\nRe-run this check alone:\n  pytest --sft-target "
                    f"{self.parent.spec} {_quote(self.nodeid)}")
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.ctx.decl.name}::{self.check.id} {self.check.name}"


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _raise_for(ctx, check):
    """Run one check and turn its result into pytest's outcomes."""
    __tracebackhide__ = True
    from .runner import run_check

    result = run_check(ctx, check)
    if result.status == "skipped":
        pytest.skip(f"{check.id}: {result.message}")
    if result.status == "xfail":
        pytest.xfail(result.message.splitlines()[0])
    if result.status in ("failed", "error"):
        raise ConformanceFailure(f"[{check.id} {check.name}] {check.doc}\n\n{result.message}")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if not isinstance(collector, pytest.Session):
        return report
    config = collector.config
    targets = config.getoption("--sft-target")
    if not targets or report.outcome != "passed":
        return report
    from .errors import ConfigurationError
    from .runner import iter_checks
    from .target import load_target

    selected = getattr(config, "_sft_selected", [])
    for spec in targets:
        try:
            with offline():
                pairs = list(iter_checks(
                    load_target(spec), spec=spec, tokenizer=config.getoption("--sft-tokenizer"),
                    profile=config.getoption("--sft-profile"),
                    only=config.getoption("--sft-check") or None,
                    strict=config.getoption("--sft-strict"),
                    max_length=config.getoption("--sft-max-length")))
        except ConfigurationError as exc:
            raise pytest.UsageError(f"--sft-target {spec}: {exc}") from None
        node = TargetCollector.from_parent(collector, name=f"{NODE_PREFIX}{spec}]", spec=spec,
                                           pairs=pairs)
        if selected:
            nodeid = node.nodeid.removeprefix("::")
            wanted = {s for s in selected if s == nodeid or s.startswith(nodeid + "::")}
            if not wanted:
                continue
            if nodeid not in wanted:
                names = {s.split("::", 1)[1] for s in wanted}
                node.pairs = [(c, k) for c, k in pairs if f"{k.id}-{k.name}" in names
                              or k.id in names]
        report.result.append(node)
    return report


class SnapshotFixture:
    """``sft_snapshot.assert_match(target, path)``: the target's masks on the corpus must equal
    the recorded snapshot; ``pytest --sft-update-snapshots`` records them instead.

    The snapshot is replayed: ``corpus``, ``tokenizer`` and ``max_length`` default to those
    it was recorded with (a relative corpus path is looked up from the current directory, the
    snapshot's folder and the rootdir); pass them to record a new snapshot with other ones
    (defaults: the bundled corpus, the target's tokenizer, 512). A change of masks, and a
    snapshot that cannot be compared, fail the test with the diff table or the reason."""

    def __init__(self, update: bool, rootpath=None):
        self.update = update
        self.rootpath = rootpath

    def _corpus(self, recorded: str, path):
        from pathlib import Path

        if recorded.startswith("bundled:"):
            return None
        for base in (Path.cwd(), path.parent, self.rootpath):
            if base is not None and (Path(base) / recorded).is_file():
                return Path(base) / recorded
        pytest.fail(f"sft_snapshot: {path} was recorded on the corpus {recorded}, which is not "
                    "found from the current directory, the snapshot's folder or the rootdir: "
                    "pass corpus=PATH", pytrace=False)

    def assert_match(self, target, path, *, corpus=None, tokenizer=None, max_length=None):
        __tracebackhide__ = True
        from pathlib import Path

        from . import snapshots
        from .errors import ConfigurationError

        path = Path(path)
        old, replayed = None, False
        if path.exists():
            try:
                old = snapshots.load(path)
            except ConfigurationError as exc:
                pytest.fail(f"sft_snapshot: {exc}", pytrace=False)
            if corpus is None:
                corpus, replayed = self._corpus(old["corpus"], path), True
            tokenizer = tokenizer or old["tokenizer"]["name"]
            max_length = max_length or old["max_length"]
        try:
            with offline():
                new = snapshots.take_snapshot(target, tokenizer=tokenizer, corpus=corpus,
                                              max_length=max_length or 512)
        except ConfigurationError as exc:
            pytest.fail(f"sft_snapshot: {exc}", pytrace=False)
        if replayed:
            new["corpus"] = old["corpus"]  # the recorded corpus, found from here
        if self.update or old is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            snapshots.save(new, path)
            if not self.update:
                pytest.fail(f"no snapshot at {path}: recorded one now; commit it and re-run",
                            pytrace=False)
            return
        try:
            result = snapshots.diff(old, new)
        except ConfigurationError as exc:
            pytest.fail(f"sft_snapshot: {path} cannot be compared with the target's masks: "
                        f"{exc}. Re-record it with --sft-update-snapshots if that is intended.",
                        pytrace=False)
        if not result.clean:
            from .assets import load_tokenizer

            tok = load_tokenizer(new["tokenizer"]["name"])
            pytest.fail(f"the masks changed against {path}:\n\n"
                        f"{snapshots.render_diff(result, tok)}\n\nIf the change is intended, "
                        "re-run with --sft-update-snapshots and commit the snapshot.",
                        pytrace=False)


@pytest.fixture
def sft_snapshot(request):
    """Snapshot gate for a collator's masks (see :class:`SnapshotFixture`)."""
    return SnapshotFixture(request.config.getoption("--sft-update-snapshots"),
                           request.config.rootpath)


def parametrize_checks(target, *, expected_failures: dict | None = None,
                       tokenizer: str | None = None, profile: str | None = None,
                       strict: bool = False, max_length: int | None = None):
    """A ``pytest.mark.parametrize`` over every check of ``target``; the test receives
    ``sft_check``, a callable that runs the check. ``expected_failures`` ({check id: reason})
    marks checks xfail with the reason, as data; ``strict=True`` fails an expected or declared
    known failure that passes (a stale declaration)."""
    from .errors import ConfigurationError
    from .runner import iter_checks
    from .target import load_target

    try:
        with offline():
            obj = load_target(target)
            pairs = list(iter_checks(obj, spec=target if isinstance(target, str) else "",
                                     tokenizer=tokenizer, profile=profile, strict=strict,
                                     max_length=max_length))
    except ConfigurationError as exc:
        raise pytest.UsageError(f"parametrize_checks({target!r}): {exc}") from None
    expected_failures = dict(expected_failures or {})
    unknown = set(expected_failures) - {check.id for _, check in pairs}
    if unknown:
        raise pytest.UsageError(f"parametrize_checks({target!r}): expected_failures names "
                                f"unknown check(s) {sorted(unknown)}")
    params = []
    for ctx, check in pairs:
        def run(ctx=ctx, check=check):
            __tracebackhide__ = True
            with offline():
                _raise_for(ctx, check)

        marks = ([pytest.mark.xfail(reason=expected_failures[check.id], strict=strict)]
                 if check.id in expected_failures else [])
        params.append(pytest.param(run, id=f"{ctx.decl.name}-{check.id}-{check.name}",
                                   marks=marks))
    return pytest.mark.parametrize("sft_check", params)
