"""Pinned verdicts of the issue-13 library adapters (LitGPT, verl, ms-swift, LLaMA-Factory...).

Each library's test file pins, per target, every check's verdict with the library version it was
generated with: ``"passed"``/``"skipped"`` alone, or ``(status, origin, first line of the
message)`` for a failure, an error or a declared known failure. ``origin`` is ``"check"`` (a
check found the batch wrong), ``"target"`` (the library raised) or ``"declared"`` (xfail: a known
failure the adapter declares). The pinned first line is matched as a prefix, ``*``
standing for a part that depends on the shrunk counterexample. The library runs only in its own
tox environment; elsewhere the tests skip (library not importable), and with another version of
the library they skip with the pinned and the installed versions instead of failing.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata

import pytest

from sft_conformance import check_target


def origin(result) -> str:
    if result.status == "xfail":
        return "declared"
    if result.status == "error":
        return "target"
    if result.status == "failed":
        return "check"
    return ""


def first_line(message: str) -> str:
    return (message or "").strip().splitlines()[0] if (message or "").strip() else ""


def require_version(dist: str, import_name: str, pinned: str) -> None:
    """Skip unless ``dist`` is importable at exactly the pinned version."""
    pytest.importorskip(import_name, reason=f"{dist} is not installed here (its rows run in "
                                            f"their own tox environment)")
    got = importlib.metadata.version(dist)
    if got != pinned:
        pytest.skip(f"verdicts are pinned for {dist} {pinned}; {got} is installed: re-run "
                    f"'sft-conformance report --library ...', confirm the changes by hand and "
                    f"re-pin")


def compare(target: str, pins: dict, *, tokenizer: str | None = None) -> None:
    run = check_target(target, profile="ci", only=list(pins), tokenizer=tokenizer)
    assert run.error is None, run.error
    got = {}
    for r in run.results:
        if r.status in ("passed", "skipped"):
            got[r.id] = r.status
        else:
            got[r.id] = (r.status, origin(r), first_line(r.message))
    changed = {}
    for check, want in pins.items():
        have = got.get(check)
        if isinstance(want, tuple) and isinstance(have, tuple):
            # the pinned first line is a prefix of the message's (a stable beginning); '*'
            # stands for a part that depends on the shrunk counterexample (an example index)
            # ('[' is literal: pinned messages quote lists such as 'roles_to_train: [a, b]')
            if want[:2] == have[:2] and fnmatch.fnmatchcase(
                    have[2], want[2].replace("[", "[[]") + "*"):
                continue
        elif want == have:
            continue
        changed[check] = f"{want!r} -> {have!r}"
    assert not changed, (
        f"{target}: verdicts changed: {changed}. If the library changed, re-run "
        "'sft-conformance report --library NAME', confirm by hand and update the pins.\n\n"
        + "\n\n".join(r.message for r in run.results if r.id in changed))
