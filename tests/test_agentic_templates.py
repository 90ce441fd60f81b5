"""Agentic conversations on the bundled templates (issue 23, item 2): tools, tool calls, tool
results and reasoning render as the public templates do, pinned by golden strings (the public
templates' renderings of the standard example, quoted as rendered), and the ``-generation``
variants tag what
the assistant produces: content, calls with their wrappers, reasoning and the turn's end token;
never a header, a tool result or prompt-side scaffolding.

The templates are driven through ``tokenizer.apply_chat_template`` directly (the reference's
conversation validation does not take tool messages yet). Real families need the ``tokenizers``
extra and are skipped without it."""

from __future__ import annotations

import functools
import json

import pytest
from jinja2.exceptions import TemplateError
from samples import installed  # noqa: E402

from sft_conformance.assets import TEMPLATES, load_tokenizer
from sft_conformance.assets import families as fam

# -- the conversations ---------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TOOLS = [WEATHER]
PARIS = {"city": "Paris"}
PARIS_JSON = '{"city": "Paris"}'


def call(arguments=PARIS, call_id="abc123def", city=None):
    if city is not None:
        arguments = {"city": city}
    return {"type": "function", "id": call_id,
            "function": {"name": "get_weather", "arguments": arguments}}


def standard(arguments=PARIS, content=None):
    """AGENTIC.md §3's example: user asks, assistant calls get_weather(city="Paris"), the tool
    returns 22C, the assistant answers."""
    return [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": content, "tool_calls": [call(arguments)]},
            {"role": "tool", "content": "22C", "tool_call_id": "abc123def"},
            {"role": "assistant", "content": "It is 22C."}]


def parallel(as_json=False):
    """Two calls in one turn, then two consecutive tool messages."""
    def one(city, call_id):
        return call(json.dumps({"city": city}) if as_json else {"city": city}, call_id)

    return [{"role": "user", "content": "Paris and Rome?"},
            {"role": "assistant", "content": None,
             "tool_calls": [one("Paris", "abc123def"), one("Rome", "xyz789ghi")]},
            {"role": "tool", "content": "22C", "tool_call_id": "abc123def"},
            {"role": "tool", "content": "18C", "tool_call_id": "xyz789ghi"},
            {"role": "assistant", "content": "22C and 18C."}]


# -- tokenizers ----------------------------------------------------------------------------------

def _installed(package: str) -> bool:
    return installed(package)


@functools.cache
def _load(name: str):
    return load_tokenizer(name)


def tokenizer_for(name: str):
    """The tokenizer ``name`` (a real family is skipped when its package is missing)."""
    if name in fam.FAMILIES and not _installed(fam.FAMILIES[name].package):
        pytest.skip(f"{name} needs {fam.FAMILIES[name].package}: {fam.INSTALL_HINT}")
    return _load(name)


def tagged_source(name: str) -> str:
    """The ``{% generation %}``-tagged variant's template of ``name``."""
    tagged = f"{name}-generation"
    return TEMPLATES[tagged].source if tagged in TEMPLATES else fam.FAMILIES[tagged].template


def render(name, conv, **kwargs) -> str:
    """``name``'s rendering of ``conv``; its tagged variant must render the same text."""
    t = tokenizer_for(name)
    text = t.apply_chat_template(conv, tokenize=False, **kwargs)
    assert t.apply_chat_template(conv, tokenize=False, chat_template=tagged_source(name),
                                 **kwargs) == text
    return text


def trained(name, conv, **kwargs) -> list[str]:
    """The runs of tokens the tagged variant's ``return_assistant_tokens_mask`` marks, decoded
    (the ids being those of the plain rendering)."""
    t = tokenizer_for(name)
    out = t.apply_chat_template(conv, chat_template=tagged_source(name), tokenize=True,
                                return_dict=True, return_assistant_tokens_mask=True, **kwargs)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert ids == t(render(name, conv, **kwargs), add_special_tokens=False)["input_ids"]
    runs, run = [], []
    for token, marked in zip(ids, mask):
        if marked:
            run.append(token)
        elif run:
            runs.append(t.decode(run))
            run = []
    if run:
        runs.append(t.decode(run))
    return runs


