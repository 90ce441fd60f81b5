"""The target protocol: what an implementation under test provides.

The specification of it: docs/specification.md#the-target-protocol.

A target is any object with these attributes::

    class MyTarget:
        name = "my-trainer"
        labels_shifted = False  # False: HF convention; True: labels[t] is the target of logits[t]

        def collate(self, conversations, tokenizer, max_length):
            '''Return a mapping with input_ids and labels (B, T) LongTensors, and optionally
            attention_mask and position_ids. A row whose position_ids restart at 0 holds
            several packed documents.'''

        # optional capabilities; a check that needs a missing one is skipped, with the reason
        def loss(self, logits, labels, num_items_in_batch=None): ...
        def forward(self, model, batch): ...   # how the target calls the model; returns logits

Optional declarations (all have defaults, see :class:`Declared`):

* ``turn_policy``: ``"all"`` (every assistant turn trained) or ``"last"``.
* ``overlong``: what happens to an example longer than ``max_length``: ``"raise"``, ``"drop"``,
  ``"truncate_prompt"``, ``"truncate_response"`` (keeps the end token) or ``"truncate"`` (cuts
  the end, end token included: declared, and held against S9).
* ``packs``: the target packs several conversations into one row.
* ``splits_documents``: a packing target that may split a document across rows.
* ``trains_after_eot``: the target may also train the template glue right after the end token
  (the newline of ChatML); declared policy, not a failure, and not required.
* ``tokenization``: ``"whole"`` (default: the ids of the whole rendered conversation) or
  ``"per_turn"`` (each assistant turn's prompt and response tokenized apart); S1 holds the
  declared one.
* packing needs no declaration: rows whose examples sit side by side are packed documents.
* ``known_failures``: ``{check_id: reason}``, known non-conformance shown in every report.
* ``requires``: import names the target needs; missing ones make every check ``skipped`` with
  ``install_hint``.
* ``options``: ``{name: zero-argument factory of a variant target}`` for S12 (an option that
  should not change the math, such as padding-free or a fused loss).
* ``tokenizer``: a bundled template name the target is meant for (default ``"chatml"``).
* ``pad_equals_eos``: ``None`` (default) runs S4/S5 with pad == eos and with pad != eos;
  ``True``/``False`` pins the configuration the target is built for.
* ``multi_turn`` / ``system_prompt``: ``False`` for a target that only takes single-turn records
  (or no system message); checks then draw such conversations, and S10 is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigurationError

TURN_POLICIES = ("all", "last")
OVERLONG = ("raise", "drop", "truncate_prompt", "truncate_response", "truncate")
TOKENIZATIONS = ("whole", "per_turn")


class TargetError(ConfigurationError):
    """A target that cannot be loaded or does not follow the protocol (exit code 2)."""


@dataclass
class Declared:
    """What a target declares about itself, with the defaults of the specification."""

    name: str
    labels_shifted: bool = False
    turn_policy: str = "all"
    overlong: str = "truncate_response"
    packs: bool = False
    splits_documents: bool = False
    trains_after_eot: bool = False
    tokenization: str = "whole"
    known_failures: dict = field(default_factory=dict)
    requires: tuple = ()
    install_hint: str = ""
    options: dict = field(default_factory=dict)
    tokenizer: str = "chatml"
    pad_equals_eos: bool | None = None
    multi_turn: bool = True
    system_prompt: bool = True
    has_loss: bool = False
    has_forward: bool = False
    description: str = ""
    tools: bool = False  # collate accepts tool conversations (S13-S15)
    reasoning: str | None = None  # "template", "all_turns" or "last_turn" (S15)

    @property
    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


def declared(target) -> Declared:
    """Read a target's declarations, validating their values (TargetError on nonsense)."""
    name = getattr(target, "name", None) or type(target).__name__
    if not callable(getattr(target, "collate", None)):
        raise TargetError(f"target {name!r} has no collate(conversations, tokenizer, max_length)")
    d = Declared(
        name=str(name),
        labels_shifted=bool(getattr(target, "labels_shifted", False)),
        turn_policy=getattr(target, "turn_policy", "all"),
        overlong=getattr(target, "overlong", "truncate_response"),
        packs=bool(getattr(target, "packs", False)),
        splits_documents=bool(getattr(target, "splits_documents", False)),
        trains_after_eot=bool(getattr(target, "trains_after_eot", False)),
        tokenization=getattr(target, "tokenization", "whole"),
        tools=bool(getattr(target, "tools", False)),
        reasoning=getattr(target, "reasoning", None),
        known_failures=dict(getattr(target, "known_failures", {}) or {}),
        requires=tuple(getattr(target, "requires", ()) or ()),
        install_hint=str(getattr(target, "install_hint", "") or ""),
        options=dict(getattr(target, "options", {}) or {}),
        tokenizer=str(getattr(target, "tokenizer", "chatml") or "chatml"),
        pad_equals_eos=getattr(target, "pad_equals_eos", None),
        multi_turn=bool(getattr(target, "multi_turn", True)),
        system_prompt=bool(getattr(target, "system_prompt", True)),
        has_loss=callable(getattr(target, "loss", None)),
        has_forward=callable(getattr(target, "forward", None)),
        description=inspect.getdoc(type(target)) or "",
    )
    if d.turn_policy not in TURN_POLICIES:
        raise TargetError(f"target {d.name!r}: turn_policy must be one of {TURN_POLICIES}, "
                          f"got {d.turn_policy!r}")
    if d.tokenization not in TOKENIZATIONS:
        raise TargetError(f"target {d.name!r}: tokenization must be one of {TOKENIZATIONS}, "
                          f"got {d.tokenization!r}")
    if d.reasoning not in (None, "template", "all_turns", "last_turn"):
        raise TargetError(f"target {d.name!r}: reasoning must be 'template', 'all_turns' or "
                          f"'last_turn', got {d.reasoning!r}")
    if d.overlong not in OVERLONG:
        raise TargetError(f"target {d.name!r}: overlong must be one of {OVERLONG}, "
                          f"got {d.overlong!r}")
    return d


