"""Token tables in the style of the seeds: token, input id, label, expected label, trained."""

from __future__ import annotations

from tabulate import tabulate

IGNORE_INDEX = -100


def show_token(tokenizer, token_id: int) -> str:
    text = tokenizer.decode([int(token_id)]) if tokenizer is not None else str(token_id)
    return repr(text)[1:-1] or "''"


def token_table(tokenizer, input_ids, labels, expected=None, *, start: int = 0,
                stop: int | None = None, mark: int | None = None, tablefmt: str = "github",
                attention_mask=None) -> str:
    """Rows ``start..stop`` of one example. ``expected`` adds the column the specification wants;
    ``mark`` flags one position with ``>>``."""
    input_ids = [int(x) for x in input_ids]
    labels = [None if x is None else int(x) for x in labels]
    # the three sequences may differ in length (a target whose ids are one token longer or
    # shorter than the template's): a position one of them lacks is shown as absent, never
    # indexed past its end
    stop = len(input_ids) if stop is None else min(stop, len(input_ids))
    headers = ["", "pos", "token", "input_id", "label"]
    if expected is not None:
        headers += ["expected", "ok"]
    headers.append("trained")
    if attention_mask is not None:
        headers.append("attn")
    rows = []
    for t in range(max(0, start), stop):
        label_t = labels[t] if t < len(labels) else None
        label = "absent" if label_t is None else label_t
        row = [">>" if t == mark else "", t, show_token(tokenizer, input_ids[t]), input_ids[t],
               label]
        if expected is not None:
            exp = None if t >= len(expected) or expected[t] is None else int(expected[t])
            row += ["-" if exp is None else exp, "" if exp == label_t else "✗"]
        row.append("yes" if label_t not in (None, IGNORE_INDEX) else "no")
        if attention_mask is not None:
            row.append(int(attention_mask[t]) if t < len(attention_mask) else "-")
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt=tablefmt)