QWEN_FAMILIES = ["qwen2.5", "qwen3", "chatml-tools"]
ALL = ["qwen2.5", "qwen3", "deepseek", "mistral", "chatml-tools", "llama3.1"]

# -- golden strings ------------------------------------------------------------------------------

QWEN_DEFAULT = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                "assistant.<|im_end|>\n")
QWEN_TOOLS_BLOCK = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are "
    "provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Get weather", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, '
    '"required": ["city"]}}}\n</tools>\n\nFor each function call, return a json object with '
    "function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n')
QWEN_CHAIN = (
    '<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{"name": '
    '"get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>user\n'
    "<tool_response>\n22C\n</tool_response><|im_end|>\n<|im_start|>assistant\n")

#: AGENTIC.md §3.1, Qwen2.5 without tools (the default system prompt is injected)
AGENTIC_QWEN25 = '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n<|im_start|>assistant\nIt is 22C.<|im_end|>\n'  # noqa: E501
#: AGENTIC.md §3.2, Qwen3 without reasoning or tools
AGENTIC_QWEN3 = '<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nIt is 22C.<|im_end|>\n'  # noqa: E501
#: AGENTIC.md §3.5, DeepSeek with string arguments
AGENTIC_DEEPSEEK = '<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>22C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>It is 22C.<｜end▁of▁sentence｜>'  # noqa: E501
#: AGENTIC.md §3.4, Mistral v0.3 with tools; its elided "parameters": {…} filled in
AGENTIC_MISTRAL = '<s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "Get weather", "parameters": {…}}}][/AVAILABLE_TOOLS][INST] Weather in Paris?[/INST][TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123def"}]</s>[TOOL_RESULTS] {"content": 22C, "call_id": "abc123def"}[/TOOL_RESULTS] It is 22C.</s>'.replace(  # noqa: E501
    "{…}", json.dumps(WEATHER["function"]["parameters"]))
#: AGENTIC.md §3.3, Llama 3.1 with tools in the first user message; the elided schema filled in
AGENTIC_LLAMA31 = '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\nRespond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.\n\n{\n    "type": "function",\n    …\n}\n\nWeather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n"22C"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nIt is 22C.<|eot_id|>'.replace(  # noqa: E501
    '{\n    "type": "function",\n    …\n}', json.dumps(WEATHER, indent=4))
LLAMA31_SYSTEM = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting "
                  "Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>")
LLAMA31_CHAIN = (
    '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": '
    '{"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n"22C"<|eot_id|>'
    "<|start_header_id|>assistant<|end_header_id|>\n\nIt is 22C.<|eot_id|>")
DEEPSEEK_OUTPUTS = ("<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>22C<｜tool▁output▁end｜>"
                    "<｜tool▁outputs▁end｜>It is 22C.<｜end▁of▁sentence｜>")
DEEPSEEK_CALL = ('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n'
                 '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
                 "<｜end▁of▁sentence｜>")
MISTRAL_CALL = ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, '
                '"id": "abc123def"}]</s>')
MISTRAL_RESULT = '[TOOL_RESULTS] {"content": 22C, "call_id": "abc123def"}[/TOOL_RESULTS]'


def _args(name):
    """The standard example's arguments for ``name``: DeepSeek's template takes a JSON string
    only."""
    return PARIS_JSON if name == "deepseek" else PARIS


#: (a) the standard example without tools
STANDARD = {
    "qwen2.5": AGENTIC_QWEN25,
    "qwen3": AGENTIC_QWEN3,
    "chatml-tools": QWEN_CHAIN + "It is 22C.<|im_end|>\n",
    "deepseek": AGENTIC_DEEPSEEK,
    "mistral": "<s>[INST] Weather in Paris?[/INST]" + MISTRAL_CALL + MISTRAL_RESULT
               + " It is 22C.</s>",
    "llama3.1": LLAMA31_SYSTEM + "<|start_header_id|>user<|end_header_id|>\n\nWeather in "
                "Paris?<|eot_id|>" + LLAMA31_CHAIN,
}

