"""Where ``report``, ``bench`` and ``eval`` write: ``--out``, by default a folder of the current
directory. Never the repository's committed ``reports/`` unless asked (``--out reports``): a run
on a fresh clone leaves the committed reports as they are."""

from __future__ import annotations

DEFAULT_DIR = "sft-conformance-reports"


def default_out(sub: str = "") -> str:
    """``sft-conformance-reports`` or ``sft-conformance-reports/SUB``."""
    return f"{DEFAULT_DIR}/{sub}" if sub else DEFAULT_DIR
