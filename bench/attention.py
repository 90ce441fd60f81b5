"""Which attention the padded and the flattened (packed, padding-free) layouts run.

Flattened layouts need documents kept apart inside a row. The implementations, in the order
``auto`` prefers them on CUDA:

* ``flash_attention_2``: flash-attn's varlen kernels with explicit ``cu_seqlens`` (only where the
  ``flash_attn`` package is installed); padded runs use it too.
* ``torch_varlen``: PyTorch's own ``torch.nn.attention.varlen.varlen_attn`` (recent torch; the
  bundled FlashAttention-2, CUDA only) with the same explicit boundaries (``bench.varlen``).
* ``flex_attention``: a FlexAttention document block mask (``bench.flex``), compiled on CUDA.
* ``sdpa+block_causal_4d``: sdpa with an explicit dense 4D block-causal mask (masked, not
  skipped); the CPU default and the fallback.

``--attention NAME`` asks for one of them for the flattened layouts; one that cannot run here is
refused with one line.
"""

from __future__ import annotations

import torch

ATTENTION = ("auto", "flash_attention_2", "torch_varlen", "flex_attention",
             "sdpa+block_causal_4d")


def flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True


def torch_varlen_available(device) -> bool:
    from . import varlen

    return varlen.available(device)


def choose_attention(device: str, requested: str | None = "auto", *, flash: bool | None = None,
                     torch_varlen: bool | None = None) -> dict:
    """The attention of the padded runs and of the flattened runs, and why.

    ``flash`` / ``torch_varlen``: whether flash-attn / torch's varlen kernel can run here
    (default: detected; the tests pass them).
    """
    requested = requested or "auto"
    if requested not in ATTENTION:
        raise ValueError(f"unknown attention {requested!r}; expected one of "
                         f"{', '.join(ATTENTION)}")
    cuda = torch.device(device).type == "cuda"
    flash = flash_attn_available() if flash is None else flash
    torch_varlen = torch_varlen_available(device) if torch_varlen is None else torch_varlen
    padded = "flash_attention_2" if cuda and flash else "sdpa"
    skips = {"flash_attention_2": True, "torch_varlen": True, "flex_attention": True,
             "sdpa+block_causal_4d": False}
    if requested == "auto":
        if not cuda:
            return {"padded": "sdpa", "flattened": "sdpa+block_causal_4d",
                    "skips_cross_document": False, "requested": requested,
                    "why": "CPU: sdpa with an explicit 4D block-causal mask (dense; masked, not "
                           "skipped)"}
        if flash:
            flattened, why = "flash_attention_2", "flash_attn installed: varlen kernels, " \
                                                  "explicit cu_seqlens"
        elif torch_varlen:
            flattened, why = "torch_varlen", ("flash_attn not installed: torch.nn.attention."
                                              "varlen.varlen_attn, explicit cu_seqlens")
        else:
            flattened, why = "flex_attention", ("neither flash_attn nor torch varlen_attn: "
                                                "FlexAttention document mask (block-sparse)")
        return {"padded": padded, "flattened": flattened, "skips_cross_document": True,
                "requested": requested, "why": why}
    if requested == "flash_attention_2" and not (cuda and flash):
        raise ValueError("--attention flash_attention_2 needs CUDA and the flash_attn package")
    if requested == "torch_varlen" and not torch_varlen:
        raise ValueError("--attention torch_varlen needs CUDA and a torch with torch.nn.attention"
                         ".varlen (its kernel, aten::_flash_attention_forward, has no CPU "
                         "version)")
    return {"padded": padded, "flattened": requested, "skips_cross_document": skips[requested],
            "requested": requested, "why": f"--attention {requested}"}
