"""FlexAttention document masks for the flattened layouts, device and compilation as parameters.

transformers' own ``flex_attention`` implementation always compiles (``torch.compile`` of the
kernel and ``create_block_mask(..., _compile=True)``), so it cannot run eagerly on a CPU. The
benchmark therefore builds the document ``BlockMask`` itself, from the batch's ``document_ids``
(query ``q`` sees key ``k`` iff ``k <= q`` in the same document; a padding position sees only
itself), and registers its own attention function, :data:`ATTN_NAME`, that calls
``flex_attention`` compiled (CUDA: the fused, block-sparse kernel) or eagerly (CPU: the unfused
reference that materialises the scores; forward only, PyTorch has no FlexAttention backward on
CPU). Anything that is not a ``BlockMask`` (a padded row fed with a 2D mask) goes to sdpa.
"""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

#: the name registered with transformers' ``AttentionInterface`` and ``AttentionMaskInterface``
ATTN_NAME = "sft_flex"

_compiled = None


def default_compile(device) -> bool:
    """Compile on CUDA (the fused kernel is the point of FlexAttention), eager elsewhere."""
    return torch.device(device).type == "cuda"


def flex_kernel(compile: bool):
    """``flex_attention``, compiled once per process, or the eager function."""
    global _compiled
    if not compile:
        return flex_attention
    if _compiled is None:
        _compiled = torch.compile(flex_attention)
    return _compiled


def document_block_mask(document_ids: torch.Tensor, *, device=None,
                        compile: bool | None = None) -> BlockMask:
    """Block-causal document mask of a (B, T) ``document_ids`` batch (-1 on padding)."""
    device = torch.device(device if device is not None else document_ids.device)
    compile = default_compile(device) if compile is None else compile
    docs = document_ids.to(device)
    B, T = docs.shape

    def document_causal(b, h, q, kv):
        same = docs[b, q] == docs[b, kv]
        return (same & (q >= kv) & (docs[b, q] >= 0)) | (q == kv)

    return create_block_mask(document_causal, B, None, T, T, device=device, _compile=compile)


def _repeat_kv(x: torch.Tensor, n: int) -> torch.Tensor:
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n, t, d).reshape(b, h * n, t, d)


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
              flex_compile: bool | None = None, **kwargs):
    """transformers attention function: FlexAttention for a ``BlockMask``, sdpa otherwise."""
    if not isinstance(attention_mask, BlockMask):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    if dropout > 0:
        raise ValueError("FlexAttention path: attention dropout is not supported")
    compile = default_compile(query.device) if flex_compile is None else flex_compile
    hq, hkv = query.shape[1], key.shape[1]
    gqa = hq != hkv
    if gqa and hq & (hq - 1):  # as transformers: GQA in the kernel only for power-of-two heads
        key, value, gqa = _repeat_kv(key, hq // hkv), _repeat_kv(value, hq // hkv), False
    out = flex_kernel(compile)(query, key, value, block_mask=attention_mask, scale=scaling,
                               enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register :data:`ATTN_NAME` with transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)  # 2D masks of padded rows -> sdpa
    return ATTN_NAME