#: (b) the same with tools=[get_weather]
WITH_TOOLS = {
    "qwen2.5": QWEN_DEFAULT[:-len("<|im_end|>\n")] + "\n\n" + QWEN_TOOLS_BLOCK + QWEN_CHAIN
               + "It is 22C.<|im_end|>\n",
    "qwen3": "<|im_start|>system\n" + QWEN_TOOLS_BLOCK + AGENTIC_QWEN3,
    "chatml-tools": "<|im_start|>system\n" + QWEN_TOOLS_BLOCK + QWEN_CHAIN
                    + "It is 22C.<|im_end|>\n",
    # DeepSeek-V3's template does not render tool schemas
    "deepseek": AGENTIC_DEEPSEEK,
    "mistral": AGENTIC_MISTRAL,
    "llama3.1": AGENTIC_LLAMA31,
}


@pytest.mark.parametrize("name", ALL)
def test_standard_example_without_tools(name):
    assert render(name, standard(_args(name))) == STANDARD[name]


@pytest.mark.parametrize("name", ALL)
def test_standard_example_with_tools(name):
    assert render(name, standard(_args(name)), tools=TOOLS) == WITH_TOOLS[name]


def test_the_qwen_families_share_the_tool_rendering():
    assert fam.FAMILIES["qwen2.5-base"].template == fam.FAMILIES["qwen2.5"].template
    # a system message replaces the default prompt in front of the tools
    conv = [{"role": "system", "content": "Be brief."}, *standard()]
    head = "<|im_start|>system\nBe brief.\n\n" + QWEN_TOOLS_BLOCK
    for name in QWEN_FAMILIES:
        assert render(name, conv, tools=TOOLS).startswith(head + "<|im_start|>user\n")


# -- (c) parallel calls and consecutive tool messages --------------------------------------------

QWEN_PARALLEL = (
    '<|im_start|>user\nParis and Rome?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{"name": '
    '"get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": '
    '"get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n<|im_start|>user\n'
    "<tool_response>\n22C\n</tool_response>\n<tool_response>\n18C\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n")
PARALLEL = {
    "qwen2.5": QWEN_DEFAULT + QWEN_PARALLEL + "22C and 18C.<|im_end|>\n",
    "qwen3": QWEN_PARALLEL + "<think>\n\n</think>\n\n22C and 18C.<|im_end|>\n",
    "chatml-tools": QWEN_PARALLEL + "22C and 18C.<|im_end|>\n",
    "deepseek": "<｜begin▁of▁sentence｜><｜User｜>Paris and Rome?<｜Assistant｜>"
                "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                '{"city": "Paris"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function'
                '<｜tool▁sep｜>get_weather\n```json\n{"city": "Rome"}\n```<｜tool▁call▁end｜>'
                "<｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜tool▁outputs▁begin｜>"
                "<｜tool▁output▁begin｜>22C<｜tool▁output▁end｜><｜tool▁output▁begin｜>18C"
                "<｜tool▁output▁end｜><｜tool▁outputs▁end｜>22C and 18C.<｜end▁of▁sentence｜>",
    "mistral": '<s>[INST] Paris and Rome?[/INST][TOOL_CALLS] [{"name": "get_weather", '
               '"arguments": {"city": "Paris"}, "id": "abc123def"}, {"name": "get_weather", '
               '"arguments": {"city": "Rome"}, "id": "xyz789ghi"}]</s>[TOOL_RESULTS] '
               '{"content": 22C, "call_id": "abc123def"}[/TOOL_RESULTS][TOOL_RESULTS] '
               '{"content": 18C, "call_id": "xyz789ghi"}[/TOOL_RESULTS] 22C and 18C.</s>',
}


@pytest.mark.parametrize("name", list(PARALLEL))
def test_parallel_calls_and_consecutive_tool_messages(name):
    assert render(name, parallel(as_json=name == "deepseek")) == PARALLEL[name]


def test_llama31_refuses_parallel_calls():
    with pytest.raises(TemplateError, match="only supports single tool-calls"):
        tokenizer_for("llama3.1").apply_chat_template(parallel(), tokenize=False)


# -- (d) content beside a call -------------------------------------------------------------------

