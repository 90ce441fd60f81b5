"""The registry of checks: each a named top-level function with the id of the requirement it
holds and the capabilities it needs; which checks apply is decided by those, never by names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..context import Context

# -- the registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    func: Callable
    needs: tuple[str, ...]
    doc: str
    judges_itself: bool = False  # counts nothing it judged: the floor does not apply (none now)

    @property
    def spec_link(self) -> str:
        return f"docs/specification.md#{self.id.lower()}"


CHECKS: list[Check] = []


def register(check_id: str, *needs: str, judges_itself: bool = False):
    """Register a check under the id of the requirement it holds (its docstring's first
    paragraph is its one-line description)."""

    def decorate(func):
        name = func.__name__.removeprefix("check_")
        doc = " ".join((func.__doc__ or "").strip().split("\n\n")[0].split())
        CHECKS.append(Check(check_id, name, func, ("collate", *needs), doc, judges_itself))
        return func

    return decorate


#: what each capability means, and the reason given when a target lacks it
NEEDS = {
    "collate": "collate(conversations, tokenizer, max_length)",
    "loss": "a loss(logits, labels, num_items_in_batch=None) method",
    "packs": "packing (declare packs = True)",
    "multi_turn": "multi-turn conversations (the target declares multi_turn = False)",
    "distributed": "a run with distributed=True (--distributed): it spawns 2 processes",
    "tools": "tool conversations (declare tools = True: collate accepts tool messages, "
             "tool_calls and a conversation's tools)",
    "reasoning": "a reasoning rule (declare reasoning = 'template', 'all_turns' or "
                 "'last_turn')",
}


def missing_capability(ctx: Context, check: Check) -> str | None:
    d = ctx.decl
    have = {
        "collate": True,
        "loss": d.has_loss,
        "packs": d.packs,
        "multi_turn": getattr(ctx.target, "multi_turn", True),
        "distributed": ctx.distributed,
        "tools": bool(getattr(ctx.target, "tools", False)),
        "reasoning": getattr(ctx.target, "reasoning", None) is not None,
    }
    for need in check.needs:
        if not have.get(need, False):
            return f"needs {NEEDS[need]}"
    return None
