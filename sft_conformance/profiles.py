"""Hypothesis profiles of the suite, under our own names: ``sft-conformance-ci`` (derandomized,
bounded), ``sft-conformance-dev`` and ``sft-conformance-thorough``.

They are registered when a check first needs them and are always passed to our properties
explicitly (``settings(parent=profile(name))``); nothing here loads a profile globally, so a
user's own Hypothesis tests keep their settings (also Hypothesis' own ``ci`` profile, which it
loads whenever ``CI`` is set). Choose one with ``--profile``/``--sft-profile`` or
``SFT_CONFORMANCE_PROFILE``; the short names ``ci``, ``dev`` and ``thorough`` are accepted.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

from .errors import ConfigurationError

PROFILES = ("ci", "dev", "thorough")
PREFIX = "sft-conformance-"
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    # the parent is Hypothesis' built-in default, never the profile the user has loaded
    base = settings.get_profile("default")
    settings.register_profile(
        PREFIX + "ci", parent=base, derandomize=True, database=None, deadline=None,
        max_examples=25, print_blob=True, suppress_health_check=_SLOW_OK,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
    )
    settings.register_profile(PREFIX + "dev", parent=base, deadline=None, max_examples=50,
                              suppress_health_check=_SLOW_OK)
    settings.register_profile(PREFIX + "thorough", parent=base, deadline=None,
                              max_examples=500, suppress_health_check=_SLOW_OK)
    _registered = True


def default_profile() -> str:
    return os.environ.get("SFT_CONFORMANCE_PROFILE") or ("ci" if os.environ.get("CI") else "dev")


def resolve(name: str | None = None) -> str:
    """The short name (``ci``, ``dev``, ``thorough``) of the profile to use; ConfigurationError
    for an unknown one (from an option or from ``SFT_CONFORMANCE_PROFILE``)."""
    source = "profile" if name else "SFT_CONFORMANCE_PROFILE"
    name = (name or default_profile()).removeprefix(PREFIX)
    if name not in PROFILES:
        raise ConfigurationError(f"unknown {source} {name!r}: expected one of "
                                 f"{', '.join(PROFILES)}")
    return name


def profile(name: str) -> settings:
    """The Hypothesis settings object of one of our profiles (by short or full name)."""
    _register()
    return settings.get_profile(PREFIX + resolve(name))
