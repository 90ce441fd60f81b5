"""Built-in targets, by name: ``sft-conformance targets`` lists them.

Each entry maps a name to ``module:attr``; modules are imported only when the target is used, so
listing targets never imports TRL or torchtune. Third-party library adapters register theirs in
:data:`sft_conformance.adapters.REGISTRY`.
"""

from __future__ import annotations

CORE = {
    "reference": "sft_conformance.targets.reference:ReferenceTarget",
    "reference-shifted": "sft_conformance.targets.reference:ReferenceShiftedTarget",
    "reference-packed": "sft_conformance.targets.reference:ReferencePackedTarget",
}


def builtin_targets() -> dict[str, str]:
    names = dict(CORE)
    for extra in ("sft_conformance.targets.textbook", "sft_conformance.targets.correct",
                  "sft_conformance.adapters",
                  "sft_conformance.mutants"):
        try:
            module = __import__(extra, fromlist=["REGISTRY"])
        except ModuleNotFoundError as exc:
            if exc.name == extra:
                continue
            raise
        names.update(getattr(module, "REGISTRY", {}))
    return names
