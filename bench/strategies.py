"""The five batching strategies, each turning the same examples into the batches of one epoch.

Every strategy sees the same examples and, as far as its layout allows, the same number of
optimizer steps (``ceil(N / batch_size)``; packing may need fewer), so the optimizer's cost per
real token is comparable:

* ``fixed``: ``batch_size`` examples per batch in data order, right-padded to ``max_length``.
* ``dynamic``: the same batches, padded to the longest row of each batch.
* ``bucketed``: examples sorted by length, cut into batches of ``batch_size``, batch order shuffled
  (``group_by_length``), each padded to its longest row.
* ``padding_free``: the same batches as ``dynamic``, each flattened into one row with positions
  restarting per example (``DataCollatorWithFlattening``); no pad token at all.
* ``packed``: best-fit-decreasing packing of the whole epoch into rows of at most ``max_length``,
  the rows shuffled and dealt ``ceil(rows / ceil(N / batch_size))`` to a batch, so at most as
  many steps as ``dynamic`` (fewer when the division is not exact).

A batch is a dict of tensors (``input_ids``, ``labels``, ``attention_mask``, ``position_ids``,
plus ``document_ids``/``cu_seqlens``/``max_seqlen`` for the flattened layouts) and a ``meta`` dict
with the counts the metrics need: real tokens (attention-mask ones), trained tokens (aligned labels
!= -100), slots (the tensor size B x T) and the lengths of the documents (for the FLOPs count).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from sft_conformance.reference.collate import labels_for, pad_examples
from sft_conformance.reference.loss import IGNORE_INDEX, count_trained
from sft_conformance.reference.masks import Example
from sft_conformance.reference.packing import best_fit_decreasing

STRATEGIES = ("fixed", "dynamic", "bucketed", "padding_free", "packed")
FLATTENED = ("padding_free", "packed")


def _meta(batch: dict, doc_lengths: list[int]) -> dict:
    return {"real_tokens": int(batch["attention_mask"].sum()),
            "trained_tokens": count_trained(batch["labels"]),
            "slots": int(batch["input_ids"].numel()),
            "rows": int(batch["input_ids"].shape[0]),
            "width": int(batch["input_ids"].shape[1]),
            "doc_lengths": doc_lengths}


def flatten_rows(rows: Sequence[Sequence[Example]], pad_token_id: int,
                 width: int | None = None) -> dict:
    """Rows of whole examples, concatenated per row, right-padded to the longest row (or width).

    Positions restart at 0 per example, a document's first label is ignored (its logits belong
    to the previous document), ``document_ids`` is -1 on padding, ``cu_seqlens`` are the
    boundaries of the flattened real tokens (the varlen-attention layout).
    """
    width = width or max(sum(len(e) for e in row) for row in rows)
    ids, labels, positions, docs, mask = [], [], [], [], []
    cu, doc = [0], 0
    for row in rows:  # plain lists, one tensor per field at the end (the fast path)
        used = 0
        for ex in row:
            n = len(ex)
            lab = labels_for(ex)
            lab[0] = IGNORE_INDEX
            ids += ex.input_ids
            labels += lab
            positions += range(n)
            docs += [doc] * n
            doc, used = doc + 1, used + n
            cu.append(cu[-1] + n)
        pad = width - used
        ids += [pad_token_id] * pad
        labels += [IGNORE_INDEX] * pad
        positions += [0] * pad
        docs += [-1] * pad
        mask += [1] * used + [0] * pad
    shape = (len(rows), width)
    input_ids = torch.tensor(ids, dtype=torch.long).view(shape)
    labels = torch.tensor(labels, dtype=torch.long).view(shape)
    position_ids = torch.tensor(positions, dtype=torch.long).view(shape)
    attention_mask = torch.tensor(mask, dtype=torch.long).view(shape)
    document_ids = torch.tensor(docs, dtype=torch.long).view(shape)
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
             "attention_mask": attention_mask, "document_ids": document_ids,
             "cu_seqlens": torch.tensor(cu, dtype=torch.int32),
             "max_seqlen": max(len(e) for row in rows for e in row)}
    batch["meta"] = _meta(batch, [len(e) for row in rows for e in row])
    return batch


def varlen_kwargs(batch: dict) -> dict:
    """The flash-attention varlen arguments of a flattened batch, in the kernel's layout.

    The kernel sees the (B, T) batch flattened to B x T tokens, so the boundaries cover every slot:
    each document is a sequence and each padding position a sequence of one token (what
    transformers infers from restarting position ids for a single row). ``cu_seqlens`` is int32,
    starts at 0 and ends at B x T; ``max_seqlen`` is the longest document, a Python int (one
    device sync per forward; transformers' own inference syncs in every layer). The batch's own
    ``cu_seqlens`` count real tokens only and equal these when there is no padding.
    transformers infers the boundaries itself only for one row (``_is_packed_sequence`` needs
    batch size 1); with several rows and no explicit arguments it runs the dense causal kernel
    over each row, and documents attend to each other.
    """
    doc_ids = batch["document_ids"]
    starts = torch.ones_like(doc_ids, dtype=torch.bool)  # column 0: every row starts a sequence
    starts[:, 1:] = (doc_ids[:, 1:] != doc_ids[:, :-1]) | (doc_ids[:, 1:] < 0)
    starts = starts.reshape(-1)
    cu = torch.cat([starts.nonzero().flatten(),
                    torch.tensor([starts.numel()], device=starts.device)]).to(torch.int32)
    longest = int(cu.diff().max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest,
            "max_length_k": longest}


def _padded(examples: Sequence[Example], pad_token_id: int, width: int | None = None) -> dict:
    batch = pad_examples(examples, pad_token_id)
    if width is not None and batch["input_ids"].shape[1] < width:
        extra = width - batch["input_ids"].shape[1]
        B = len(examples)
        batch["input_ids"] = torch.cat(
            [batch["input_ids"], torch.full((B, extra), pad_token_id, dtype=torch.long)], 1)
        batch["labels"] = torch.cat(
            [batch["labels"], torch.full((B, extra), IGNORE_INDEX, dtype=torch.long)], 1)
        batch["attention_mask"] = torch.cat(
            [batch["attention_mask"], torch.zeros((B, extra), dtype=torch.long)], 1)
        start = batch["position_ids"][:, -1:] + 1
        batch["position_ids"] = torch.cat(
            [batch["position_ids"], start + torch.arange(extra)[None]], 1)
    batch["meta"] = _meta(batch, [len(e) for e in examples])
    return batch


def make_batches(strategy: str, examples: Sequence[Example], *, pad_token_id: int,
                 max_length: int, batch_size: int, seed: int = 0) -> list[dict]:
    """The batches of one epoch over ``examples`` under ``strategy``."""
    n = len(examples)
    chunks = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    if strategy == "fixed":
        return [_padded([examples[i] for i in c], pad_token_id, width=max_length) for c in chunks]
    if strategy == "dynamic":
        return [_padded([examples[i] for i in c], pad_token_id) for c in chunks]
    if strategy == "bucketed":
        order = sorted(range(n), key=lambda i: (len(examples[i]), i))
        buckets = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        random.Random(seed).shuffle(buckets)
        return [_padded([examples[i] for i in b], pad_token_id) for b in buckets]
    if strategy == "padding_free":
        return [flatten_rows([[examples[i] for i in c]], pad_token_id) for c in chunks]
    if strategy == "packed":
        bins = best_fit_decreasing([len(e) for e in examples], max_length)
        rows = [[examples[i] for i in sorted(b)] for b in bins]
        random.Random(seed).shuffle(rows)  # a trainer's sampler shuffles packed rows
        per_batch = max(1, math.ceil(len(rows) / len(chunks)))
        return [flatten_rows(rows[i:i + per_batch], pad_token_id)
                for i in range(0, len(rows), per_batch)]
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")


def epoch_counts(batches: Sequence[dict]) -> dict:
    """Totals over an epoch: real and trained tokens, slots, padding fraction, steps."""
    real = sum(b["meta"]["real_tokens"] for b in batches)
    slots = sum(b["meta"]["slots"] for b in batches)
    return {"steps": len(batches), "real_tokens": real,
            "trained_tokens": sum(b["meta"]["trained_tokens"] for b in batches),
            "slots": slots, "padding_fraction": 1 - real / slots, "fill_rate": real / slots,
            "documents": sum(len(b["meta"]["doc_lengths"]) for b in batches)}
