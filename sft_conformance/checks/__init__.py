"""The conformance checks, one named top-level function per requirement S1-S15 of
docs/specification.md (each check's docstring cites its section, e.g. ``#s4``).

Each check takes a :class:`~sft_conformance.context.Context` and returns quietly when the target
conforms, raises :class:`~sft_conformance.failures.CheckFailure` with a readable counterexample
when it does not, or :class:`~sft_conformance.failures.CheckSkipped` when a capability it needs
is missing. Hypothesis draws the inputs and shrinks a failure to a minimal conversation; the
regressions each check exists for are pinned as explicit examples.

The package: :mod:`.registry` (which checks exist, what they need), :mod:`.engine` (drawing and
running properties), :mod:`.labels` (label alignment), and one module per family:
:mod:`.template` (S1, S11), :mod:`.masks` (S2-S4, S10), :mod:`.padding` (S5), :mod:`.loss` (S6,
S7, S7dp), :mod:`.packing` (S8), :mod:`.truncation` (S9), :mod:`.options` (S12),
:mod:`.agentic` (S13-S15: tool results, tool-call turns, reasoning).
"""

from __future__ import annotations

from . import (  # noqa: F401 (register)
    agentic,
    loss,
    masks,
    options,
    packing,
    padding,
    template,
    truncation,
)
from .registry import CHECKS, NEEDS, Check, missing_capability

CHECKS.sort(key=lambda c: (int(c.id[1:].removesuffix("dp")), c.id.endswith("dp")))
CHECK_IDS = [c.id for c in CHECKS]
BY_ID = {c.id: c for c in CHECKS}

__all__ = ["BY_ID", "CHECKS", "CHECK_IDS", "NEEDS", "Check", "missing_capability"]
