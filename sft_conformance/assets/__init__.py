"""Offline assets: the bundled tokenizers, chat templates and the tiny causal LM.

Everything here is built from files shipped in the package or from code; nothing is downloaded.

>>> tok = load_tokenizer("chatml")
>>> tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
...                         add_generation_prompt=True)
'<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent
BPE_FILE = ASSET_DIR / "bpe.json"

#: Special tokens of the bundled byte-level BPE, shared by all its templates.
SPECIAL_TOKENS = (
    "<pad>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)


@dataclass(frozen=True)
class Template:
    """A chat template bundled with the package and the tokenizer it runs on."""

    name: str
    source: str
    tokenizer: str  # "bpe" or "char"
    eos_token: str  # the end-of-turn token, also the tokenizer's eos
    pad_token: str
    bos_token: str | None = None
    description: str = ""
    has_generation_tags: bool = False
    roles: tuple[str, ...] = field(default=("system", "user", "assistant"))


CHATML = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

CHATML_GENERATION = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

LLAMA3 = (
    "{{- '<|begin_of_text|>' -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- endif -%}"
)

SEED000 = (
    "{%- for message in messages -%}"
    "{%- if not loop.first %} {% endif -%}"
    "{{- '<|' + message['role'] + '|> ' + message['content'] + ' <|end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- ' <|assistant|>' -}}{%- endif -%}"
)

SEED001 = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- '<' + message['content'] -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- '>' + message['content'] + '#' -}}"
    "{%- else -%}{{- raise_exception('the seed-001 template has only user and assistant turns') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '>' -}}{%- endif -%}"
)

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("chatml", CHATML, "bpe", "<|im_end|>", "<pad>",
                 description="ChatML (<|im_start|>role ... <|im_end|>), no generation tags"),
        Template("chatml-generation", CHATML_GENERATION, "bpe", "<|im_end|>", "<pad>",
                 description="ChatML with {% generation %} tags around content and <|im_end|>",
                 has_generation_tags=True),
        Template("llama3", LLAMA3, "bpe", "<|eot_id|>", "<pad>", bos_token="<|begin_of_text|>",
                 description="Llama-3-style headers, content trimmed, <|eot_id|> ends a turn"),
        Template("seed000", SEED000, "bpe", "<|end|>", "<pad>",
                 description="seed 000: <|user|> ... <|end|> <|assistant|> ... <|end|>"),
        Template("seed001", SEED001, "char", "#", "_", roles=("user", "assistant"),
                 description="seed 001: character tokenizer, '<' user, '>' assistant, '#' end"),
    )
}

#: Characters of the seed-001 tokenizer: the three specials, then the ordinary symbols.
CHAR_SPECIALS = ("<", ">", "#")
CHAR_SYMBOLS = tuple("abcdefghijklmnopqrstuvwxyz0123456789+=;{} ")


def template_names() -> list[str]:
    return list(TEMPLATES)


def tokenizer_names() -> list[str]:
    """Every bundled name: the templates on the bundled vocabularies, then the real families
    (:mod:`sft_conformance.assets.families`, behind the ``tokenizers`` extra)."""
    from .families import family_names

    return template_names() + family_names()


def _char_tokenizer_object():
    from tokenizers import Tokenizer, decoders, models

    vocab = {"_": 0, "?": 1}
    for ch in CHAR_SPECIALS + CHAR_SYMBOLS:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="?"))
    tok.decoder = decoders.Fuse()
    return tok


def load_tokenizer(name: str = "chatml", *, pad_equals_eos: bool = False):
    """Return a fast Hugging Face tokenizer with the named bundled chat template.

    ``name`` is one of :func:`tokenizer_names` (a real family is built from its registry
    package at first use and cached), or a local directory holding a tokenizer saved with
    ``save_pretrained`` (its own chat template is used). ``pad_equals_eos`` makes the pad token the
    end-of-turn token, the setting behind S4 bugs.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from .families import FAMILIES

    if name in FAMILIES:
        from .families import load

        return load(name, pad_equals_eos=pad_equals_eos)
    if name not in TEMPLATES:
        path = Path(name)
        if path.is_dir():
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            if pad_equals_eos:
                tok.pad_token = tok.eos_token
            return tok
        raise ValueError(
            f"unknown tokenizer {name!r}: expected one of {', '.join(tokenizer_names())} "
            "or the path of a local tokenizer directory"
        )
    spec = TEMPLATES[name]
    if spec.tokenizer == "bpe":
        kwargs = {"tokenizer_file": str(BPE_FILE)}
        specials = list(SPECIAL_TOKENS)
    else:
        kwargs = {"tokenizer_object": _char_tokenizer_object()}
        specials = list(CHAR_SPECIALS)
    tok = PreTrainedTokenizerFast(
        **kwargs,
        eos_token=spec.eos_token,
        pad_token=spec.eos_token if pad_equals_eos else spec.pad_token,
        bos_token=spec.bos_token,
        unk_token="?" if spec.tokenizer == "char" else None,
        additional_special_tokens=[s for s in specials
                                   if s not in {spec.eos_token, spec.pad_token}],
        chat_template=spec.source,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    if spec.bos_token is not None:
        _add_bos_on_encode(tok, spec.bos_token)
    tok.name_or_path = f"sft-conformance/{name}" + ("+pad=eos" if pad_equals_eos else "")
    return tok


def _add_bos_on_encode(tok, bos: str) -> None:
    """``tokenizer(text)`` adds ``bos`` in front, as the real tokenizer the template stands for
    does (Llama 3's ``TemplateProcessing`` post-processor); ``add_special_tokens=False``, which
    ``apply_chat_template`` and the reference use, adds nothing. A collator that tokenizes a
    rendered conversation with the default ``add_special_tokens=True`` gets the double BOS it
    would get on the real tokenizer (sglang PR #888)."""
    from tokenizers import processors

    bos_id = tok.convert_tokens_to_ids(bos)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])


