"""Validate before running anything: the setup mistakes of a first hour, each a one-line
:class:`~sft_conformance.errors.ConfigurationError` (exit code 2) naming the input and the fix.

One place, used by ``check`` and the pytest plugin (through :func:`runner.preflight`),
``snapshot``, ``report``, ``bench`` and ``eval``:

* :func:`require_modules`: the extras a command needs are installed (name the extra);
* :func:`load_tokenizer`: the tokenizer loads and has a chat template;
* :func:`collate_signature`: ``collate`` accepts ``(conversations, tokenizer, max_length)``;
* :func:`probe_batch`: one probe batch has the documented keys, types and dtypes, and calling
  the target does not raise a programming error (``TypeError``, ``AttributeError``...), which is
  never a refusal.
"""

from __future__ import annotations

import importlib.util
import inspect

from .errors import ConfigurationError
from .target import TargetError

#: a plain conversation every SFT collator accepts: a short one and a longer one, so that the
#: probe batch is padded (or packed)
PROBE = (
    [{"role": "user", "content": "What is two plus two?"},
     {"role": "assistant", "content": "Four."}],
    [{"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue, the colour of a clear sky at noon."}],
)

#: exceptions that say the target was called wrongly or is broken, never that it refused
PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, ImportError)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_modules(what: str, modules: dict[str, str], *, alternative: str = "") -> None:
    """ConfigurationError unless every ``{import name: extra}`` is installed, naming the extra
    to install (and ``alternative``, an option that avoids the need, when there is one)."""
    missing = [(m, extra) for m, extra in modules.items() if not installed(m)]
    if not missing:
        return
    names = ", ".join(m for m, _ in missing)
    extras = ",".join(dict.fromkeys(extra for _, extra in missing))
    raise ConfigurationError(f"{what} needs {names} (not installed): pip install "
                             f"'sft-conformance[{extras}]'"
                             + (f", or {alternative}" if alternative else ""))


def tokenizer_ready(tokenizer, label: str) -> None:
    """ConfigurationError unless the tokenizer can render conversations (a chat template) and
    map them to tokens (a fast tokenizer)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigurationError(
            f"tokenizer {label!r} has no chat template: save one with the tokenizer "
            "(tokenizer.chat_template = ...; save_pretrained) or pass a bundled template name "
            "(sft-conformance targets --tokenizers)")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigurationError(f"tokenizer {label!r} is a slow (Python) tokenizer: save it "
                                 "as a fast one (tokenizer.json), offsets map turns to tokens")


def load_tokenizer(name: str, *, pad_equals_eos: bool = False):
    """The tokenizer ``name`` (bundled name or local directory), ready for the checks."""
    from .assets import load_tokenizer as load

    try:
        tok = load(name, pad_equals_eos=pad_equals_eos)
    except ConfigurationError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigurationError(f"tokenizer {name!r} does not load: {type(exc).__name__}: "
                                 f"{first}") from None
    tokenizer_ready(tok, name)
    return tok


def collate_signature(target, name: str) -> None:
    """TargetError unless ``target.collate(conversations, tokenizer, max_length)`` binds."""
    collate = getattr(target, "collate", None)
    if not callable(collate):
        raise TargetError(f"target {name!r} has no collate(conversations, tokenizer, "
                          "max_length)")
    try:
        sig = inspect.signature(collate)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return
    try:
        sig.bind([], None, 512)
    except TypeError as exc:
        raise TargetError(f"target {name!r}: collate{sig} cannot be called as "
                          f"collate(conversations, tokenizer, max_length) ({exc}): give it "
                          "exactly these three parameters") from None


def probe_batch(target, name: str, tokenizer, *, max_length: int = 512,
                conversations=PROBE) -> dict | None:
    """Collate one plain probe batch and validate its keys, types and dtypes (TargetError when
    malformed). A programming error raised by the target is a TargetError too; any other
    exception is left to the checks (a target may refuse what it refuses) and returns None."""
    from .context import validate_batch

    try:
        out = target.collate([list(c) for c in conversations], tokenizer, max_length)
    except PROGRAMMING_ERRORS as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TargetError(f"target {name!r}: collate raised {type(exc).__name__}: {first} on a "
                          "plain two-conversation probe batch: a bug of the adapter, not a "
                          "refusal (run its collate by hand on the same input)") from None
    except Exception:
        return None
    try:
        return validate_batch(out, name)
    except TargetError as exc:
        raise TargetError(f"{exc} (a malformed batch: input_ids and labels must be (batch, "
                          "time) integer torch tensors)") from None


def target_ready(target, decl, tokenizer, *, max_length: int = 512) -> None:
    """Signature and probe batch of a loaded target whose libraries are installed."""
    collate_signature(target, decl.name)
    probe_batch(target, decl.name, tokenizer, max_length=max_length)
