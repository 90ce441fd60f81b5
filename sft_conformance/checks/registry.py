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


CHECKS: list[Check] = []


def register(check_id: str, *needs: str):
    def register(func):
        name = func.__name__.removeprefix("check_")
        doc = (func.__doc__ or "").strip().splitlines()[0]
        CHECKS.append(Check(check_id, name, func, ("collate", *needs), doc))
        return func

    return register


#: what each capability means, and the reason given when a target lacks it
NEEDS = {
    "collate": "collate(conversations, tokenizer, max_length)",
    "loss": "a loss(logits, labels, num_items_in_batch=None) method",
    "packs": "packing (declare packs = True)",
    "multi_turn": "multi-turn conversations (the target declares multi_turn = False)",
    "distributed": "a run with distributed=True (--distributed): it spawns 2 processes",
}


def missing_capability(ctx: Context, check: Check) -> str | None:
    d = ctx.decl
    have = {
        "collate": True,
        "loss": d.has_loss,
        "packs": d.packs,
        "multi_turn": getattr(ctx.target, "multi_turn", True),
        "distributed": ctx.distributed,
    }
    for need in check.needs:
        if not have.get(need, False):
            return f"needs {NEEDS[need]}"
    return None