#: the model-level checks (S5, S8, S12) fold a larger vocabulary onto this many rows
CHECK_MODEL_VOCAB = 4096


def _folded_embedding_class():
    import torch

    class FoldedEmbedding(torch.nn.Embedding):
        """An embedding table of ``num_embeddings`` rows read at ``id % num_embeddings``: ids
        of a vocabulary of any size on a small table (distinct tokens may share a row)."""

        def forward(self, input_ids):
            return super().forward(input_ids.remainder(self.num_embeddings))

    return FoldedEmbedding


def copy_tokenizer(tok):
    """A copy of ``tok`` whose Python-side settings (pad token, padding side, template, ...) are
    its own, for code that sets them (a trainer that sets pad = eos on the tokenizer it gets).

    A fast tokenizer's Rust backend is shared, not copied: transformers configures padding and
    truncation on it anew for every call, and a deep copy of a 151k-token backend costs seconds
    where this costs milliseconds. The Python-side vocabulary and merges some tokenizer classes
    keep after construction (``_vocab``, ``_merges``: a SentencePiece conversion's 32k entries)
    are left out of the copy where the class uses them only to build the backend: the backend
    holds them, and ``datasets`` hashes every attribute of a tokenizer for each ``map`` a trainer
    runs (0.9 s per hash on Mistral with them, 0.1 s without). Other tokenizers are
    deep-copied."""
    import copy

    backend = getattr(tok, "_tokenizer", None)
    if backend is None:
        return copy.deepcopy(tok)
    left_out = {"_tokenizer": backend}
    if _construction_only_vocabulary(tok):
        left_out.update((k, tok.__dict__[k]) for k in ("_vocab", "_merges") if k in tok.__dict__)
    for key in left_out:
        setattr(tok, key, None)
    try:
        clone = copy.deepcopy(tok)
    finally:
        for key, value in left_out.items():
            setattr(tok, key, value)
    clone._tokenizer = backend
    return clone


def _construction_only_vocabulary(tok) -> bool:
    """Whether ``tok``'s class reads ``_vocab``/``_merges`` only while building its backend:
    it saves through the generic fast-tokenizer path (``tokenizer.json``), not a
    ``save_vocabulary`` of its own that writes them out (Whisper's does)."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return False
    return (isinstance(tok, TokenizersBackend)
            and type(tok).save_vocabulary is TokenizersBackend.save_vocabulary)


def tiny_model(tokenizer, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
               attn_implementation: str = "sdpa", max_positions: int = 2048,
               max_vocab: int | None = None):
    """A tiny randomly initialised Llama-architecture causal LM sized to ``tokenizer``.

    Built from a config with a fixed seed, in float32 and eval mode; no weights are downloaded.
    ``max_vocab``: when the tokenizer has more tokens, the model has ``max_vocab`` embedding rows
    read at ``id % max_vocab`` and ``max_vocab`` logits (the model-level checks compare logits of
    the same tokens, so a 151k-token vocabulary need not cost 151k-wide embeddings and logits;
    training needs the full width and leaves it unset).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = len(tokenizer)
    folded = max_vocab is not None and vocab > max_vocab
    if folded:
        vocab = max_vocab

    def fold(token_id):
        return None if token_id is None else token_id % vocab

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        pad_token_id=fold(tokenizer.pad_token_id),
        eos_token_id=fold(tokenizer.eos_token_id),
        bos_token_id=fold(tokenizer.bos_token_id),
        attn_implementation=attn_implementation,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    if folded:
        table = _folded_embedding_class()(vocab, hidden_size)
        table.weight.data.copy_(model.model.embed_tokens.weight.data)
        model.model.embed_tokens = table
    return model.float().eval()
