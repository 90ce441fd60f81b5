"""Hypothesis profiles of the suite: ``ci`` (derandomized, bounded), ``dev`` and ``thorough``.

Hypothesis loads its own ``ci`` profile whenever ``CI`` is set; we register ours under the same
name with an explicit parent, so ``CI=true`` runs our bounded, derandomized settings. Choose one
with ``--hypothesis-profile``/``--profile`` or ``SFT_CONFORMANCE_PROFILE``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

PROFILES = ("ci", "dev", "thorough")
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def register_profiles() -> None:
    base = settings.get_profile("default")
    settings.register_profile(
        "ci", parent=base, derandomize=True, database=None, deadline=None, max_examples=25,
        print_blob=True, suppress_health_check=_SLOW_OK,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
    )
    settings.register_profile("dev", parent=base, deadline=None, max_examples=50,
                              suppress_health_check=_SLOW_OK)
    settings.register_profile("thorough", parent=base, deadline=None, max_examples=500,
                              suppress_health_check=_SLOW_OK)


def default_profile() -> str:
    explicit = os.environ.get("SFT_CONFORMANCE_PROFILE")
    if explicit:
        return explicit
    return "ci" if os.environ.get("CI") else "dev"


def load(name: str | None = None) -> str:
    register_profiles()
    name = name or default_profile()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: expected one of {', '.join(PROFILES)}")
    settings.load_profile(name)
    return name
