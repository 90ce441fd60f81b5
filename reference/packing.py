"""Packing: best-fit-decreasing bin packing and packed rows that keep documents apart (S8).

A packed row concatenates whole documents. Per row: position ids restart at 0 for each
document, ``document_ids`` say which document a position belongs to, ``cu_seqlens`` give the
cumulative document boundaries of the flattened batch (the varlen-attention layout), and labels
never ask a document's last position to predict the next document's first token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .collate import labels_for
from .loss import IGNORE_INDEX
from .masks import Example


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of total at most ``capacity``.

    Items are placed longest first, each into the fullest bin that still has room for it (the
    bin whose remaining space is the smallest that fits), else into a new bin. A segment tree over
    remaining capacities finds that bin in O(log capacity), so 100k items take well under a second.
    Raises ``ValueError`` for an item longer than ``capacity`` (decide truncation first).
    """
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    size = 1
    while size < capacity + 1:
        size *= 2
    tree = [0] * (2 * size)  # count of open bins per remaining capacity, summed up the tree
    open_bins: list[list[int]] = [[] for _ in range(capacity + 1)]  # remaining -> bin ids
    bins: list[list[int]] = []

    def update(remaining: int, delta: int) -> None:
        node = remaining + size
        while node:
            tree[node] += delta
            node //= 2

    def first_at_least(need: int) -> int:
        """Smallest remaining capacity >= need that has an open bin, or -1."""
        stack = [(1, 0, size - 1)]
        while stack:  # depth-first, smaller capacities first
            node, lo, hi = stack.pop()
            if tree[node] == 0 or hi < need:
                continue
            if lo == hi:
                return lo
            mid = (lo + hi) // 2
            stack.append((2 * node + 1, mid + 1, hi))
            stack.append((2 * node, lo, mid))
        return -1

    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item {i} has length {n} > capacity {capacity}")
        remaining = first_at_least(n)
        if remaining < 0:
            b, left = len(bins), capacity - n
            bins.append([i])
        else:
            b, left = open_bins[remaining].pop(), remaining - n
            update(remaining, -1)
            bins[b].append(i)
        if left > 0:
            open_bins[left].append(b)
            update(left, +1)
    return bins


def pack_examples(examples: Sequence[Example], max_length: int, pad_token_id: int, *,
                  labels_shifted: bool = False, pad_to: int | None = None) -> dict:
    """Pack whole examples into rows of at most ``max_length`` tokens (best-fit-decreasing).

    Returns ``input_ids``, ``labels``, ``position_ids``, ``attention_mask`` (1 on real tokens),
    ``document_ids`` (-1 on padding) of shape (R, W), plus ``cu_seqlens`` (int32, documents of
    the flattened real tokens) and ``max_seqlen``. W is the longest row, or ``pad_to``.
    """
    too_long = [i for i, e in enumerate(examples) if len(e) > max_length]
    if too_long:
        raise ValueError(f"examples {too_long} are longer than max_length={max_length}; "
                         "truncate or drop them first")
    rows = best_fit_decreasing([len(e) for e in examples], max_length)
    rows = [sorted(r) for r in rows]  # keep the data order inside a row
    width = pad_to or max(sum(len(examples[i]) for i in r) for r in rows)
    R = len(rows)
    input_ids = torch.full((R, width), pad_token_id, dtype=torch.long)
    labels = torch.full((R, width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((R, width), dtype=torch.long)
    attention_mask = torch.zeros((R, width), dtype=torch.long)
    document_ids = torch.full((R, width), -1, dtype=torch.long)
    cu = [0]
    for r, members in enumerate(rows):
        t = 0
        for i in members:
            ex = examples[i]
            n = len(ex)
            lab = labels_for(ex, labels_shifted=labels_shifted)
            if not labels_shifted:
                lab[0] = IGNORE_INDEX  # logits[t-1] belong to the previous document
            input_ids[r, t:t + n] = torch.tensor(ex.input_ids)
            labels[r, t:t + n] = torch.tensor(lab)
            position_ids[r, t:t + n] = torch.arange(n)
            attention_mask[r, t:t + n] = 1
            document_ids[r, t:t + n] = i
            t += n
            cu.append(cu[-1] + n)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
            "attention_mask": attention_mask, "document_ids": document_ids,
            "cu_seqlens": torch.tensor(cu, dtype=torch.int32),
            "max_seqlen": max(len(e) for e in examples), "rows": rows}


def document_ids_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """Document index of every position of each row, a new document wherever positions restart."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] <= position_ids[:, :-1]
    return starts.long().cumsum(dim=1) - 1


def block_causal_mask(document_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive (B, 1, T, T) mask: position q sees k iff k <= q, same document, k not padding.

    Fully masked rows (padding queries) are allowed to see themselves so softmax stays finite.
    """
    B, T = document_ids.shape
    causal = torch.ones(T, T, dtype=torch.bool, device=document_ids.device).tril()
    same_doc = document_ids[:, :, None] == document_ids[:, None, :]
    allowed = causal[None] & same_doc
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, :].bool()
    allowed = allowed | torch.eye(T, dtype=torch.bool, device=document_ids.device)[None]
    mask = torch.zeros(B, 1, T, T, dtype=dtype, device=document_ids.device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)
