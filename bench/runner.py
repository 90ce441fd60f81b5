"""Run the benchmark: the same examples through every strategy, timed, with loss parity.

Per strategy: build the epoch's batches, run a no-grad pass at the initial weights for the loss
parity (token-sum / token-count over the whole epoch, float64), check document isolation on the
first batch of the flattened layouts, then train: ``warmup_steps`` untimed steps, then ``repeats``
timed epochs (forward + backward and optimizer timed apart; CUDA events read after a synchronize),
then, on CUDA, a few profiled steps for the GPU-busy fraction (``bench.busy``).

The step's loss is ``bench.losses`` (reference, chunked or fused), the optimizer AdamW fused on
CUDA and foreach elsewhere, and with ``compile`` the model and the loss run under
``torch.compile`` (``bench.compiling``). Parity and isolation run the plain model.
"""

from __future__ import annotations

import math
import statistics
import sys
import time

import torch

from sft_conformance.reference.loss import per_token_nll, sft_loss

from . import busy, metrics
from .compiling import CompiledModel, compile_loss, make_optimizer, optimizer_name
from .data import PROFILES, BenchData, generate_conversations, length_stats, load_jsonl, tokenize
from .losses import StepLoss, check_available, check_head, choose_loss
from .models import build_model, choose_attention, forward_fn, model_shape
from .presets import BenchConfig
from .strategies import FLATTENED, STRATEGIES, epoch_counts, make_batches
from .timing import Marks, synchronize

PARITY_RTOL = {"float32": 1e-4, "bfloat16": 1e-2}
ISOLATION_ATOL = {"float32": 1e-3, "bfloat16": 0.1}  # max |delta per-token NLL|


def resolve_device(cfg: BenchConfig) -> tuple[str, torch.dtype]:
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for but CUDA is not available")
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


def load_data(cfg: BenchConfig, tokenizer) -> BenchData:
    if cfg.data == "agentic":
        from .agentic import SOURCE, generate_agentic

        convs = generate_agentic(cfg.n_examples, tokenizer, seed=cfg.seed)
        return tokenize(convs, tokenizer, cfg.max_length, name="agentic", description=SOURCE)
    if cfg.data in PROFILES:
        profile = PROFILES[cfg.data]
        convs = generate_conversations(profile, cfg.n_examples, tokenizer, seed=cfg.seed)
        return tokenize(convs, tokenizer, cfg.max_length, name=cfg.data,
                        description=profile.source)
    convs = load_jsonl(cfg.data)
    if cfg.n_examples and cfg.n_examples < len(convs):
        convs = convs[:cfg.n_examples]
    return tokenize(convs, tokenizer, cfg.max_length, name=str(cfg.data),
                    description=f"user JSONL {cfg.data} ({len(convs)} conversations)")


def _to(batch: dict, device: str) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@torch.no_grad()
def parity_pass(model, batches, fwd, loss: StepLoss | None = None) -> dict:
    """Token-sum and token-count of the loss over the epoch at the current weights.

    ``fwd`` returns what ``loss`` needs (logits for the reference loss, hidden states for the
    chunked and fused ones); without ``loss``, logits and the reference NLL.
    """
    loss = loss or StepLoss("reference")
    weight = model.get_output_embeddings().weight
    total, count = 0.0, 0
    for b in batches:
        total += loss.nll_sum(fwd(model, b), b["labels"], weight)
        count += b["meta"]["trained_tokens"]
    return {"loss_sum": total, "trained_tokens": count, "loss_mean": total / max(count, 1)}


LOSS_RTOL = {"float32": 1e-5, "bfloat16": 1e-2}  # step loss vs reference loss, one batch


@torch.no_grad()
def loss_check(model, batch, fwd_logits, fwd_train, loss: StepLoss, rtol: float,
               rows: int = 2) -> dict:
    """The step's loss against the reference ``sft_loss`` on the first ``rows`` rows of a batch
    (a few rows: the reference materialises the full float32 logits)."""
    part = {k: (v[:rows] if isinstance(v, torch.Tensor) and v.dim() == 2 else v)
            for k, v in batch.items() if k not in ("meta", "cu_seqlens")}
    ref = float(sft_loss(fwd_logits(model, part), part["labels"]))
    ours = float(loss(fwd_train(model, part), part["labels"],
                      model.get_output_embeddings().weight))
    rel = abs(ours - ref) / max(abs(ref), 1e-12)
    return {"kind": loss.kind, "reference": ref, "value": ours, "rel_diff": rel, "rtol": rtol,
            "rows": min(rows, batch["input_ids"].shape[0]), "passed": rel <= rtol}


