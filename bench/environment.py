"""Versions, hardware and the git commit, recorded with every result."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "tokenizers", "datasets", "flash-attn",
            "pytest-benchmark", "sft-conformance")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of this checkout; ``SFT_CONFORMANCE_GIT_COMMIT`` names it where no git is (a
    copy of the tree on a GPU machine)."""
    if os.environ.get("SFT_CONFORMANCE_GIT_COMMIT"):
        return os.environ["SFT_CONFORMANCE_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parent, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _load() -> list[float] | None:
    """1, 5 and 15 minute load averages: a shared machine shows up here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "versions": {p: _version(p) for p in PACKAGES},
            "git_commit": git_commit(),
            "load_average": _load(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")}
