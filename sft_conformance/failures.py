"""Failures a stranger can read: the example, the position, a token table around the first
difference, what the specification expected, and a snippet that reproduces it.

The helpers set ``__tracebackhide__`` so pytest shows the check's line, not ours.
"""

from __future__ import annotations

import pprint

from .tables import show_token, token_table


class CheckFailure(AssertionError):
    """A check found a departure from the specification."""

    def __init__(self, message: str, counterexample: dict | None = None):
        super().__init__(message)
        self.message = message
        self.counterexample = counterexample or {}


class CheckSkipped(Exception):
    """The check does not apply to this target (a missing capability); says why."""


def repro_snippet(ctx, conversations, *, pad_equals_eos: bool = False, max_length=None,
                  extra: str = "") -> str:
    tok_args = repr(ctx.tokenizer_name) + (", pad_equals_eos=True" if pad_equals_eos else "")
    convs = pprint.pformat(conversations, width=96, sort_dicts=False)
    return (
        "from sft_conformance import load_target\n"
        "from sft_conformance.assets import load_tokenizer\n"
        f"target = load_target({ctx.spec!r})\n"
        f"tokenizer = load_tokenizer({tok_args})\n"
        f"conversations = {convs}\n"
        f"batch = target.collate(conversations, tokenizer, {max_length or ctx.max_length})\n"
        + (extra or 'print(batch["input_ids"], batch["labels"], sep="\\n")')
    )


def fail_at_position(ctx, what: str, *, tokenizer, example: int, input_ids, got, expected,
                     position: int, spec: str, conversations, pad_equals_eos=False,
                     max_length=None, row: int | None = None, extra_repro: str = ""):
    """Raise a CheckFailure for a label (or id) that differs at ``position`` of ``example``."""
    __tracebackhide__ = True
    n = len(input_ids)

    def at(seq, k):
        return None if k >= len(seq) or seq[k] is None else int(seq[k])

    tok_text = show_token(tokenizer, input_ids[position]) if position < n else "-"
    table = token_table(tokenizer, input_ids, got, expected, start=position - 6,
                        stop=position + 7, mark=position)
    where = f"example {example}" + (f" (batch row {row})" if row is not None else "")
    label, want = at(got, position), at(expected, position)
    hint = special_string_hint(ctx, conversations, example)
    message = (
        f"{what}\n"
        f"  {where}, position {position}: token '{tok_text}' "
        f"(id {int(input_ids[position]) if position < n else '-'}) "
        + ("is absent from the target's input ids" if label is None else f"has label {label}")
        + f", expected {'-' if want is None else want}: {spec}\n"
        + (f"  {hint}\n" if hint else "")
        + f"\n{table}\n\n"
        f"Reproduce:\n{repro_snippet(ctx, conversations, pad_equals_eos=pad_equals_eos, max_length=max_length, extra=extra_repro)}"  # noqa: E501
    )
    raise CheckFailure(message, counterexample={
        "conversations": conversations, "example": example, "row": row, "position": position,
        "token": tok_text, "input_id": int(input_ids[position]) if position < n else None,
        "label": label, "expected_label": want,
        "pad_equals_eos": pad_equals_eos, "table": table, "hint": hint,
        "repro": repro_snippet(ctx, conversations, pad_equals_eos=pad_equals_eos,
                               max_length=max_length, extra=extra_repro),
    })


def special_string_hint(ctx, conversations, example) -> str:
    """"Likely cause: ..." when the failing conversation holds one of the tokenizer's own
    special strings (see :mod:`sft_conformance.special_strings`), else ''."""
    if not conversations or example is None or not 0 <= example < len(conversations):
        return ""
    try:
        from .special_strings import hint_for

        return hint_for(ctx, conversations[example])
    except Exception:  # a hint is a courtesy: never a crash of its own
        return ""


def fail(ctx, message: str, *, conversations=None, pad_equals_eos=False, max_length=None,
         table: str = "", extra_repro: str = "", **details):
    """Raise a CheckFailure with a free-form message and the reproducing snippet."""
    __tracebackhide__ = True
    repro = repro_snippet(ctx, conversations, pad_equals_eos=pad_equals_eos,
                          max_length=max_length, extra=extra_repro) if conversations else ""
    text = message + (f"\n\n{table}" if table else "") + (f"\n\nReproduce:\n{repro}" if repro
                                                          else "")
    raise CheckFailure(text, counterexample={"conversations": conversations, "table": table,
                                             "repro": repro, **details})
