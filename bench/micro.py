"""Pieces shared by the micro-benchmarks (``bench/test_micro.py``) and the report.

* :func:`packer_comparison`: our best-fit-decreasing packer against TRL's
  ``pack_dataset(..., strategy="bfd")`` on the same lengths (time and fill rate).
* :func:`chunked_loss`: a loss that never materialises the full logits (per-chunk projection
  with activation checkpointing), the memory-lean alternative to ``F.cross_entropy``.
* :func:`token_dicts`: examples as the ``{"input_ids", "labels"}`` dicts library collators take.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sft_conformance.reference.collate import labels_for
from sft_conformance.reference.loss import IGNORE_INDEX
from sft_conformance.reference.packing import best_fit_decreasing


def token_dicts(examples) -> list[dict]:
    return [{"input_ids": list(e.input_ids), "labels": labels_for(e)} for e in examples]


def trl_length_dataset(lengths: Sequence[int]):
    """A ``datasets.Dataset`` with one ``input_ids`` list per length (zeros), built in Arrow."""
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset

    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = pa.array(np.zeros(int(offsets[-1]), dtype=np.int32))
    column = pa.ListArray.from_arrays(pa.array(offsets), values)
    return Dataset(pa.Table.from_arrays([column], names=["input_ids"]))


def trl_pack(dataset, capacity: int, *, one_batch: bool):
    from datasets.utils.logging import disable_progress_bar
    from trl.data_utils import pack_dataset

    disable_progress_bar()
    kwargs = {"batch_size": None} if one_batch else None  # None: TRL's default map (1,000 rows)
    return pack_dataset(dataset, capacity, strategy="bfd", map_kwargs=kwargs)


def packer_comparison(lengths: Sequence[int], capacity: int = 2048) -> dict:
    """Time and fill rate of our packer and TRL's on the same lengths (clipped to capacity)."""
    lengths = [min(int(n), capacity) for n in lengths]
    total = sum(lengths)
    out = {"items": len(lengths), "capacity": capacity, "tokens": total,
           "lower_bound_rows": -(-total // capacity)}
    t = time.perf_counter()
    bins = best_fit_decreasing(lengths, capacity)
    out["ours"] = {"seconds": time.perf_counter() - t, "rows": len(bins),
                   "fill_rate": total / (len(bins) * capacity)}
    try:
        dataset = trl_length_dataset(lengths)
    except Exception as exc:
        out["trl"] = {"skipped": f"cannot build a datasets.Dataset: {exc}"}
        return out
    for key, one_batch in (("trl", False), ("trl_one_batch", True)):
        try:
            t = time.perf_counter()
            packed = trl_pack(dataset, capacity, one_batch=one_batch)
            seconds = time.perf_counter() - t
            rows = len(packed)
            out[key] = {"seconds": seconds, "rows": rows, "fill_rate": total / (rows * capacity),
                        "map_batch": "whole dataset" if one_batch else "1,000 (TRL default)"}
        except Exception as exc:  # TRL missing or its API changed: record, do not fail
            out[key] = {"skipped": f"{type(exc).__name__}: {exc}"}
    if "seconds" in out.get("trl", {}):
        out["ours_speedup_vs_trl"] = out["trl"]["seconds"] / out["ours"]["seconds"]
    return out


def chunked_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                 chunk: int = 1024, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Token-mean cross-entropy of ``hidden @ weight.T`` (HF unshifted labels), chunk by chunk.

    Each chunk's logits are recomputed in backward (checkpointing), so at most ``chunk x V``
    logits are alive at a time instead of ``T x V``.
    """
    h = hidden[:, :-1].reshape(-1, hidden.size(-1))
    y = labels[:, 1:].reshape(-1)
    count = (y != ignore_index).sum().clamp(min=1)

    def piece(hc, yc):
        logits = (hc @ weight.T).float()
        return F.cross_entropy(logits, yc, ignore_index=ignore_index, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, h.size(0), chunk):
        total = total + checkpoint(piece, h[s:s + chunk], y[s:s + chunk], use_reentrant=False)
    return total / count