BESIDE = {  # kept: Qwen, chatml-tools, DeepSeek; dropped: Mistral, Llama 3.1 (as theirs do)
    "qwen2.5": AGENTIC_QWEN25.replace("assistant\n<tool_call>", "assistant\nLet me check.\n"
                                      "<tool_call>"),
    "qwen3": AGENTIC_QWEN3.replace("assistant\n<tool_call>", "assistant\nLet me check.\n"
                                   "<tool_call>"),
    "chatml-tools": STANDARD["chatml-tools"].replace("assistant\n<tool_call>",
                                                     "assistant\nLet me check.\n<tool_call>"),
    "deepseek": AGENTIC_DEEPSEEK.replace("<｜Assistant｜><｜tool▁calls▁begin｜>",
                                         "<｜Assistant｜>Let me check.<｜tool▁calls▁begin｜>"),
    "mistral": STANDARD["mistral"],
    "llama3.1": STANDARD["llama3.1"],
}


@pytest.mark.parametrize("name", ALL)
def test_content_beside_a_call(name):
    text = render(name, standard(_args(name), content="Let me check."))
    assert text == BESIDE[name]
    assert ("Let me check." in text) == (name not in ("mistral", "llama3.1"))


@pytest.mark.parametrize("name", ALL)
def test_empty_content_is_no_content(name):
    assert render(name, standard(_args(name), content="")) == STANDARD[name]


# -- (e) arguments given as a JSON string --------------------------------------------------------

DOUBLE = '"{\\"city\\": \\"Paris\\"}"'  # a JSON string encoded again by tojson
AS_STRING = {
    "qwen2.5": AGENTIC_QWEN25.replace('"arguments": {"city": "Paris"}', f'"arguments": {DOUBLE}'),
    "chatml-tools": STANDARD["chatml-tools"].replace('"arguments": {"city": "Paris"}',
                                                     f'"arguments": {DOUBLE}'),
    "qwen3": AGENTIC_QWEN3,  # a string is written as it is
    "deepseek": AGENTIC_DEEPSEEK,  # a string is what the template takes
    "mistral": STANDARD["mistral"].replace('"arguments": {"city": "Paris"}',
                                           f'"arguments": {DOUBLE}'),
    "llama3.1": STANDARD["llama3.1"].replace('"parameters": {"city": "Paris"}',
                                             f'"parameters": {DOUBLE}'),
}


@pytest.mark.parametrize("name", ALL)
def test_json_string_arguments(name):
    assert render(name, standard(PARIS_JSON)) == AS_STRING[name]


def test_qwen3_string_arguments_render_as_dict_arguments():
    assert render("qwen3", parallel(as_json=True)) == render("qwen3", parallel())


def test_deepseek_dict_arguments_raise_as_the_public_template_does():
    """DeepSeek-V3's template concatenates ``arguments`` as a string: a dict raises TypeError
    (transformers#45419); ours keeps that behaviour."""
    with pytest.raises(TypeError):
        tokenizer_for("deepseek").apply_chat_template(standard(PARIS), tokenize=False)


def test_flat_calls_where_the_qwen_templates_accept_them():
    flat = standard()
    flat[1] = {"role": "assistant", "content": None,
               "tool_calls": [{"name": "get_weather", "arguments": PARIS}]}
    for name in QWEN_FAMILIES:
        assert render(name, flat) == STANDARD[name]


# -- (f) Qwen3 reasoning and the last-query rule -------------------------------------------------

REASONED = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "reasoning_content": "need weather",
             "tool_calls": [call()]},
            {"role": "tool", "content": "22C"},
            {"role": "assistant", "content": "It is 22C.", "reasoning_content": "answer now"}]
LATER = [{"role": "user", "content": "Thanks!"},
         {"role": "assistant", "content": "You're welcome.", "reasoning_content": "be polite"}]
#: AGENTIC.md §3.2: both turns of the tool chain keep their reasoning ({…} filled in)
QWEN3_REASONED = '…<|im_start|>assistant\n<think>\nneed weather\n</think>\n\n<tool_call>\n{…}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\nanswer now\n</think>\n\nIt is 22C.<|im_end|>\n'.replace(  # noqa: E501
    "{…}", '{"name": "get_weather", "arguments": {"city": "Paris"}}').replace(
    "…", "<|im_start|>user\nWeather in Paris?<|im_end|>\n")
