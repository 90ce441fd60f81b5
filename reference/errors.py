"""Errors for bad input: each one names the example and the field at fault."""

from __future__ import annotations


class SFTInputError(ValueError):
    """Bad user input, with the index of the example and the field at fault."""

    def __init__(self, message: str, *, example: int | None = None, field: str | None = None):
        self.example = example
        self.field = field
        where = []
        if example is not None:
            where.append(f"example {example}")
        if field is not None:
            where.append(field)
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConversationError(SFTInputError):
    """A conversation that is not a valid list of {role, content} messages."""


class TokenizerError(SFTInputError):
    """A tokenizer that cannot produce the masks (no chat template, not a fast tokenizer, ...)."""


class TemplateError(SFTInputError):
    """A chat template whose rendering cannot be split into turns (not prefix-stable)."""


class OverlongError(SFTInputError):
    """An example longer than ``max_length`` under the ``raise`` policy."""


class NoTrainedPositionError(SFTInputError):
    """An example or batch left with no trained position (S9)."""
