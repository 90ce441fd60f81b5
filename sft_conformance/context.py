"""What a check runs with: the target, its declarations, tokenizers, the tiny model, and the
validated calls into the target (collate, loss, forward)."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .target import Declared, TargetError

REQUIRED_KEYS = ("input_ids", "labels")


#: how many of the innermost frames of a target's exception are kept (see TargetRaised)
KEPT_FRAMES = 4


class TargetRaised(Exception):
    """The target raised inside one of its own methods; carries the call and the exception.

    The exception keeps the innermost :data:`KEPT_FRAMES` frames of its traceback (where it
    was raised), not the whole way down from the check: a refusal is reported by its type and
    message, and Hypothesis tells one failure from another by the innermost frame, but it walks
    every failing draw's traceback chain several times over, and a library's chain through a
    trainer's constructor and a datasets map costs milliseconds per walk (seconds per check
    that shrinks a refusal)."""

    def __init__(self, where: str, exc: BaseException):
        self.where = where
        self.original = exc
        _keep_innermost(exc, KEPT_FRAMES)
        tb = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        super().__init__(f"the target raised inside {where}: {tb}")


def _keep_innermost(exc: BaseException, frames: int) -> None:
    """Cut ``exc``'s traceback to its innermost ``frames`` entries."""
    chain = []
    tb = exc.__traceback__
    while tb is not None:
        chain.append(tb)
        tb = tb.tb_next
    if len(chain) > frames:
        exc.__traceback__ = chain[-frames]


@dataclass
class Context:
    """Shared state of one target's run of the checks."""

    target: object
    decl: Declared
    tokenizer_name: str
    spec: str = ""  # how the user named the target (for the reproduction snippet)
    profile: str = "ci"
    max_length: int = 512
    max_length_given: bool = False  # the user chose max_length (else checks may adapt it)
    seed: int = 0
    shrink: bool = True
    distributed: bool = False
    strict: bool = False
    judged: int = 0  # draws the current check judged (see checks.engine.require)
    failed: bool = False  # the current check has failed on a draw
    rejections: dict = field(default_factory=dict)  # why the others were not judged
    notes: list = field(default_factory=list)  # what the report says beside the verdict
    last_inputs: dict = field(default_factory=dict)
    check_id: str = ""  # the check running now (a refusal is its finding)
    memo: dict = field(default_factory=dict)  # what the checks computed once per run
    drawing: bool = False  # a drawn (not pinned) input is being judged (batch judging)
    serve_closed: bool = False  # the check saw a malformed batch: nothing more is served
    _tokenizers: dict = field(default_factory=dict)
    _model: object = None

    # -- assets ---------------------------------------------------------------------------------
    def tokenizer(self, pad_equals_eos: bool = False):
        key = bool(pad_equals_eos)
        if key not in self._tokenizers:
            from .assets import load_tokenizer

            self._tokenizers[key] = load_tokenizer(self.tokenizer_name,
                                                   pad_equals_eos=pad_equals_eos)
        return self._tokenizers[key]

    def model(self):
        if self._model is None:
            from .assets import CHECK_MODEL_VOCAB, tiny_model

            self._model = tiny_model(self.tokenizer(), seed=self.seed,
                                     max_vocab=CHECK_MODEL_VOCAB)
        return self._model

    # -- calls into the target, validated ---------------------------------------------------
    def collate(self, conversations, tokenizer, max_length: int | None = None) -> dict:
        max_length = max_length or self.max_length
        self.last_inputs = {"conversations": conversations, "max_length": max_length,
                            "pad_equals_eos": tokenizer.pad_token_id == tokenizer.eos_token_id,
                            "tokenizer": tokenizer}
        try:
            batch = self.target.collate(conversations, tokenizer, max_length)
        except TypeError as exc:
            if _raised_by_the_call(exc):  # collate's signature does not take these arguments
                raise TargetError(
                    f"target {self.decl.name!r}: collate cannot be called as collate("
                    f"conversations, tokenizer, max_length): {exc}. Give it that signature "
                    "(docs/specification.md#the-target-protocol)") from exc
            raise TargetRaised("collate(conversations, tokenizer, max_length)", exc) from exc
        except Exception as exc:
            raise TargetRaised("collate(conversations, tokenizer, max_length)", exc) from exc
        return validate_batch(batch, self.decl.name)

    def loss(self, logits, labels, num_items_in_batch=None):
        try:
            if num_items_in_batch is None:
                return self.target.loss(logits, labels)
            return self.target.loss(logits, labels, num_items_in_batch=num_items_in_batch)
        except Exception as exc:
            raise TargetRaised("loss(logits, labels, num_items_in_batch)", exc) from exc

    def forward(self, batch) -> torch.Tensor:
        """Logits the way the target calls the model, else the way a hand-written loop would."""
        model = self.model()
        if self.decl.has_forward:
            try:
                return self.target.forward(model, batch)
            except Exception as exc:
                raise TargetRaised("forward(model, batch)", exc) from exc
        kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")
                  if k in batch}
        return model(**kwargs).logits


def _raised_by_the_call(exc: TypeError) -> bool:
    """Whether a TypeError comes from binding the call's arguments (no frame of the target's
    own code ran), not from inside the target: a wrong signature, never a refusal."""
    tb = exc.__traceback__
    return tb is not None and tb.tb_next is None


def validate_batch(batch, name: str) -> dict:
    """Check keys, shapes and dtypes of what ``collate`` returned; TargetError says what is off."""
    if not isinstance(batch, Mapping):
        raise TargetError(f"target {name!r}: collate returned {type(batch).__name__}, expected a "
                          "mapping with input_ids and labels")
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    if missing:
        raise TargetError(f"target {name!r}: collate result lacks {missing} (has "
                          f"{sorted(batch)})")
    out = dict(batch)
    ids = out["input_ids"]
    if isinstance(ids, torch.Tensor) and ids.dim() == 2 and 0 in ids.shape:
        raise TargetError(f"target {name!r}: collate()['input_ids'] has shape "
                          f"{tuple(ids.shape)}: a batch with no token (return the examples, or "
                          "raise when there is nothing to train)")
    for key in ("input_ids", "labels", "attention_mask", "position_ids"):
        if key not in out or out[key] is None:
            out.pop(key, None)
            continue
        value = out[key]
        if not isinstance(value, torch.Tensor):
            raise TargetError(f"target {name!r}: collate()[{key!r}] is {type(value).__name__}, "
                              "expected a torch.Tensor")
        if value.dim() != 2:
            raise TargetError(f"target {name!r}: collate()[{key!r}] has shape "
                              f"{tuple(value.shape)}, expected (batch, time)")
        if value.dtype not in (torch.long, torch.int32, torch.int64, torch.bool, torch.int16,
                               torch.int8, torch.uint8):
            raise TargetError(f"target {name!r}: collate()[{key!r}] has dtype {value.dtype}, "
                              "expected an integer tensor")
        if value.device.type == "meta":
            raise TargetError(f"target {name!r}: collate()[{key!r}] is on the meta device: it "
                              "holds no values")
        if value.shape != ids.shape:
            raise TargetError(f"target {name!r}: collate()[{key!r}] has shape "
                              f"{tuple(value.shape)} but input_ids has {tuple(ids.shape)}")
        out[key] = value.long().cpu()  # the checks read values on the CPU
    return out