#: AGENTIC.md §3.2: after a later real user turn both earlier reasoning blocks disappear
QWEN3_LATER = (
    "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
    + '<|im_start|>assistant\n<tool_call>…</tool_call><|im_end|>\n…<|im_start|>assistant\nIt is 22C.<|im_end|>\n<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\n<think>\nbe polite\n</think>\n\nYou\'re welcome.<|im_end|>\n'.replace(  # noqa: E501
        "<tool_call>…</tool_call>",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    .replace("…", "<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n"))


def test_qwen3_keeps_reasoning_on_a_tool_chain():
    assert render("qwen3", REASONED) == QWEN3_REASONED


def test_qwen3_drops_reasoning_before_a_later_user_query():
    assert render("qwen3", REASONED + LATER) == QWEN3_LATER


def test_qwen3_a_tool_response_in_a_user_turn_is_not_a_query():
    """ShareGPT-style tool results (a user message that is a <tool_response> block) leave the
    last query where it was: the chain keeps its reasoning."""
    response = {"role": "user", "content": "<tool_response>\n22C\n</tool_response>"}
    sharegpt = [*REASONED[:2], response, REASONED[3]]
    assert render("qwen3", sharegpt) == QWEN3_REASONED


def test_qwen3_reasoning_from_the_content():
    inline = [REASONED[0], {"role": "assistant", "content": "<think>\nneed weather\n</think>\n\n",
                            "tool_calls": [call()]},
              REASONED[2], {"role": "assistant", "content": "<think>answer now</think>It is 22C."}]
    assert render("qwen3", inline) == QWEN3_REASONED


def test_qwen3_is_not_prefix_stable_on_a_final_call_turn():
    """The last message gets an (empty) think block that the whole conversation does not give
    it (AGENTIC.md §3.2, open-instruct#1800): a collator that renders prefixes must not count
    on them; the prompt with the generation prompt is a prefix."""
    full = render("qwen3", standard())
    prefix = render("qwen3", standard()[:2])
    assert prefix.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n"
                           '{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                           "</tool_call><|im_end|>\n")
    assert not full.startswith(prefix)
    assert full.startswith(render("qwen3", standard()[:1], add_generation_prompt=True))


def test_qwen3_enable_thinking_false_only_changes_the_generation_prompt():
    conv = standard()[:3]
    on = render("qwen3", conv, add_generation_prompt=True)
    off = render("qwen3", conv, add_generation_prompt=True, enable_thinking=False)
    assert on.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert off == on + "<think>\n\n</think>\n\n"


@pytest.mark.parametrize("name", ["qwen2.5", "chatml-tools", "deepseek", "mistral", "llama3.1"])
def test_reasoning_content_is_not_rendered_without_a_reasoning_template(name):
    conv = standard(_args(name))
    conv[3] = dict(conv[3], reasoning_content="answer now")
    assert render(name, conv) == STANDARD[name]


# -- family quirks kept on purpose ---------------------------------------------------------------

def test_deepseek_second_tool_round_loses_its_markers():
    """DeepSeek-V3's public template never resets its flags (AGENTIC.md §2 item 29): a second
    tool-call turn has no <｜Assistant｜>, content or <｜tool▁calls▁begin｜>, the outputs before
    it are not closed, later outputs are not opened. Kept, pinned."""
    conv = [*standard(PARIS_JSON)[:3],
            {"role": "assistant", "content": "And Rome.", "tool_calls": [
                call('{"city": "Rome"}', "xyz789ghi")]},
            {"role": "tool", "content": "18C"},
            {"role": "assistant", "content": "22C and 18C."}]
    assert render("deepseek", conv) == (
        "<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜>" + DEEPSEEK_CALL
        + "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>22C<｜tool▁output▁end｜>"
        "\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Rome\"}"
        "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
        "<｜tool▁output▁begin｜>18C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>22C and 18C."
        "<｜end▁of▁sentence｜>")
    assert trained("deepseek", conv) == [
        DEEPSEEK_CALL,
        '\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Rome"}\n```'
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>",
        "22C and 18C.<｜end▁of▁sentence｜>"]


def test_deepseek_ends_with_the_outputs_closed_after_a_tool_message():
    conv = standard(PARIS_JSON)[:3]
    text = render("deepseek", conv, add_generation_prompt=True)
    assert text == render("deepseek", conv)  # no <｜Assistant｜> after tool outputs
    assert text.endswith("<｜tool▁output▁end｜><｜tool▁outputs▁end｜>")


def test_mistral_tools_go_before_the_last_user_message():
    """[AVAILABLE_TOOLS] moves to the last user message: a later user turn changes what comes
    before the first (not prefix-stable with tools)."""
    conv = [*standard(), {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "Welcome."}]
    text = render("mistral", conv, tools=TOOLS)
    assert text == (STANDARD["mistral"] + AGENTIC_MISTRAL[len("<s>"):].split("[INST]")[0]
                    + "[INST] Thanks![/INST] Welcome.</s>")
    assert not text.startswith(render("mistral", standard(), tools=TOOLS)[:-len("</s>")])


def test_mistral_system_prompt_goes_into_a_final_user_message_only():
    system = {"role": "system", "content": "Be brief."}
    assert render("mistral", [system, *standard()]) == STANDARD["mistral"]
    assert render("mistral", [system, *standard(), {"role": "user", "content": "And?"}],
                  tools=TOOLS).endswith("[/AVAILABLE_TOOLS][INST] Be brief.\n\nAnd?[/INST]")


@pytest.mark.parametrize("bad", ["abc", "abc123def0", None])
def test_mistral_call_ids_must_have_nine_characters(bad):
    conv = standard()
    conv[1] = dict(conv[1], tool_calls=[call(call_id=bad)] if bad else [
        {"type": "function", "function": {"name": "get_weather", "arguments": PARIS}}])
    with pytest.raises(TemplateError, match="length 9"):
        tokenizer_for("mistral").apply_chat_template(conv, tokenize=False)
    results = standard()
    results[2] = {"role": "tool", "content": "22C", "tool_call_id": "abc"}
    with pytest.raises(TemplateError, match="length 9"):
        tokenizer_for("mistral").apply_chat_template(results, tokenize=False)


def test_llama31_options_and_bos():
    t = tokenizer_for("llama3.1")
    conv = [{"role": "system", "content": " Be brief. "}, *standard()]
    text = render("llama3.1", conv, tools=TOOLS, tools_in_user_message=False,
                  date_string="01 Jan 2025")
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\nYou have access to "
        "the following functions. To call a function, please respond with JSON for a function "
        'call.Respond in the format {"name": function name, "parameters": dictionary of '
        "argument name and its value}.Do not use variables.\n\n" + json.dumps(WEATHER, indent=4)
        + "\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWeather in "
        "Paris?<|eot_id|>" + LLAMA31_CHAIN)
    # tokenizer(text) adds BOS as Llama 3's tokenizer does; the chat template writes its own
    assert t("hi")["input_ids"][0] == t.bos_token_id
    assert t(text, add_special_tokens=False)["input_ids"][0] == t.bos_token_id
    with pytest.raises(TemplateError, match="builtin_tools"):
        t.apply_chat_template(standard(), tokenize=False, builtin_tools=["brave_search"])


