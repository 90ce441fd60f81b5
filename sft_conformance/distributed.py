"""S7 across ranks: the target's loss under ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Each of ``world_size`` processes holds the same tiny model and its own micro-batch, with a
different number of trained tokens. Every rank computes the target's loss the way Hugging Face's
Trainer does under data parallelism: ``target.loss(logits, labels, num_items_in_batch=N)`` with
``N`` the trained positions of the *global* batch, times ``world_size`` (because DDP's all-reduce
averages the ranks' gradients). The averaged gradient must equal the single-process gradient of the
full batch's token mean. A loss that divides by its *local* count and lets the all-reduce average
the ranks (a mean of per-rank means, transformers #24725 / trl #2175 at scale) is caught.

Processes are started with multiprocessing ``spawn``, joined with a timeout, and killed on
failure; the rendezvous is a file in a fresh temporary directory, so parallel test runs never
collide on a port.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}],
    [{"role": "user", "content": "tell me"},
     {"role": "assistant", "content": "the answer is a long one with many words in it here"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"},
     {"role": "assistant", "content": "yes"}],
    [{"role": "user", "content": "and then"}, {"role": "assistant", "content": "a b"}],
    [{"role": "user", "content": "why"},
     {"role": "assistant", "content": "because the sky scatters blue light more"}],
    [{"role": "user", "content": "one two three"}, {"role": "assistant", "content": "four five"}],
]


def _rank_batches(world_size: int):
    """Rank r gets conversations r, r+W, ...: different trained-token counts per rank."""
    return [CONVERSATIONS[r::world_size] for r in range(world_size)]


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _worker(rank, world_size, init_file, out_dir, spec, tokenizer_name, backend):
    import torch.distributed as dist

    from .assets import load_tokenizer, tiny_model
    from .target import load_target

    torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size, timeout=__import__("datetime").timedelta(
                                seconds=60))
    try:
        target = load_target(spec)
        tok = load_tokenizer(tokenizer_name)
        device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
        model = tiny_model(tok).to(device).train()
        batches = [target.collate(c, tok, 512) for c in _rank_batches(world_size)]
        from sft_conformance.reference import count_trained

        shifted = bool(getattr(target, "labels_shifted", False))
        global_count = sum(count_trained(b["labels"], labels_shifted=shifted) for b in batches)
        mine = {k: v.to(device) for k, v in batches[rank].items() if torch.is_tensor(v)}
        forward = getattr(target, "forward", None)
        logits = forward(model, mine) if callable(forward) else model(
            **{k: mine[k] for k in ("input_ids", "attention_mask", "position_ids")
               if k in mine}).logits
        loss = target.loss(logits, mine["labels"], num_items_in_batch=global_count) * world_size
        loss.backward()
        grads = _grads(model)
        dist.all_reduce(grads, op=dist.ReduceOp.SUM)
        grads /= world_size  # what DistributedDataParallel does
        torch.save({"grads": grads.cpu(), "loss": float(loss.detach()) / world_size,
                    "count": global_count}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def full_batch_gradient(spec: str, tokenizer_name: str, world_size: int):
    """The single-process reference: the gradient of the whole batch's token mean."""
    from sft_conformance.reference import count_trained, sft_loss

    from .assets import load_tokenizer, tiny_model
    from .target import load_target

    target = load_target(spec)
    tok = load_tokenizer(tokenizer_name)
    model = tiny_model(tok).train()
    shifted = bool(getattr(target, "labels_shifted", False))
    batches = [target.collate(c, tok, 512) for c in _rank_batches(world_size)]
    N = sum(count_trained(b["labels"], labels_shifted=shifted) for b in batches)
    total = 0.0
    for b in batches:
        forward = getattr(target, "forward", None)
        logits = forward(model, b) if callable(forward) else model(
            **{k: b[k] for k in ("input_ids", "attention_mask", "position_ids") if k in b}).logits
        loss = sft_loss(logits, b["labels"], labels_shifted=shifted, num_items_in_batch=N)
        loss.backward()
        total += float(loss.detach())
    return _grads(model), total, N


def run_data_parallel(spec: str, *, tokenizer_name: str = "chatml", world_size: int = 2,
                      timeout: float = 180.0) -> dict:
    """Spawn ``world_size`` ranks; return their averaged gradient and the full-batch one."""
    import torch.multiprocessing as mp

    backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world_size \
        else "gloo"
    with tempfile.TemporaryDirectory(prefix="sft-conformance-dp-") as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        ctx = mp.start_processes(_worker, args=(world_size, init_file, tmp, spec, tokenizer_name,
                                                backend),
                                 nprocs=world_size, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=1.0):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"data-parallel ranks did not finish in {timeout:.0f} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        results = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(world_size)]
    want, want_loss, N = full_batch_gradient(spec, tokenizer_name, world_size)
    return {"backend": backend, "world_size": world_size, "grads": results[0]["grads"],
            "want": want, "loss": sum(r["loss"] for r in results), "want_loss": want_loss,
            "count": N}