@torch.no_grad()
def isolation_check(model, batch, fwd, padded_fwd, atol: float) -> dict:
    """Per-token NLL of one row of the batch, packed vs each of its documents run alone.

    The row is the one of the batch holding the most documents. A control runs the same row with
    a plain causal mask (documents see each other), so the report shows what a leak would look
    like at this precision.
    """
    counts = [len(set(r.tolist()) - {-1}) for r in batch["document_ids"]]
    r = max(range(len(counts)), key=counts.__getitem__)
    ids, pos = batch["input_ids"][r:r + 1], batch["position_ids"][r:r + 1]
    docs = batch["document_ids"][r]
    labels = ids.clone()
    labels[0, docs < 0] = -100
    starts = torch.ones_like(docs, dtype=torch.bool)
    starts[1:] = docs[1:] != docs[:-1]
    labels[0, starts] = -100  # a document's first token is not predicted from the previous one
    row = {k: (v[r:r + 1] if isinstance(v, torch.Tensor) and v.dim() == 2 else v)
           for k, v in batch.items() if k != "meta"}
    row.pop("cu_seqlens", None)  # batch-level boundaries; the forward functions do not use them
    packed = per_token_nll(fwd(model, row), labels)[0]
    leak_row = {"input_ids": ids, "position_ids": pos,
                "attention_mask": (docs >= 0).long()[None]}
    leaky = per_token_nll(padded_fwd(model, leak_row), labels)[0]
    alone = torch.zeros_like(packed)
    n_docs = 0
    for d in docs.unique():
        if d < 0:
            continue
        where = (docs == d).nonzero().flatten()
        s, e = int(where[0]), int(where[-1]) + 1
        single = {"input_ids": ids[:, s:e], "position_ids": torch.arange(e - s,
                                                                         device=ids.device)[None],
                  "attention_mask": torch.ones(1, e - s, dtype=torch.long, device=ids.device)}
        nll = per_token_nll(padded_fwd(model, single), ids[:, s:e])[0]
        alone[s:e - 1] = nll
        n_docs += 1
    keep = labels[0, 1:] != -100
    diff = (packed - alone)[keep].abs()
    leak = (leaky - alone)[keep].abs()
    max_diff, leak_diff = float(diff.max()), float(leak.max())
    return {"row": r, "documents_in_row": n_docs, "max_abs_nll_diff": max_diff,
            "mean_abs_nll_diff": float(diff.mean()), "leak_control_max_abs_nll_diff": leak_diff,
            "atol": atol, "passed": max_diff <= atol,
            "distinguishes_leak": leak_diff > 2 * max_diff}


def train_epochs(model, batches, fwd, cfg: BenchConfig, device: str, bar,
                 loss: StepLoss | None = None, net=None, loss_fn=None) -> dict:
    """Untimed warm-up steps, then ``repeats`` timed epochs; per-epoch and per-step times; then
    the GPU-busy fraction of a few more steps (CUDA only).

    ``net``: what the steps call (the model, or a :class:`CompiledModel` of it); ``loss_fn``:
    the (possibly compiled) ``loss``; ``fwd`` returns what ``loss`` needs.
    """
    loss = loss or StepLoss("reference")
    net = model if net is None else net
    loss_fn = loss if loss_fn is None else loss_fn
    weight = model.get_output_embeddings().weight
    opt, _ = make_optimizer(model, cfg.lr, device)

    def forward_backward(b):
        loss_fn(fwd(net, b), b["labels"], weight).backward()

    def step(b):
        forward_backward(b)
        opt.step()
        opt.zero_grad(set_to_none=True)

    warm = [batches[i % len(batches)] for i in range(cfg.warmup_steps)]
    for b in warm:
        step(b)
        bar.update(1)
    synchronize(device)
    metrics.reset_memory(device)
    static = metrics.allocated_mb(device)  # weights + optimizer state, no gradients
    epochs, fb, op = [], [], []
    for _ in range(cfg.repeats):
        marks = Marks(device)
        synchronize(device)
        for b in batches:
            marks.mark()
            forward_backward(b)
            marks.mark()
            opt.step()
            opt.zero_grad(set_to_none=True)
            marks.mark()
            bar.update(1)
        iv = marks.intervals()  # (fwd+bwd, opt, gap) per step; the gap is the next step's start
        fb_e = iv[0::3]
        op_e = iv[1::3]
        fb += fb_e
        op += op_e
        epochs.append(sum(fb_e) + sum(op_e))
    mem = metrics.memory(device)
    mem["static_allocated_mb"] = static
    busy_fraction = busy.measure(step, batches, device)
    return {"epoch_s": epochs, "fwd_bwd_s": fb, "optimizer_s": op, "busy": busy_fraction, **mem}


