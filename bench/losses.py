"""The loss of the benchmark's training step: ``reference``, ``chunked`` or ``fused`` (issue 25).

* ``reference``: :func:`sft_conformance.reference.loss.sft_loss` on the model's logits, as a
  reader checks it: the whole ``(tokens, vocabulary)`` logits tensor, upcast to float32. At a
  151,936 vocabulary and 32 padded rows of ~750 positions that is 13.7 GiB a copy
  (``reports/bench/gpu.md``): the padded layouts ran out of memory in the loss, not in the model.
* ``chunked``: the model's last hidden states go through the output projection and the
  cross-entropy ``chunk_tokens`` positions at a time, in a custom autograd function that also
  computes the gradients chunk by chunk during the forward (the approach of Liger's fused linear
  cross-entropy, in plain PyTorch). At no point does more than one chunk's
  ``(chunk_tokens, vocabulary)`` float32 logits exist, in the forward or the backward, and the
  projection is computed once (no recomputation as with checkpointing). The numbers follow the
  reference: logits in the model's dtype, upcast to float32, token-mean over trained positions;
  the logit gradients are cast back to the model's dtype before the two matmuls, as autograd
  does for the reference, and the weight gradient is accumulated over chunks in float32.
* ``fused``: Liger's ``LigerFusedLinearCrossEntropyLoss`` (``liger-kernel``, triton, CUDA only)
  when installed; otherwise the run stops with one line naming the extra to install.

The default (``auto``) is ``chunked`` above a 64k vocabulary and ``reference`` otherwise.
Positions are aligned as in the reference (``labels[t]`` is the target of position ``t - 1``).
A plain linear head is assumed (no bias, no logit soft-capping or scaling): true of the Llama and
Qwen shapes the presets use; other heads are refused with a clear error.
"""

from __future__ import annotations

import torch

from sft_conformance.reference.loss import IGNORE_INDEX, per_token_nll, sft_loss

LOSSES = ("reference", "chunked", "fused")
#: ``auto`` picks ``chunked`` above this vocabulary size (the issue: "above a 64k vocabulary")
CHUNKED_ABOVE_VOCAB = 65_536
#: positions per chunk: 1,024 x 151,936 float32 logits are 0.58 GiB
DEFAULT_CHUNK_TOKENS = 1024
FUSED_EXTRA = "pip install 'sft-conformance[liger]'"


class LossUnavailable(ValueError):
    """The asked-for loss cannot run here (a missing package, a device it does not support)."""


def choose_loss(requested: str | None, vocab_size: int) -> str:
    """The loss a run uses: ``requested`` unless it is ``None``/``auto``."""
    if requested in (None, "auto"):
        return "chunked" if vocab_size > CHUNKED_ABOVE_VOCAB else "reference"
    if requested not in LOSSES:
        raise ValueError(f"unknown loss {requested!r}; expected auto or one of {', '.join(LOSSES)}")
    return requested


