"""Work the processes of ``sft-conformance mutants`` keep between rows: chat-template
renderings and the check model's logits.

Every row of ``mutants`` runs the same checks with the same derandomized draws on our own
targets, most of which render and run the same conversations: a row re-renders the same
conversations through the same template and runs the same batches through the same tiny model
as the row before it. With sharing on, a tokenizer handed out by
:func:`sft_conformance.assets.load_tokenizer` answers a repeated text rendering
(``apply_chat_template(..., tokenize=False)``) from a process-wide store keyed by everything
the rendering reads (the template, the special tokens, the messages, tools and keyword
arguments), and the check model of :func:`sft_conformance.assets.tiny_model` answers a repeated
no-grad call from a store keyed by its construction and the call's tensors. The answers are the
very strings and numbers a fresh call gives (copies, never the stored objects), so no verdict
can change.

Off by default: a user's session keeps nothing between checks, and a user's target may change a
model or a tokenizer it is given; the ``mutants`` command, which runs only our own targets,
turns sharing on in its own processes (:func:`share`).
"""

from __future__ import annotations

import collections
import json

#: default budgets of the two stores (the oldest entries are dropped first)
RENDERINGS_BUDGET = 64 * 2**20  # characters of keys and renderings
MODEL_OUTPUTS_BUDGET = 512 * 2**20  # bytes of logits


class _Store:
    """A least-recently-used map with a budget: each entry costs ``size`` units."""

    def __init__(self, budget: int):
        self.budget = budget
        self.entries: collections.OrderedDict = collections.OrderedDict()
        self.used = 0
        self.hits = 0
        self.misses = 0

    def get(self, key):
        if key in self.entries:
            self.entries.move_to_end(key)
            self.hits += 1
            return self.entries[key][0]
        self.misses += 1
        return None

    def put(self, key, value, size: int) -> None:
        if size > self.budget or key in self.entries:
            return
        self.entries[key] = (value, size)
        self.used += size
        while self.used > self.budget:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.used -= dropped


_RENDERINGS: _Store | None = None
_MODEL_OUTPUTS: _Store | None = None


def share(renderings: int | None = RENDERINGS_BUDGET,
          model_outputs: int | None = MODEL_OUTPUTS_BUDGET) -> None:
    """Turn both stores on in this process with these budgets (``None`` turns one off and drops
    what it kept). Tokenizers and models made before the call are not affected."""
    global _RENDERINGS, _MODEL_OUTPUTS
    _RENDERINGS = None if renderings is None else (
        _RENDERINGS if _RENDERINGS is not None and _RENDERINGS.budget == renderings
        else _Store(renderings))
    _MODEL_OUTPUTS = None if model_outputs is None else (
        _MODEL_OUTPUTS if _MODEL_OUTPUTS is not None and _MODEL_OUTPUTS.budget == model_outputs
        else _Store(model_outputs))


def stats() -> dict:
    """``{store: (hits, misses)}`` of the stores that are on."""
    return {name: (store.hits, store.misses)
            for name, store in (("renderings", _RENDERINGS), ("model_outputs", _MODEL_OUTPUTS))
            if store is not None}


# -- renderings -----------------------------------------------------------------------------------

_RENDERING_CLASSES: dict[type, type] = {}
#: each chat template seen while sharing, numbered
_TEMPLATES: dict[str, int] = {}
#: the keyword arguments of apply_chat_template that change what a text rendering is
_RENDER_ARGUMENTS = ("documents", "chat_template", "add_generation_prompt",
                     "continue_final_message", "sanitize_control_tokens")
#: the keyword arguments that only matter when the rendering is tokenized
_TOKENIZE_ARGUMENTS = ("padding", "truncation", "max_length", "return_tensors", "return_dict",
                       "tokenizer_kwargs")


def _rendering_key(tok, conversation, tools, kwargs):
    """What a text rendering reads, as one hashable value; None where it cannot be said (then
    the call is not shared)."""
    if kwargs.get("tokenize", True) is not False or kwargs.get("return_assistant_tokens_mask"):
        return None
    extra = {k: v for k, v in kwargs.items() if k not in ("tokenize",) + _TOKENIZE_ARGUMENTS}
    template = tok.chat_template
    try:
        if not isinstance(template, str):
            template = json.dumps(template, sort_keys=True)
        # a template is a long string: its number stands for it in the key
        number = _TEMPLATES.setdefault(template, len(_TEMPLATES))
        return number, json.dumps([tok.special_tokens_map, conversation, tools, extra],
                                  sort_keys=True)
    except (TypeError, ValueError):  # a callable tool, a message object: render it anew
        return None


def _rendering_class(cls: type) -> type:
    """``cls`` with an ``apply_chat_template`` that shares text renderings (same name)."""
    if cls not in _RENDERING_CLASSES:
        def apply_chat_template(self, conversation, tools=None, *args, **kwargs):
            store = _RENDERINGS
            key = None if store is None or args else _rendering_key(self, conversation, tools,
                                                                    kwargs)
            if key is None:
                return super(shared_class, self).apply_chat_template(conversation, tools, *args,
                                                                     **kwargs)
            found = store.get(key)
            if found is None:
                found = super(shared_class, self).apply_chat_template(conversation, tools,
                                                                      **kwargs)
                if isinstance(found, str):
                    store.put(key, found, len(key[1]) + len(found))
            return found

        def __call__(self, text=None, *args, **kwargs):
            store = _RENDERINGS
            key = None if store is None or args else _encoding_key(self, text, kwargs)
            if key is None:
                return super(shared_class, self).__call__(text, *args, **kwargs)
            found = store.get(key)
            if found is None:
                found = super(shared_class, self).__call__(text, **kwargs)
                store.put(key, found, 2 * len(text) + 8 * len(found["input_ids"]))
            return _fresh_encoding(found)

        shared_class = type(cls.__name__, (cls,), {"apply_chat_template": apply_chat_template,
                                                   "__call__": __call__,
                                                   "__module__": cls.__module__,
                                                   "__qualname__": cls.__qualname__})
        _RENDERING_CLASSES[cls] = shared_class
    return _RENDERING_CLASSES[cls]