@pytest.mark.parametrize("name", ["chatml-tools", "chatml-tools-generation"])
def test_chatml_tools_renders_plain_conversations_as_chatml(name):
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "And?"},
             {"role": "assistant", "content": "Done."}]
    chatml = "chatml-generation" if name.endswith("generation") else "chatml"
    for conv in (plain, plain[1:]):
        for prompt in (False, True):
            assert (load_tokenizer(name).apply_chat_template(conv, tokenize=False,
                                                             add_generation_prompt=prompt)
                    == load_tokenizer(chatml).apply_chat_template(
                        conv, tokenize=False, add_generation_prompt=prompt))


# -- (g) what the generation tags mark -----------------------------------------------------------

QWEN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TRAINED = {  # the standard example with content beside the call, tools given
    "qwen2.5": ["Let me check.\n" + QWEN_CALL + "<|im_end|>", "It is 22C.<|im_end|>"],
    "chatml-tools": ["Let me check.\n" + QWEN_CALL + "<|im_end|>", "It is 22C.<|im_end|>"],
    "qwen3": ["Let me check.\n" + QWEN_CALL + "<|im_end|>",
              "<think>\n\n</think>\n\nIt is 22C.<|im_end|>"],
    "deepseek": ["Let me check." + DEEPSEEK_CALL, "It is 22C.<｜end▁of▁sentence｜>"],
    # SentencePiece: the space before the answer is outside the tags but belongs to its first
    # token ('▁It'), which is marked (decoding drops the leading space)
    "mistral": [MISTRAL_CALL, "It is 22C.</s>"],
    "llama3.1": ['{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
                 "It is 22C.<|eot_id|>"],
}


