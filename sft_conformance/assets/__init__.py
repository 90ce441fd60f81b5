"""Offline assets: the bundled tokenizers, chat templates and the tiny causal LM.

Everything here is built from files shipped in the package or from code; nothing is downloaded.

>>> tok = load_tokenizer("chatml")
>>> tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
...                         add_generation_prompt=True)
'<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import json
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

# -- templates with tools ---------------------------------------------------------------------
#
# The agentic templates are written one statement a line and joined by :func:`jinja` (every tag
# trims the whitespace around it, so the layout never reaches the rendering). What a template
# renders around what the assistant produces is built by :func:`produced`: the same text with or
# without ``{% generation %}`` tags, so a ``-generation`` variant renders byte for byte as its
# plain template.


def jinja(source: str) -> str:
    """``source`` with its lines stripped and joined by one space: a template written one
    statement a line, indented for reading. Every tag of such a template trims the whitespace
    around it (``{%- -%}``, ``{{- -}}``), so the joining spaces never reach the rendering."""
    return " ".join(line.strip() for line in source.strip().splitlines() if line.strip())


def literal(text: str) -> str:
    """``text`` as a Jinja string literal (JSON's escapes are Jinja's)."""
    return json.dumps(text, ensure_ascii=False)


def produced(body: str, end: str, generation: bool) -> str:
    """The output statement for what the assistant produces: the expression ``body`` followed
    by the turn's end token ``end`` (an expression too), inside ``{% generation %}`` tags when
    ``generation``. One expression ending with the end token: the shape
    ``adapters.trl_sft.eot_outside`` rewrites."""
    if generation:
        return ("{%- generation -%}{{- " + body + " + " + end + " -}}{%- endgeneration -%}")
    return "{{- " + body + " + " + end + " -}}"


#: the tool preamble of the Qwen/Hermes system turn, as Qwen2.5's and Qwen3's public templates
#: write it: the schemas go between the two parts, one JSON object a line
QWEN_TOOLS_INTRO = ("# Tools\n\nYou may call one or more functions to assist with the user "
                    "query.\n\nYou are provided with function signatures within <tools></tools> "
                    "XML tags:\n<tools>")
QWEN_TOOLS_OUTRO = ("\n</tools>\n\nFor each function call, return a json object with function "
                    "name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                    '{"name": <function-name>, "arguments": <args-json-object>}\n'
                    "</tool_call><|im_end|>\n")


def chatml_tools_template(*, default_system: str | None = None, qwen3: bool = False,
                          generation: bool = False) -> str:
    """ChatML with tools, as the Qwen (Hermes-style) templates render them.

    * ``tools`` go into the system turn: the system message's content (or ``default_system``)
      and a blank line, then :data:`QWEN_TOOLS_INTRO`, one ``tojson`` schema a line,
      :data:`QWEN_TOOLS_OUTRO`. Without tools the system turn is the system message, or
      ``default_system``, or nothing.
    * An assistant turn is ``<|im_start|>assistant\n`` + content + its calls + ``<|im_end|>\n``;
      each call is ``<tool_call>\n{"name": "...", "arguments": ...}\n</tool_call>``, preceded by
      ``\n`` unless it is the first call of a turn without content. A call may be
      ``{"function": {...}}`` or the flat ``{"name", "arguments"}``.
    * ``arguments``: through ``tojson`` (Qwen2.5: a JSON string is encoded again, as the public
      template does), or with ``qwen3`` a string as it is and anything else through ``tojson``.
    * Tool messages are ``<tool_response>\n...\n</tool_response>`` inside a ``user`` turn;
      consecutive tool messages share one turn.
    * ``qwen3``: content that is not a string renders as ``""``; reasoning
      (``reasoning_content``, or the text before ``</think>`` in the content) renders as
      ``<think>\n...\n</think>\n\n`` on the assistant turns after the last real user query (a
      user message whose content is a ``<tool_response>...</tool_response>`` block is not one)
      that are the last message or have reasoning; ``enable_thinking=False`` appends an empty
      think block to the generation prompt.

    With ``generation``, the tags hold what the assistant produces: reasoning, content, calls and
    ``<|im_end|>``; never the header, the ``\n`` after ``<|im_end|>`` or a tool response."""
    system = literal(default_system) if default_system is not None else "none"
    content = ("message.content if message.content is string else ''" if qwen3
               else "message.content")
    arguments = ("call.arguments if call.arguments is string else call.arguments | tojson"
                 if qwen3 else "call.arguments | tojson")
    last_query = r"""
        {%- set query = namespace(index=messages|length - 1, found=false) -%}
        {%- for message in messages|reverse -%}
            {%- if not query.found and message.role == 'user' and message.content is string
                   and not (message.content.startswith('<tool_response>')
                            and message.content.endswith('</tool_response>')) -%}
                {%- set query.found = true -%}
                {%- set query.index = messages|length - loop.index -%}
            {%- endif -%}
        {%- endfor -%}
    """ if qwen3 else ""
    reasoning = r"""
            {%- if message.reasoning_content is string -%}
                {%- set turn.reasoning = message.reasoning_content -%}
            {%- elif '</think>' in turn.content -%}
                {%- set turn.reasoning = turn.content.split('</think>')[0].rstrip('\n')
                                         .split('<think>')[-1].lstrip('\n') -%}
                {%- set turn.content = turn.content.split('</think>')[-1].lstrip('\n') -%}
            {%- endif -%}
            {%- if loop.index0 > query.index and (loop.last or turn.reasoning) -%}
                {%- set turn.body = '<think>\n' + turn.reasoning.strip('\n') + '\n</think>\n\n'
                                    + turn.content.lstrip('\n') -%}
            {%- else -%}
                {%- set turn.body = turn.content -%}
            {%- endif -%}
    """ if qwen3 else r"""
            {%- set turn.body = (turn.content or '') if message.tool_calls else turn.content -%}
    """
    thinking_prompt = r"""
        {%- if enable_thinking is defined and enable_thinking is false -%}
            {{- '<think>\n\n</think>\n\n' -}}
        {%- endif -%}
    """ if qwen3 else ""
    return jinja(r"""
        {%- if messages and messages[0].role == 'system' -%}
            {%- set system_text = messages[0].content -%}
        {%- else -%}
            {%- set system_text = @SYSTEM@ -%}
        {%- endif -%}
        {%- if tools -%}
            {{- '<|im_start|>system\n' -}}
            {%- if system_text is not none -%}{{- system_text + '\n\n' -}}{%- endif -%}
            {{- @INTRO@ -}}
            {%- for tool in tools -%}{{- '\n' + tool | tojson -}}{%- endfor -%}
            {{- @OUTRO@ -}}
        {%- elif system_text is not none -%}
            {{- '<|im_start|>system\n' + system_text + '<|im_end|>\n' -}}
        {%- endif -%}
        @LAST_QUERY@
        {%- for message in messages -%}
        {%- if message.role == 'user' or (message.role == 'system' and not loop.first) -%}
            {{- '<|im_start|>' + message.role + '\n' + (@CONTENT@) + '<|im_end|>\n' -}}
        {%- elif message.role == 'assistant' -%}
            {%- set turn = namespace(content=(@CONTENT@), reasoning='', body='') -%}
            @REASONING@
            {%- for call in message.tool_calls or [] -%}
                {%- if call.function -%}{%- set call = call.function -%}{%- endif -%}
                {%- if turn.content or not loop.first -%}
                    {%- set turn.body = turn.body + '\n' -%}
                {%- endif -%}
                {%- set turn.body = turn.body + '<tool_call>\n{"name": "' + call.name|string
                                    + '", "arguments": ' + (@ARGUMENTS@)|string
                                    + '}\n</tool_call>' -%}
            {%- endfor -%}
            {{- '<|im_start|>assistant\n' -}}
            @PRODUCED@
            {{- '\n' -}}
        {%- elif message.role == 'tool' -%}
            {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}
                {{- '<|im_start|>user' -}}
            {%- endif -%}
            {{- '\n<tool_response>\n' + (@CONTENT@)|string + '\n</tool_response>' -}}
            {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}
                {{- '<|im_end|>\n' -}}
            {%- endif -%}
        {%- endif -%}
        {%- endfor -%}
        {%- if add_generation_prompt -%}
            {{- '<|im_start|>assistant\n' -}}
            @THINKING_PROMPT@
        {%- endif -%}
    """.replace("@SYSTEM@", system).replace("@INTRO@", literal(QWEN_TOOLS_INTRO))
        .replace("@OUTRO@", literal(QWEN_TOOLS_OUTRO)).replace("@LAST_QUERY@", last_query)
        .replace("@CONTENT@", content).replace("@REASONING@", reasoning)
        .replace("@ARGUMENTS@", arguments)
        .replace("@PRODUCED@", produced("turn.body", "'<|im_end|>'", generation))
        .replace("@THINKING_PROMPT@", thinking_prompt))


#: the date the Llama 3.1 template writes when the caller passes no ``date_string`` (the public
#: template's own default): renders are deterministic
LLAMA31_DATE = "26 Jul 2024"
LLAMA31_TOOLS_FORMAT = ('Respond in the format {"name": function name, "parameters": dictionary '
                        'of argument name and its value}.Do not use variables.\n\n')


def llama31_template(generation: bool = False) -> str:
    """Llama 3.1's tool rendering (Meta-Llama-3.1-8B-Instruct's public template) on the
    bundled BPE, custom tools only.

    * A system header always: ``Environment: ipython`` when ``tools`` are given, the
      ``Cutting Knowledge Date: December 2023`` and ``Today Date: {date_string}`` lines
      (:data:`LLAMA31_DATE` unless the caller passes ``date_string``), then the system message
      (trimmed). The schemas (``tojson(indent=4)``) go into the first user message by default
      (``tools_in_user_message=False`` puts them in the system header); ``custom_tools`` is
      read as ``tools``.
    * A call is bare JSON with the key ``parameters`` (``arguments`` through ``tojson``: a JSON
      string is encoded again), ending with ``<|eot_id|>``; one call per turn (more raise);
      content beside a call is dropped, as the public template drops it.
    * A ``tool`` (or ``ipython``) message renders under an ``ipython`` header, its content
      through ``tojson`` (a string gets quotes).
    * ``builtin_tools`` (``<|python_tag|>`` calls ending with ``<|eom_id|>``) raise: not
      implemented here.

    With ``generation``, the tags hold the content or the call and ``<|eot_id|>``."""
    header = "'<|start_header_id|>assistant<|end_header_id|>\\n\\n'"
    return jinja(r"""
        {{- bos_token -}}
        {%- if builtin_tools is defined -%}
            {{- raise_exception('the bundled llama3.1 template renders custom tools only: '
                                + 'builtin_tools is not implemented') -}}
        {%- endif -%}
        {%- if custom_tools is defined -%}
            {%- set tool_list = custom_tools -%}
        {%- elif tools is defined -%}
            {%- set tool_list = tools -%}
        {%- else -%}
            {%- set tool_list = none -%}
        {%- endif -%}
        {%- set tools_first = tools_in_user_message if tools_in_user_message is defined
                              else true -%}
        {%- if messages[0].role == 'system' -%}
            {%- set system_message = messages[0].content | trim -%}
            {%- set rest = messages[1:] -%}
        {%- else -%}
            {%- set system_message = '' -%}
            {%- set rest = messages -%}
        {%- endif -%}
        {{- '<|start_header_id|>system<|end_header_id|>\n\n' -}}
        {%- if tool_list is not none -%}{{- 'Environment: ipython\n' -}}{%- endif -%}
        {{- 'Cutting Knowledge Date: December 2023\n' -}}
        {{- 'Today Date: ' + (date_string if date_string is defined else @DATE@) + '\n\n' -}}
        {%- if tool_list is not none and not tools_first -%}
            {{- 'You have access to the following functions. To call a function, please '
                + 'respond with JSON for a function call.' + @FORMAT@ -}}
            {%- for tool in tool_list -%}{{- tool | tojson(indent=4) + '\n\n' -}}{%- endfor -%}
        {%- endif -%}
        {{- system_message + '<|eot_id|>' -}}
        {%- if tool_list is not none and tools_first -%}
            {%- if rest | length == 0 -%}
                {{- raise_exception("Cannot put tools in the first user message when there's "
                                    + "no first user message!") -}}
            {%- endif -%}
            {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
            {{- 'Given the following functions, please respond with a JSON for a function call '
                + 'with its proper arguments that best answers the given prompt.\n\n'
                + @FORMAT@ -}}
            {%- for tool in tool_list -%}{{- tool | tojson(indent=4) + '\n\n' -}}{%- endfor -%}
            {{- rest[0].content | trim + '<|eot_id|>' -}}
            {%- set rest = rest[1:] -%}
        {%- endif -%}
        {%- for message in rest -%}
        {%- if message.tool_calls -%}
            {%- if message.tool_calls | length != 1 -%}
                {{- raise_exception('This model only supports single tool-calls at once!') -}}
            {%- endif -%}
            {%- set call = message.tool_calls[0].function -%}
            {{- @HEADER@ -}}
            @CALL@
        {%- elif message.role == 'tool' or message.role == 'ipython' -%}
            {{- '<|start_header_id|>ipython<|end_header_id|>\n\n' -}}
            {%- if message.content is mapping or message.content is iterable -%}
                {{- message.content | tojson -}}
            {%- else -%}
                {{- message.content -}}
            {%- endif -%}
            {{- '<|eot_id|>' -}}
        {%- elif message.role == 'assistant' -%}
            {{- @HEADER@ -}}
            @CONTENT@
        {%- else -%}
            {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n'
                + message.content | trim + '<|eot_id|>' -}}
        {%- endif -%}
        {%- endfor -%}
        {%- if add_generation_prompt -%}{{- @HEADER@ -}}{%- endif -%}
    """.replace("@DATE@", literal(LLAMA31_DATE)).replace("@FORMAT@", literal(LLAMA31_TOOLS_FORMAT))
        .replace("@HEADER@", header)
        .replace("@CALL@", produced("'{\"name\": \"' + call.name + '\", \"parameters\": ' "
                                    "+ call.arguments | tojson + '}'", "'<|eot_id|>'",
                                    generation))
        .replace("@CONTENT@", produced("message.content | trim", "'<|eot_id|>'", generation)))


CHATML_TOOLS = chatml_tools_template()
CHATML_TOOLS_GENERATION = chatml_tools_template(generation=True)
LLAMA31 = llama31_template()
LLAMA31_GENERATION = llama31_template(generation=True)


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
        Template("chatml-tools", CHATML_TOOLS, "bpe", "<|im_end|>", "<pad>",
                 description="ChatML with tools as Qwen/Hermes render them (<tools> in the "
                             "system turn, <tool_call> JSON, <tool_response> in a user turn), "
                             "no default system prompt",
                 roles=("system", "user", "assistant", "tool")),
        Template("chatml-tools-generation", CHATML_TOOLS_GENERATION, "bpe", "<|im_end|>", "<pad>",
                 description="chatml-tools with {% generation %} tags around content, calls "
                             "and <|im_end|>",
                 has_generation_tags=True, roles=("system", "user", "assistant", "tool")),
        Template("llama3.1", LLAMA31, "bpe", "<|eot_id|>", "<pad>", bos_token="<|begin_of_text|>",
                 description="Llama 3.1 with tools: a system header with fixed dates, tools in "
                             "the first user message, one JSON call per turn ('parameters'), "
                             "results under an ipython header",
                 roles=("system", "user", "assistant", "tool")),
        Template("llama3.1-generation", LLAMA31_GENERATION, "bpe", "<|eot_id|>", "<pad>",
                 bos_token="<|begin_of_text|>",
                 description="llama3.1 with {% generation %} tags around content or call and "
                             "<|eot_id|>",
                 has_generation_tags=True, roles=("system", "user", "assistant", "tool")),
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

    from .shared import sharing_renderings

    if name in FAMILIES:
        from .families import load

        return sharing_renderings(load(name, pad_equals_eos=pad_equals_eos))
    if name not in TEMPLATES:
        path = Path(name)
        if path.is_dir():
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            if pad_equals_eos:
                tok.pad_token = tok.eos_token
            return sharing_renderings(tok)
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
    return sharing_renderings(tok)


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
    if _backend_vocabulary(clone):
        import types

        clone.get_vocab = types.MethodType(_shared_get_vocab, clone)
    return clone


#: each tokenizer backend's full size: ``{id(backend): (backend, base size, added count, size)}``
_SIZES: dict[int, tuple] = {}


def vocabulary_size(tok) -> int:
    """``len(tok)``, counted once per backend and vocabulary. A fast tokenizer's ``len`` builds
    its whole vocabulary in Rust on every call (84 ms on qwen2.5's 151k tokens in some builds of
    ``tokenizers``), and the checks key their caches by it on every call; the base size and the
    number of added tokens are cheap and change whenever the length can."""
    backend = getattr(tok, "_tokenizer", None)
    try:
        base, added = tok.vocab_size, len(tok.added_tokens_decoder)
    except Exception:
        return len(tok)
    if backend is None:
        return len(tok)
    entry = _SIZES.get(id(backend))
    if entry is None or entry[0] is not backend or entry[1:3] != (base, added):
        entry = (backend, base, added, len(tok))
        _SIZES.pop(id(backend), None)
        _SIZES[id(backend)] = entry
        while len(_SIZES) > 16:  # the newest backends only: each entry holds its backend
            _SIZES.pop(next(iter(_SIZES)))
    return entry[3]


#: each shared backend's vocabulary, built once per size: ``{id(backend): (backend, size, vocab)}``
_VOCABULARIES: dict[int, tuple] = {}


def _backend_vocabulary(tok) -> bool:
    """Whether ``tok.get_vocab()`` is its backend's vocabulary with the added tokens (the fast
    tokenizers' own method, not a class's override)."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return False
    return (isinstance(tok, TokenizersBackend)
            and type(tok).get_vocab is TokenizersBackend.get_vocab)


def _shared_get_vocab(self) -> dict[str, int]:
    """``get_vocab`` of a tokenizer copy: the shared backend's vocabulary, built once per size
    (added tokens included) and handed out as a new dict. The backend builds the dict from Rust
    on every call, 89 ms on qwen2.5's 151k tokens, and ``SFTTrainer.__init__`` asks twice (is the
    pad token, is the eos token in the vocabulary), so every ``collate`` of a TRL target paid it."""
    backend = self._tokenizer
    size = vocabulary_size(self)
    entry = _VOCABULARIES.get(id(backend))
    if entry is None or entry[0] is not backend or entry[1] != size:
        entry = (backend, size, type(self).get_vocab(self))
        _VOCABULARIES[id(backend)] = entry
    return dict(entry[2])


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
    from .shared import sharing_model_outputs

    return sharing_model_outputs(model.float().eval(), (config.to_json_string(), seed, folded))