#: the keyword arguments of a tokenizer call whose encodings are shared
_ENCODING_ARGUMENTS = {"add_special_tokens", "return_offsets_mapping"}
#: ``{id(backend): (backend, fingerprint)}`` of the last few Rust backends seen
_FINGERPRINTS: collections.OrderedDict = collections.OrderedDict()


def _fingerprint(tok) -> str | None:
    """What a tokenizer's encoding of a text reads: its Rust backend (vocabulary, merges,
    normalizer, pre-tokenizer, post-processor, added tokens), serialized and hashed once per
    backend; None for a tokenizer without one."""
    import hashlib

    backend = getattr(tok, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    key = id(backend)
    if key in _FINGERPRINTS and _FINGERPRINTS[key][0] is backend:
        _FINGERPRINTS.move_to_end(key)
        return _FINGERPRINTS[key][1]
    found = hashlib.sha256(backend.to_str().encode()).hexdigest()
    found += f"|{getattr(tok, 'split_special_tokens', False)}"
    _FINGERPRINTS[key] = (backend, found)  # the reference keeps the id from being reused
    while len(_FINGERPRINTS) > 8:
        _FINGERPRINTS.popitem(last=False)
    return found


def _encoding_key(tok, text, kwargs):
    """A plain call on one text (``tok(text, add_special_tokens=..., return_offsets_mapping=
    ...)``), as one hashable value; None for any other call (not shared)."""
    if not isinstance(text, str) or not set(kwargs) <= _ENCODING_ARGUMENTS:
        return None
    fingerprint = _fingerprint(tok)
    if fingerprint is None:
        return None
    return (fingerprint, text, bool(kwargs.get("add_special_tokens", True)),
            bool(kwargs.get("return_offsets_mapping", False)))


def _fresh_encoding(found):
    """A copy of a stored encoding the caller may change (its lists are its own)."""
    from transformers import BatchEncoding

    return BatchEncoding({k: list(v) if isinstance(v, list) else v for k, v in found.items()},
                         encoding=found.encodings)


def sharing_renderings(tok):
    """``tok`` itself; while sharing is on, made to share its text renderings (copies of it
    share them too, each under its own template and special tokens)."""
    if _RENDERINGS is None or type(tok) in _RENDERING_CLASSES.values():
        return tok
    if not callable(getattr(tok, "apply_chat_template", None)):
        return tok
    tok.__class__ = _rendering_class(type(tok))
    return tok


# -- model outputs --------------------------------------------------------------------------------

_MODEL_CLASSES: dict[type, type] = {}
_TENSOR_INPUTS = ("input_ids", "attention_mask", "position_ids")


def _call_key(model, args, kwargs):
    import torch

    if args or torch.is_grad_enabled() or model.training:
        return None
    if any(torch.is_autocast_enabled(device) for device in ("cpu", "cuda")):
        return None
    parts = [model._sft_shared_key, str(next(model.parameters()).dtype)]
    for name in sorted(kwargs):
        value = kwargs[name]
        if name in _TENSOR_INPUTS and isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            parts.append((name, str(value.dtype), tuple(value.shape),
                          value.numpy().tobytes() if value.dtype != torch.bfloat16
                          else value.float().numpy().tobytes()))
        elif name in _TENSOR_INPUTS + ("use_cache",) and (value is None or isinstance(value, bool)):
            parts.append((name, value))
        else:
            return None
    return tuple(parts)


def _model_class(cls: type) -> type:
    """``cls`` with a ``forward`` that shares the logits of repeated no-grad calls."""
    if cls not in _MODEL_CLASSES:
        def forward(self, *args, **kwargs):
            store = _MODEL_OUTPUTS
            key = None if store is None else _call_key(self, args, kwargs)
            if key is None:
                return super(shared_class, self).forward(*args, **kwargs)
            logits = store.get(key)
            if logits is None:
                out = super(shared_class, self).forward(**kwargs)
                logits = out.logits.detach().clone()
                store.put(key, logits, logits.numel() * logits.element_size())
                return out
            return _output(logits.clone())

        shared_class = type(cls.__name__, (cls,), {"forward": forward,
                                                   "__module__": cls.__module__,
                                                   "__qualname__": cls.__qualname__})
        _MODEL_CLASSES[cls] = shared_class
    return _MODEL_CLASSES[cls]


def _output(logits):
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return CausalLMOutputWithPast(logits=logits)


def sharing_model_outputs(model, key: tuple):
    """``model`` itself; while sharing is on, made to share the logits of its no-grad,
    no-autocast calls with every model built with the same ``key`` (its construction: config,
    seed, vocabulary)."""
    if _MODEL_OUTPUTS is None:
        return model
    model._sft_shared_key = repr(key)
    model.__class__ = _model_class(type(model))
    return model