def _instantiate(obj, spec: str):
    if inspect.isclass(obj):
        return obj()
    if callable(obj) and not callable(getattr(obj, "collate", None)):
        return obj()  # zero-argument factory
    return obj


def load_target(spec):
    """A target object from a built-in name, ``module:attr`` (class, instance or zero-argument
    factory), ``path/to/file.py:attr``, or an object that already is a target."""
    if not isinstance(spec, str):
        return _instantiate(spec, repr(spec))
    from .targets import builtin_targets

    builtins = builtin_targets()
    if spec in builtins:
        spec = builtins[spec]
    if ":" not in spec:
        raise TargetError(f"unknown target {spec!r}: not a built-in name (see "
                          "'sft-conformance targets') and not module:attr")
    module_name, attr = spec.rsplit(":", 1)
    try:
        if module_name.endswith(".py"):
            module = _import_file(module_name)
        else:
            _cwd_first()
            module = importlib.import_module(module_name)
    except Exception as exc:  # import errors, syntax errors, errors at import time
        raise TargetError(f"target {spec!r} does not import: {type(exc).__name__}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise TargetError(f"target {spec!r}: module {module_name!r} has no attribute "
                          f"{attr!r}") from None
    try:
        return _instantiate(obj, spec)
    except Exception as exc:
        raise TargetError(f"target {spec!r} could not be constructed: {type(exc).__name__}: "
                          f"{exc}") from exc


def _cwd_first() -> None:
    """Resolve ``module:attr`` from the current directory first, as ``python -m`` does."""
    cwd = os.getcwd()
    if not sys.path or os.path.abspath(sys.path[0] or ".") != cwd:
        if cwd in sys.path:
            sys.path.remove(cwd)
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()


def _import_file(path: str):
    """Import ``path/to/file.py`` as a module registered in ``sys.modules`` before it runs (so
    dataclasses, pickling and ``from __future__ import annotations`` work in it). The file's
    directory is importable while it runs and after, as ``python path/to/file.py`` has it: the
    adapter imports its sibling modules."""
    file = Path(path).resolve()
    if not file.is_file():
        raise ImportError(f"no such file: {path}")
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
        importlib.invalidate_caches()
    name = "_sft_target_" + re.sub(r"\W", "_", file.stem) + f"_{abs(hash(str(file))):x}"
    if name in sys.modules:
        return sys.modules[name]
    loc = importlib.util.spec_from_file_location(name, file)
    if loc is None or loc.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(loc)
    sys.modules[name] = module
    try:
        loc.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
