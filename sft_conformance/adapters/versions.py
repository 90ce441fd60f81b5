"""Versions of the libraries the adapters drive, for reports and pinned-behaviour tests."""

from __future__ import annotations

from importlib import metadata

#: distribution name -> key in the result
LIBRARIES = {
    "torch": "torch",
    "transformers": "transformers",
    "trl": "trl",
    "torchtune": "torchtune",
    "torchao": "torchao",
    "tokenizers": "tokenizers",
    "datasets": "datasets",
    "accelerate": "accelerate",
    "lm-eval": "lm-eval",
}


def library_versions() -> dict[str, str]:
    """``{name: version}`` of every library above that is installed; missing ones are left out.

    Read from the installed distributions' metadata, so nothing is imported.
    """
    out = {}
    for dist, key in LIBRARIES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