@pytest.mark.parametrize("name", ALL)
def test_generation_tags_cover_calls_and_end_tokens_not_tool_results(name):
    conv = standard(_args(name), content="Let me check.")
    runs = trained(name, conv, tools=TOOLS)
    assert runs == TRAINED[name]
    joined = "".join(runs)
    for prompt_side in ("22C<", "22C\n", '"22C"', "22C,", "Weather in Paris?", "get_weather\","
                        " \"description", "<｜tool▁outputs▁end｜>", "<|im_start|>", "ipython"):
        assert prompt_side not in joined, prompt_side


def test_mistral_tool_result_is_not_trained():
    """The [TOOL_RESULTS] block sits between the call's </s> and the answer's '▁It'."""
    t = tokenizer_for("mistral")
    out = t.apply_chat_template(standard(), chat_template=tagged_source("mistral"),
                                return_dict=True, return_assistant_tokens_mask=True)
    tokens = t.convert_ids_to_tokens(out["input_ids"])
    marked = [tk for tk, m in zip(tokens, out["assistant_masks"]) if m]
    start = tokens.index("[TOOL_RESULTS]")
    end = tokens.index("[/TOOL_RESULTS]")
    assert not any(out["assistant_masks"][start:end + 1])
    assert marked[0] == "[TOOL_CALLS]" and marked.count("</s>") == 2


def test_qwen3_generation_tags_cover_the_reasoning_rendered_in_a_turn():
    assert trained("qwen3", REASONED) == [
        "<think>\nneed weather\n</think>\n\n" + QWEN_CALL + "<|im_end|>",
        "<think>\nanswer now\n</think>\n\nIt is 22C.<|im_end|>"]
    assert trained("qwen3", REASONED + LATER) == [
        QWEN_CALL + "<|im_end|>", "It is 22C.<|im_end|>",
        "<think>\nbe polite\n</think>\n\nYou're welcome.<|im_end|>"]


@pytest.mark.parametrize("name", ["qwen2.5", "qwen3", "chatml-tools", "deepseek", "mistral"])
def test_generation_tags_on_parallel_calls(name):
    runs = trained(name, parallel(as_json=name == "deepseek"))
    assert len(runs) == 2
    assert all(city in runs[0] for city in ("Paris", "Rome"))
    assert "18C" not in runs[0] and "22C" not in runs[0]


@pytest.mark.parametrize("name", ["chatml-tools", "qwen2.5", "qwen3", "deepseek", "mistral",
                                  "llama3.1"])
def test_eot_outside_moves_the_end_token_of_call_turns_too(name):
    """The tagged templates keep one ``{% generation %}{{ ... + end }}{% endgeneration %}``
    block per turn kind, the shape trl_sft.eot_outside rewrites."""
    from sft_conformance.adapters.trl_sft import eot_outside

    t = tokenizer_for(name)
    conv = standard(_args(name))
    derived = eot_outside(tagged_source(name))
    assert t.apply_chat_template(conv, tokenize=False, chat_template=derived) == render(name, conv)
    before = t.apply_chat_template(conv, chat_template=tagged_source(name), return_dict=True,
                                   return_assistant_tokens_mask=True)
    after = t.apply_chat_template(conv, chat_template=derived, return_dict=True,
                                  return_assistant_tokens_mask=True)
    dropped = [t.convert_ids_to_tokens(i) for i, b, a in
               zip(before["input_ids"], before["assistant_masks"], after["assistant_masks"])
               if b and not a]
    end = TEMPLATES[name].eos_token if name in TEMPLATES else fam.FAMILIES[name].end_of_turn
    assert dropped == [end] * 2, dropped
