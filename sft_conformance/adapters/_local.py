"""Helpers shared by the adapters of libraries that load a tokenizer from a directory (issue 13):
the tokenizer the suite hands to ``collate`` is saved once per configuration to a temporary
directory (``save_pretrained``), which the library then loads as a user's local checkpoint. Nothing
is downloaded."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile

_SAVED: dict[str, str] = {}


def _key(tokenizer) -> str:
    from sft_conformance.assets import vocabulary_size

    parts = [type(tokenizer).__name__, str(tokenizer.name_or_path),
             str(vocabulary_size(tokenizer)),
             str(tokenizer.pad_token), str(tokenizer.eos_token), str(tokenizer.bos_token),
             str(tokenizer.padding_side), tokenizer.chat_template or ""]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def saved_tokenizer_dir(tokenizer) -> str:
    """A directory holding ``tokenizer.save_pretrained`` (kept for the process, removed at exit)."""
    key = _key(tokenizer)
    if key not in _SAVED:
        path = tempfile.mkdtemp(prefix=f"sft-conformance-tok-{key}-")
        tokenizer.save_pretrained(path)
        _SAVED[key] = path
    return _SAVED[key]


def tokenizer_family(tokenizer) -> str:
    """The bundled or real template name the tokenizer was loaded as (``chatml``, ``qwen2.5``...),
    from the ``name_or_path`` that :func:`sft_conformance.assets.load_tokenizer` sets."""
    name = str(tokenizer.name_or_path or "")
    name = name.split("+", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name


@atexit.register
def _cleanup() -> None:
    for path in _SAVED.values():
        shutil.rmtree(path, ignore_errors=True)
    _SAVED.clear()


def varlen_forward(model, batch):
    """The model call of a padding-free (varlen) batch, as flash-attention's ``cu_seqlens`` path
    computes it, on CPU: a block-diagonal causal mask built from the documents of each row
    (``position_ids`` restarting at 0), given as a 4-D additive mask, with the position ids."""
    import torch

    input_ids, position_ids = batch["input_ids"], batch["position_ids"]
    docs = torch.cumsum((position_ids == 0).long(), dim=-1)
    same = docs[:, :, None] == docs[:, None, :]
    t = input_ids.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    allowed = (same & causal)[:, None]
    dtype = next(model.parameters()).dtype
    additive = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed,
                                                                   torch.finfo(dtype).min)
    return model(input_ids=input_ids, position_ids=position_ids, attention_mask=additive,
                 use_cache=False).logits


def tool_rows(conversations) -> list[dict]:
    """Dataset rows of tool conversations as TRL-style datasets hold them: a ``messages`` column
    and, when the conversation offers tools, a ``tools`` column (copies: a library may edit
    them)."""
    from sft_conformance.reference.conversation import split

    out = []
    for conv in conversations:
        messages, tools = split(conv)
        row = {"messages": [dict(m) for m in messages]}
        if tools:
            row["tools"] = [dict(t) for t in tools]
        out.append(row)
    return out
