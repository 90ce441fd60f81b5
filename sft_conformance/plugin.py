"""pytest plugin, registered through the ``pytest11`` entry point.

* ``pytest --sft-target TARGET [--sft-target ...] [--sft-tokenizer NAME] [--sft-profile ci]``
  adds one test item per check and target to the session (no test file needed).
* :func:`parametrize_checks` is the parametrizer for a user's own test file::

      from sft_conformance import parametrize_checks

      @parametrize_checks("my_pkg.sft:MyTarget", expected_failures={"S9": "we raise on long"})
      def test_sft_conformance(sft_check):
          sft_check()
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("sft-conformance", "SFT conformance checks (S1-S12)")
    group.addoption("--sft-target", action="append", default=[], metavar="TARGET",
                    help="run the conformance checks on TARGET: a built-in name or module:attr "
                         "(class, instance or zero-argument factory); repeatable")
    group.addoption("--sft-tokenizer", default=None, metavar="NAME|PATH",
                    help="bundled template name or local tokenizer directory (default: the "
                         "target's declared tokenizer)")
    group.addoption("--sft-profile", default=None, choices=("ci", "dev", "thorough"),
                    help="hypothesis profile of the checks (default: ci when CI is set, else dev)")
    group.addoption("--sft-check", action="append", default=[], metavar="ID",
                    help="run only these checks (S1..S12 or a check name); repeatable")
    group.addoption("--sft-update-snapshots", action="store_true", default=False,
                    help="rewrite the mask snapshots compared by the sft_snapshot fixture")


def pytest_configure(config):
    from . import profiles

    profiles.register_profiles()
    config.addinivalue_line("markers", "sft_check(id): a conformance check of sft-conformance")


def pytest_report_header(config):
    targets = config.getoption("--sft-target")
    if not targets:
        return None
    from . import profiles
    from .runner import library_versions

    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    return [f"sft-conformance targets: {', '.join(targets)}",
            f"sft-conformance tokenizer: {config.getoption('--sft-tokenizer') or 'declared'}; "
            f"profile: {config.getoption('--sft-profile') or profiles.default_profile()}",
            f"sft-conformance versions: {versions}"]


class ConformanceFailure(Exception):
    """Raised by a check item; its message is the check's readable failure."""


class CheckItem(pytest.Item):
    def __init__(self, *, ctx, check, **kwargs):
        super().__init__(**kwargs)
        self.ctx, self.check = ctx, check
        self.add_marker(pytest.mark.sft_check(check.id))

    def runtest(self):
        __tracebackhide__ = True
        _raise_for(self.ctx, self.check)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.ctx.decl.name}::{self.check.id} {self.check.name}"


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


def pytest_collection_modifyitems(session, config, items):
    targets = config.getoption("--sft-target")
    if not targets:
        return
    from .runner import iter_checks
    from .target import TargetError, load_target

    only = config.getoption("--sft-check") or None
    for spec in targets:
        try:
            obj = load_target(spec)
            pairs = list(iter_checks(obj, spec=spec, tokenizer=config.getoption("--sft-tokenizer"),
                                     profile=config.getoption("--sft-profile"), only=only))
        except TargetError as exc:
            raise pytest.UsageError(f"--sft-target {spec}: {exc}") from exc
        for ctx, check in pairs:
            items.append(CheckItem.from_parent(session, name=f"sft[{spec}::{check.id}]",
                                               ctx=ctx, check=check))


class SnapshotFixture:
    """``sft_snapshot.assert_match(target, path)``: the target's masks on the corpus must equal
    the recorded snapshot; ``pytest --sft-update-snapshots`` records them instead."""

    def __init__(self, update: bool):
        self.update = update

    def assert_match(self, target, path, *, corpus=None, tokenizer=None, max_length=512):
        __tracebackhide__ = True
        from pathlib import Path

        from . import snapshots

        path = Path(path)
        new = snapshots.take_snapshot(target, tokenizer=tokenizer, corpus=corpus,
                                      max_length=max_length)
        if self.update or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            snapshots.save(new, path)
            if not self.update:
                pytest.fail(f"no snapshot at {path}: recorded one now; commit it and re-run",
                            pytrace=False)
            return
        result = snapshots.diff(snapshots.load(path), new)
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
    return SnapshotFixture(request.config.getoption("--sft-update-snapshots"))


def parametrize_checks(target, *, expected_failures: dict | None = None,
                       tokenizer: str | None = None, profile: str | None = None):
    """A ``pytest.mark.parametrize`` over every check of ``target``; the test receives
    ``sft_check``, a callable that runs the check. ``expected_failures`` ({check id: reason})
    marks checks xfail with the reason, as data."""
    from .runner import iter_checks
    from .target import load_target

    obj = load_target(target)
    expected_failures = dict(expected_failures or {})
    params = []
    for ctx, check in iter_checks(obj, spec=target if isinstance(target, str) else "",
                                  tokenizer=tokenizer, profile=profile):
        def run(ctx=ctx, check=check):
            __tracebackhide__ = True
            _raise_for(ctx, check)

        marks = ([pytest.mark.xfail(reason=expected_failures[check.id], strict=False)]
                 if check.id in expected_failures else [])
        params.append(pytest.param(run, id=f"{ctx.decl.name}-{check.id}-{check.name}",
                                   marks=marks))
    return pytest.mark.parametrize("sft_check", params)