def liger_loss_class():
    """``LigerFusedLinearCrossEntropyLoss``, or :class:`LossUnavailable` naming the extra."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError as exc:
        raise LossUnavailable(
            f"--loss fused needs liger-kernel, which is not installed ({exc}); install it with "
            f"{FUSED_EXTRA} on a CUDA machine, or use --loss chunked") from exc
    return LigerFusedLinearCrossEntropyLoss


def check_available(kind: str, device: str) -> None:
    """Raise :class:`LossUnavailable` when ``kind`` cannot run on ``device``."""
    if kind != "fused":
        return
    liger_loss_class()
    if torch.device(device).type != "cuda":
        raise LossUnavailable(f"--loss fused: Liger's kernel runs on CUDA only (triton), not on "
                              f"{device}; use --loss chunked")


def check_head(model) -> None:
    """Refuse heads the chunked and fused losses do not model (bias, soft-capping, scaling)."""
    head = model.get_output_embeddings()
    cfg = model.config
    if getattr(head, "bias", None) is not None:
        raise ValueError("chunked/fused loss: the output projection has a bias; use --loss "
                         "reference")
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(cfg, name, None) not in (None, 1, 1.0):
            raise ValueError(f"chunked/fused loss: the model sets {name}; use --loss reference")


def _aligned(hidden: torch.Tensor, labels: torch.Tensor):
    """(N, d) hidden states and (N,) targets, ``N = B x (T - 1)``."""
    return (hidden[:, :-1].reshape(-1, hidden.shape[-1]),
            labels[:, 1:].reshape(-1))


def _chunk_nll(h: torch.Tensor, weight: torch.Tensor, t: torch.Tensor):
    """Float32 logits of a chunk, their logsumexp and the per-position NLL (0 where ignored)."""
    logits = (h @ weight.T).float()
    valid = t != IGNORE_INDEX
    safe = torch.where(valid, t, 0)
    lse = torch.logsumexp(logits, -1)
    picked = logits.gather(1, safe[:, None]).squeeze(1)
    return logits, lse, safe, valid, (lse - picked) * valid


@torch.no_grad()
def chunked_token_nll(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                      chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Per-position NLL (float32, shape of the aligned labels) computed chunk by chunk."""
    h, t = _aligned(hidden, labels)
    out = torch.empty(t.shape, dtype=torch.float32, device=h.device)
    for s in range(0, t.numel(), chunk_tokens):
        out[s:s + chunk_tokens] = _chunk_nll(h[s:s + chunk_tokens], weight,
                                             t[s:s + chunk_tokens])[-1]
    return out.view(labels.shape[0], labels.shape[1] - 1)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``sum(NLL) / denominator`` of ``hidden @ weight.T``, gradients computed in the forward.

    ``hidden`` (N, d), ``weight`` (V, d), ``targets`` (N,) with ``IGNORE_INDEX``; returns a
    float32 scalar; ``denominator`` a float32 0-d tensor (the trained positions). The backward
    only scales the stored gradients by the incoming one.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens: int, denominator: torch.Tensor):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, targets.numel(), chunk_tokens):
            h = hidden[s:s + chunk_tokens]
            logits, lse, safe, valid, nll = _chunk_nll(h, weight, targets[s:s + chunk_tokens])
            total += nll.sum()
            if need_h or need_w:
                g = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                g[torch.arange(g.shape[0], device=g.device), safe] -= 1
                g.mul_((valid.float() / denominator)[:, None])
                g = g.to(weight.dtype)  # what autograd hands the matmuls in the reference
                if need_h:
                    grad_h[s:s + chunk_tokens] = g @ weight
                if need_w:
                    grad_w += (g.T @ h).float()
                del g
            del logits
        ctx.save_for_backward(grad_h if need_h else None,
                              grad_w.to(weight.dtype) if need_w else None)
        return total / denominator

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = grad_w * grad_out.to(grad_w.dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def chunked_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                 chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Token-mean cross-entropy of ``hidden @ weight.T`` over trained positions, chunked."""
    h, t = _aligned(hidden, labels)
    # a 0-d tensor, not a Python number: no device sync, no graph break under torch.compile
    denominator = (t != IGNORE_INDEX).sum().clamp_min(1).float()
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return ChunkedLinearCrossEntropy.apply(h, weight, t, chunk_tokens, denominator)
    return chunked_token_nll(hidden, weight, labels, chunk_tokens).sum() / denominator


class StepLoss:
    """The loss of a training step: which model output it needs and how it reduces it.

    ``needs_hidden``: the forward returns the last hidden states (the projection is the loss's);
    otherwise the logits. ``__call__(out, labels, weight)`` is the training loss (token mean);
    ``nll_sum(out, labels, weight)`` the float64 token-sum for the parity pass.
    """

    def __init__(self, kind: str, chunk_tokens: int = DEFAULT_CHUNK_TOKENS):
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; expected one of {', '.join(LOSSES)}")
        if chunk_tokens < 1:
            raise ValueError(f"loss chunk must be at least one token, got {chunk_tokens}")
        self.kind = kind
        self.chunk_tokens = chunk_tokens
        self.needs_hidden = kind != "reference"
        self._liger = liger_loss_class()(ignore_index=IGNORE_INDEX, reduction="mean") \
            if kind == "fused" else None

    def describe(self) -> str:
        if self.kind == "reference":
            return "reference: sft_loss over the full float32 logits"
        if self.kind == "chunked":
            return (f"chunked: output projection + cross-entropy {self.chunk_tokens} positions at "
                    "a time, gradients computed chunk by chunk (bench.losses)")
        return "fused: Liger LigerFusedLinearCrossEntropyLoss (liger-kernel)"

    def __call__(self, out: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor):
        if self.kind == "reference":
            return sft_loss(out, labels)
        if self.kind == "chunked":
            return chunked_loss(out, weight, labels, self.chunk_tokens)
        h, t = _aligned(out, labels)
        return self._liger(weight, h, t)

    def nll_sum(self, out: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> float:
        """Token-sum of the NLL (float64); the fused loss is summed by the chunked code."""
        if self.kind == "reference":
            return float(per_token_nll(out, labels).double().sum())
        return float(chunked_token_nll(out, weight, labels, self.chunk_tokens).double().sum())

