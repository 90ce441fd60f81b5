"""PyTorch's own variable-length attention for the flattened layouts, without flash-attn.

Recent torch (2.13.0 here; the release that added it is not checked) ships
``torch.nn.attention.varlen.varlen_attn(query, key, value, cu_seq_q, cu_seq_k,
max_q, max_k, *, scale, window_size, enable_gqa)`` on ``(total_tokens, heads, head_dim)``
tensors, causal through ``window_size=(-1, 0)``. It calls ``aten::_flash_attention_forward``
(PyTorch's bundled FlashAttention-2), which exists only for CUDA: on a CPU it raises
``NotImplementedError`` (checked with torch 2.13.0+cpu). So the kernel itself runs only on a GPU;
on a CPU the tests run this module's dispatch with an sdpa stand-in for the kernel.

The benchmark registers :data:`ATTN_NAME` with transformers. A flattened batch is fed with the
same explicit ``cu_seq_lens_q/k`` / ``max_length_q/k`` arguments as flash-attention
(:func:`bench.strategies.varlen_kwargs`: the (B, T) batch flattened to B x T tokens, each
document a sequence, each padding slot a sequence of one token), which transformers passes down
to the attention function; documents are kept apart by the boundaries, cross-document work is
skipped. A call without them (a padded row with a 2D mask, as the isolation check runs) goes to
sdpa.
"""

from __future__ import annotations

import torch

ATTN_NAME = "sft_torch_varlen"


def kernel():
    """``torch.nn.attention.varlen.varlen_attn``, or ``None`` when this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def available(device) -> bool:
    """The kernel exists in this torch and can run on ``device`` (CUDA with flash attention)."""
    if kernel() is None or torch.device(device).type != "cuda":
        return False
    try:
        return bool(torch.backends.cuda.is_flash_attention_available())
    except AttributeError:  # an older torch without the query: trust the import
        return True


#: the kernel called by :func:`attention`; tests replace it with an sdpa stand-in on a CPU
_kernel = None


def _parameters(fn) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _call_kernel(q, k, v, cu_q, cu_k, max_q, max_k, scale):
    """Causal varlen attention through whichever keywords this torch's ``varlen_attn`` has:
    ``window_size=(-1, 0)`` (2.13) or ``is_causal=True`` (earlier signatures); GQA in the kernel
    (``enable_gqa``) or, without it, key/value heads repeated first."""
    fn = _kernel or kernel()
    names = _parameters(fn)
    kwargs = {"scale": scale}
    if "window_size" in names or not names:
        kwargs["window_size"] = (-1, 0)
    else:
        kwargs["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in names or not names:
            kwargs["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return fn(q, k, v, cu_q, cu_k, max_q, max_k, **kwargs)


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
              cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, max_length_k=None,
              **kwargs):
    """transformers attention function: varlen for explicit boundaries, sdpa otherwise.

    ``query`` (B, Hq, T, D), ``key``/``value`` (B, Hkv, T, D); returns (B, T, Hq, D).
    """
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    if dropout > 0:
        raise ValueError("varlen attention path: attention dropout is not supported")
    B, hq, T, D = query.shape
    hkv = key.shape[1]
    q = query.transpose(1, 2).reshape(B * T, hq, D)
    k = key.transpose(1, 2).reshape(B * T, hkv, D)
    v = value.transpose(1, 2).reshape(B * T, hkv, D)
    cu_k = cu_seq_lens_q if cu_seq_lens_k is None else cu_seq_lens_k
    max_q = int(max_length_q)
    max_k = int(max_length_k if max_length_k is not None else max_q)
    out = _call_kernel(q, k, v, cu_seq_lens_q, cu_k, max_q, max_k, scaling)
    return out.view(B, T, hq, D), None


def register() -> str:
    """Register :data:`ATTN_NAME` with transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)  # 2D masks of padded rows -> sdpa
    return ATTN_NAME