def run_benchmark(cfg: BenchConfig, *, progress: bool = True, command: str | None = None) -> dict:
    """Run every strategy of ``cfg`` and return the results (the JSON of the report)."""
    threads = torch.get_num_threads()
    device, _ = resolve_device(cfg)
    if cfg.threads and not device.startswith("cuda"):
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, progress=progress, command=command)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: BenchConfig, *, progress: bool, command: str | None) -> dict:
    from tqdm.auto import tqdm

    from sft_conformance.assets import load_tokenizer

    from .environment import environment
    from .micro import packer_comparison

    t_start = time.perf_counter()
    env = environment()  # versions, commit and the load average before the run
    torch.manual_seed(cfg.seed)
    device, dtype = resolve_device(cfg)
    dtype_name = str(dtype).replace("torch.", "")
    unknown = [s for s in cfg.strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; expected some of {', '.join(STRATEGIES)}")
    tokenizer = load_tokenizer(cfg.tokenizer)
    attention = choose_attention(device, cfg.attention)
    model, model_source = build_model(cfg.model, tokenizer, device=device, dtype=dtype,
                                      attn=attention["padded"], seed=cfg.seed)
    shape = model_shape(model)
    loss_kind = choose_loss(cfg.loss, shape["vocab_size"])
    check_available(loss_kind, device)
    if loss_kind != "reference":
        check_head(model)
    step_loss = StepLoss(loss_kind, cfg.loss_chunk_tokens)
    data = load_data(cfg, tokenizer)
    net = CompiledModel(model, cfg.compile_backend) if cfg.compile else model
    loss_fn = compile_loss(step_loss, cfg.compile_backend) if cfg.compile else step_loss

    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ceiling = metrics.matmul_ceiling(device, dtype)
    dev = metrics.device_info(device)
    padded_fwd = forward_fn(attention["padded"])
    pad_id = tokenizer.pad_token_id

    all_batches = {s: make_batches(s, data.examples, pad_token_id=pad_id,
                                   max_length=cfg.max_length, batch_size=cfg.batch_size,
                                   seed=cfg.seed) for s in cfg.strategies}
    total_steps = sum(cfg.warmup_steps + cfg.repeats * len(b) for b in all_batches.values())
    bar = tqdm(total=total_steps, desc="bench", unit="step", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    per = {}
    for strategy in cfg.strategies:
        bar.set_description(strategy)
        batches = [_to(b, device) for b in all_batches[strategy]]
        counts = epoch_counts(batches)
        model.load_state_dict(initial)
        backend = attention["flattened"] if strategy in FLATTENED else attention["padded"]
        entry = {"strategy": strategy, **counts, "attention_backend": backend}
        if strategy == "packed":
            rows = sum(b["meta"]["rows"] for b in batches)
            entry["packing_fill_rate"] = counts["real_tokens"] / (rows * cfg.max_length)
            entry["packed_rows"] = rows
        try:
            backend, fwd = _activate(model, backend, attention)
            fwd_train = forward_fn(backend, hidden=step_loss.needs_hidden)
            entry["attention_backend"] = backend
            model.eval()
            entry["parity"] = parity_pass(model, batches, fwd_train, step_loss)
            entry["loss_check"] = loss_check(model, batches[0], fwd, fwd_train, step_loss,
                                             LOSS_RTOL.get(dtype_name, 1e-2))
            if strategy in FLATTENED:
                # the first batch, or the first one with a row of two documents or more
                k = next((i for i, b in enumerate(batches)
                          if any(len(set(r.tolist()) - {-1}) > 1 for r in b["document_ids"])), 0)
                entry["isolation"] = isolation_check(model, batches[k], fwd, padded_fwd,
                                                     ISOLATION_ATOL.get(dtype_name, 0.1))
                entry["isolation"]["batch"] = k
            model.train()
            timing = train_epochs(model, batches, fwd_train, cfg, device, bar, step_loss,
                                  net=net, loss_fn=loss_fn)
        except Exception as exc:  # out of memory, a kernel missing: record it, go on
            first = (str(exc).splitlines() or [""])[0]
            entry["error"] = (f"out of memory: {first}" if isinstance(exc, torch.OutOfMemoryError)
                              else f"{type(exc).__name__}: {first}")
            model.zero_grad(set_to_none=True)
            per[strategy] = entry
            _activate(model, attention["padded"], attention)
            metrics.reset_memory(device)
            continue
        finally:
            if backend in ("flex_attention", "torch_varlen"):
                model.set_attn_implementation(attention["padded"])
        entry.update(_throughput(entry, timing, batches, shape, ceiling, dev))
        per[strategy] = entry
        del batches
        metrics.reset_memory(device)
    bar.close()
    summary = _summarize(per, dtype_name)
    results = {
        "schema": "sft-conformance/bench/1",
        "config": cfg.to_dict(),
        "command": command,
        "device": dev,
        "dtype": dtype_name,
        "environment": env,
        "model": {"spec": cfg.model, "source": model_source, **shape},
        "attention": attention,
        "loss": {"kind": loss_kind, "requested": cfg.loss, "description": step_loss.describe(),
                 "chunk_tokens": cfg.loss_chunk_tokens if loss_kind == "chunked" else None},
        "compile": {"enabled": cfg.compile,
                    "backend": cfg.compile_backend if cfg.compile else None,
                    "what": "torch.compile of the model (forward and decoder) and of the loss"
                            if cfg.compile else "eager"},
        "optimizer": optimizer_name(device),
        "flops_formula": metrics.FLOPS_FORMULA,
        "matmul_ceiling": ceiling,
        "data": {"name": data.name, "description": data.description,
                 "tokenizer": getattr(tokenizer, "name_or_path", cfg.tokenizer),
                 "raw_lengths": length_stats(data.raw_lengths, cfg.max_length),
                 "lengths_after_truncation": length_stats(data.lengths, cfg.max_length),
                 "n_truncated": data.n_truncated, "n_dropped": data.n_dropped},
        "strategies": per,
        "summary": summary,
    }
    results["packing"] = _packing_section(cfg, data)
    if cfg.compare_packers:
        results["packer_comparison"] = packer_comparison(
            _fill_lengths(cfg, data, cap=2048), capacity=2048)
    results["wall_s"] = time.perf_counter() - t_start
    results["environment"]["load_average_at_end"] = environment()["load_average"]
    return results


def _activate(model, backend: str, attention: dict, compile: bool | None = None):
    """Switch the model's attention implementation when the flattened layouts need another.

    FlexAttention runs through the benchmark's own registered function (``bench.flex``): the
    document mask comes from ``document_ids`` and ``compile`` (default: on CUDA only) decides
    between the compiled kernel and eager ``flex_attention``.
    """
    if backend in ("flex_attention", "torch_varlen"):
        from . import flex, varlen

        register = flex.register if backend == "flex_attention" else varlen.register
        try:
            model.set_attn_implementation(register())
        except Exception as exc:  # an older transformers or a model without custom attention
            attention["fallback"] = f"{backend} unavailable ({exc}); sdpa + 4D mask"
            backend = "sdpa+block_causal_4d"
    return backend, forward_fn(backend, compile=compile)


def _throughput(entry, timing, batches, shape, ceiling, dev) -> dict:
    epochs = timing["epoch_s"]
    real, trained = entry["real_tokens"], entry["trained_tokens"]
    flops = sum(metrics.step_flops(b["meta"]["doc_lengths"], shape) for b in batches)
    achieved = [flops / t for t in epochs]
    peak = dev.get("dense_bf16_peak_flops")
    largest = max(batches, key=lambda b: b["meta"]["slots"])["meta"]
    step_peak = (timing["peak_allocated_mb"] - timing["static_allocated_mb"]
                 if timing.get("peak_allocated_mb") is not None
                 and timing.get("static_allocated_mb") is not None else None)
    return {
        "timing": timing,
        "busy": timing.get("busy"),
        "largest_step": {"slots": largest["slots"], "real_tokens": largest["real_tokens"]},
        "static_allocated_mb": timing.get("static_allocated_mb"),
        "step_peak_mb": step_peak,
        "step_peak_mb_per_1k_real_tokens": (1e3 * step_peak / largest["real_tokens"]
                                            if step_peak is not None else None),
        "real_tokens_per_s": metrics.summarize([real / t for t in epochs]),
        "trained_tokens_per_s": metrics.summarize([trained / t for t in epochs]),
        "epoch_s": metrics.summarize(epochs),
        "step_fwd_bwd_s": metrics.summarize(timing["fwd_bwd_s"]),
        "step_optimizer_s": metrics.summarize(timing["optimizer_s"]),
        "peak_allocated_mb": timing.get("peak_allocated_mb"),
        "peak_reserved_mb": timing.get("peak_reserved_mb"),
        "flops_per_epoch": flops,
        "achieved_flops": statistics.median(achieved),
        "mfu_vs_peak": statistics.median(achieved) / peak if peak else None,
        "mfu_vs_matmul_ceiling": statistics.median(achieved) / ceiling["flops"],
    }


def _summarize(per: dict, dtype_name: str) -> dict:
    ok = {s: e for s, e in per.items() if "error" not in e}
    # any padded layout can be the reference; with none (all out of memory, say) parity is not
    # judged, which is not the same as failed
    ref = ok.get("dynamic") or ok.get("fixed") or ok.get("bucketed")
    out = {"reference_for_parity": ref["strategy"] if ref else None,
           "parity_rtol": PARITY_RTOL.get(dtype_name, 1e-2)}
    if ref:
        ref_loss = ref["parity"]["loss_mean"]
        for e in ok.values():
            rel = abs(e["parity"]["loss_mean"] - ref_loss) / abs(ref_loss)
            e["parity"]["rel_diff_vs_padded"] = rel
            e["parity"]["passed"] = rel <= out["parity_rtol"]
    dyn = ok.get("dynamic")
    if dyn:
        ideal = 1 / dyn["fill_rate"]
        out["dynamic_padding_density"] = dyn["fill_rate"]
        out["ideal_speedup"] = ideal
        base = dyn["real_tokens_per_s"]["median"]
        for e in ok.values():
            sp = e["real_tokens_per_s"]["median"] / base
            e["speedup_vs_dynamic"] = sp
            e["fraction_of_ideal"] = sp / ideal
    out["all_parity_passed"] = (all(e["parity"].get("passed", False) for e in ok.values())
                                if ref else None)
    out["all_isolation_passed"] = all(e["isolation"]["passed"] for e in ok.values()
                                      if "isolation" in e)
    checks = [e["loss_check"]["passed"] for e in ok.values() if "loss_check" in e]
    out["all_loss_checks_passed"] = all(checks) if checks else None
    labelled = {s: e["busy"] for s, e in ok.items() if e.get("busy")}
    out["cpu_bound"] = sorted(s for s, b in labelled.items() if b.get("fraction") is not None
                              and b["fraction"] < busy.CPU_BOUND_BELOW)
    out["errors"] = {s: e["error"] for s, e in per.items() if "error" in e}
    return out


def _fill_lengths(cfg: BenchConfig, data: BenchData, cap: int) -> list[int]:
    """Lengths for the fill-rate table: drawn from the profile, or the user's data."""
    if cfg.data in PROFILES:
        return [min(cap, n) for n in PROFILES[cfg.data].sample_lengths(cfg.fill_rate_lengths,
                                                                       cfg.seed)]
    return [min(cap, n) for n in data.raw_lengths]


def _packing_section(cfg: BenchConfig, data: BenchData) -> dict:
    from sft_conformance.reference.packing import best_fit_decreasing

    def fill(lengths, cap):
        bins = best_fit_decreasing(lengths, cap)
        return {"capacity": cap, "items": len(lengths), "rows": len(bins),
                "fill_rate": sum(lengths) / (len(bins) * cap),
                "lower_bound_rows": math.ceil(sum(lengths) / cap)}

    out = {"run_data": fill(data.lengths, cfg.max_length)}
    lengths = _fill_lengths(cfg, data, 2048)
    out["at_2048"] = fill(lengths, 2048)
    out["at_2048"]["source"] = (f"{len(lengths)} lengths drawn from the {cfg.data} length model"
                                if cfg.data in PROFILES else "the user's data, raw lengths")
    return out
