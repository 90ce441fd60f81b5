"""sft-conformance: is your SFT right, and how fast does it run?

Entry points over one check generator:

* :func:`check_target` returns structured results for a target;
* the pytest plugin (``pytest --sft-target TARGET``) and :func:`parametrize_checks`;
* the ``sft-conformance`` command line.
"""

from .target import Declared, TargetError, declared, load_target

__all__ = ["Declared", "TargetError", "check_target", "declared", "load_target",
           "parametrize_checks", "CHECKS"]
__version__ = "0.2.0"


def __getattr__(name):  # keep ``import sft_conformance`` light (no torch until needed)
    if name == "check_target":
        from .runner import check_target

        return check_target
    if name == "CHECKS":
        from .checks import CHECKS

        return CHECKS
    if name == "parametrize_checks":
        from .plugin import parametrize_checks

        return parametrize_checks
    raise AttributeError(name)
