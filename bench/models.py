"""Models built from configs (no weights needed for throughput) and the attention backends.

``tiny`` is the bundled tiny Llama. ``qwen2.5-0.5b`` and ``llama-3.2-1b`` are the published shapes
of those models (hidden size, layers, heads, vocabulary), randomly initialised. Anything else is a
local path: a directory with ``config.json`` (weights are loaded when present), or a config file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .attention import choose_attention, flash_attn_available  # noqa: F401 (re-exported)

SHAPES = {
    # Qwen/Qwen2.5-0.5B config.json
    "qwen2.5-0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
                     "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 32768, "rope_theta": 1000000.0,
                     "rms_norm_eps": 1e-6, "tie_word_embeddings": True},
    # meta-llama/Llama-3.2-1B config.json (the llama3 rope scaling does not change the FLOPs)
    "llama-3.2-1b": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
                     "num_hidden_layers": 16, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "vocab_size": 128256, "head_dim": 64,
                     "max_position_embeddings": 131072, "rope_theta": 500000.0,
                     "rms_norm_eps": 1e-5, "tie_word_embeddings": True},
}


def _config_from(spec: str, tokenizer, attn: str):
    from transformers import AutoConfig

    if spec in SHAPES:
        d = dict(SHAPES[spec])
        return AutoConfig.for_model(d.pop("model_type"), **d, attn_implementation=attn), None
    path = Path(spec)
    if path.is_file():
        d = json.loads(path.read_text())
        return AutoConfig.for_model(d.pop("model_type"), **d, attn_implementation=attn), None
    if path.is_dir() and (path / "config.json").exists():
        config = AutoConfig.from_pretrained(str(path), local_files_only=True,
                                            attn_implementation=attn)
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        return config, (str(path) if has_weights else None)
    raise ValueError(f"unknown model {spec!r}: expected tiny, {', '.join(SHAPES)}, a directory "
                     "with config.json or a config JSON file")


def build_model(spec: str, tokenizer, *, device: str, dtype: torch.dtype, attn: str = "sdpa",
                seed: int = 0):
    """Return ``(model, description)``; random init from the config unless weights exist."""
    from transformers import AutoModelForCausalLM

    if spec == "tiny":
        from sft_conformance.assets import tiny_model

        model = tiny_model(tokenizer, seed=seed, hidden_size=64, num_layers=2,
                           attn_implementation=attn)
        source = "bundled tiny Llama (hidden 64, 2 layers), random init"
    elif spec == "tiny-wide":
        from sft_conformance.assets import tiny_model

        model = tiny_model(tokenizer, seed=seed, hidden_size=256, num_layers=4,
                           attn_implementation=attn)
        source = "bundled tiny Llama (hidden 256, 4 layers), random init"
    else:
        config, weights = _config_from(spec, tokenizer, attn)
        if config.vocab_size < len(tokenizer):
            raise ValueError(f"model vocabulary {config.vocab_size} is smaller than the "
                             f"tokenizer's {len(tokenizer)}")
        if weights:
            model = AutoModelForCausalLM.from_pretrained(weights, local_files_only=True,
                                                         torch_dtype=dtype,
                                                         attn_implementation=attn)
            source = f"checkpoint {weights}"
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
            source = f"shape of {spec}, random init from config"
    model = model.to(device=device, dtype=dtype)
    model.train()
    return model, source


def model_shape(model) -> dict:
    """Sizes for the FLOPs formula: parameters (embedding excluded), layers, width, vocabulary."""
    cfg = model.config
    d = cfg.hidden_size
    vocab = cfg.vocab_size
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    non_embedding = total - embed - (0 if tied else vocab * d)
    return {"params_total": total, "params_non_embedding": non_embedding,
            "params_matmul": non_embedding + vocab * d, "layers": cfg.num_hidden_layers,
            "hidden_size": d, "vocab_size": vocab, "tied_embeddings": tied,
            "model_type": cfg.model_type}


def _output(model, hidden: bool, **kwargs) -> torch.Tensor:
    """The logits of ``model``, or the last hidden states of its decoder (``hidden``)."""
    if hidden:
        return model.get_decoder()(**kwargs).last_hidden_state
    return model(**kwargs).logits


def block_causal_forward(model, batch, hidden: bool = False) -> torch.Tensor:
    """The reference trainer's feed (``reference.accumulation.forward``): an explicit additive
    block-diagonal causal mask from ``document_ids``; logits, or hidden states."""
    from sft_conformance.reference.accumulation import model_inputs

    return _output(model, hidden, **model_inputs(model, batch))


def forward_fn(backend: str, *, compile: bool | None = None, hidden: bool = False):
    """How a batch is fed to the model for a given attention backend; returns a callable.

    The callable returns the logits, or with ``hidden`` the last hidden states of the decoder
    (``model.get_decoder()``; the chunked and fused losses apply the output projection).
    ``flex_attention``: the model must run :data:`bench.flex.ATTN_NAME` (``bench.flex.register``
    and ``model.set_attn_implementation``); the document ``BlockMask`` is built on the batch's
    device from ``document_ids``, and ``compile`` (default: on CUDA only) picks the compiled
    kernel or eager ``flex_attention``. ``flash_attention_2`` and ``torch_varlen``: flattened
    batches carry explicit varlen arguments (:func:`bench.strategies.varlen_kwargs`).
    """
    if backend == "sdpa+block_causal_4d":
        # explicit block-diagonal causal mask from document_ids
        return lambda model, batch: block_causal_forward(model, batch, hidden)

    if backend == "flex_attention":
        from .flex import default_compile, document_block_mask

        def flex_forward(model, batch):
            ids = batch["input_ids"]
            docs = batch.get("document_ids")
            if docs is None:  # a padded row: one document per row, padding apart
                docs = torch.where(batch["attention_mask"].bool(), 0, -1)
            on = default_compile(ids.device) if compile is None else compile
            mask = document_block_mask(docs, device=ids.device, compile=on)
            return _output(model, hidden, input_ids=ids, position_ids=batch["position_ids"],
                           attention_mask=mask, use_cache=False, flex_compile=on)
        return flex_forward

    if backend in ("flash_attention_2", "torch_varlen"):
        from .strategies import varlen_kwargs

        def packed_forward(model, batch):
            if "document_ids" in batch:
                # no attention mask; explicit cu_seqlens / max_seqlen. Position ids alone are
                # enough for one row only: with several rows transformers runs the dense causal
                # kernel (documents leak). use_cache=False: with a KV cache transformers skips
                # its packed-sequence handling altogether.
                return _output(model, hidden, input_ids=batch["input_ids"],
                               position_ids=batch["position_ids"], use_cache=False,
                               **varlen_kwargs(batch))
            return _output(model, hidden, input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"],
                           position_ids=batch["position_ids"], use_cache=False)
        return packed_forward

    def padded_forward(model, batch):
        return _output(model, hidden, input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"], use_cache=False)
    return padded_forward
