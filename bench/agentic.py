"""Agentic SFT data: tool schemas in the system prompt, tool call / tool result chains.

Shape (published): APIGen-MT-5k (Salesforce, the multi-turn trajectories behind xLAM-2;
Prabhakar et al. 2025, arXiv:2504.03601; dataset card huggingface.co/datasets/Salesforce/
APIGen-MT-5k) has 5,000 trajectories in two domains (tau-bench airline and retail), each a system
prompt holding the domain policy, a JSON list of tool schemas (3 distinct tool lists over the set)
and a conversation of **3 to 56 messages** (the dataset viewer's ``conversations`` list lengths)
of human turns, function calls, observations (tool results) and assistant replies.

Assumptions (no published token statistics were found for these sets; the search covered the
APIGen-MT paper and card, ToolACE, xLAM/APIGen, Hermes function-calling and glaive
function-calling cards, which publish counts of examples and messages but not token lengths):

* the number of messages is drawn log-normal with median 16 and sigma 0.6, clipped to the
  published range 3..56;
* the system prompt is a policy of 150-600 words plus 3-8 tool schemas (JSON, 2-6 parameters
  each);
* a user message is 8-60 words, a tool call one JSON object, a tool result a JSON object of
  3-12 fields, an assistant reply 10-120 words; 0-3 tool calls follow a user message before the
  reply.

With Qwen2.5's tokenizer these give conversations of about 2,600 tokens on average (200
conversations, seed 0: mean 2,638, median 2,455, p90 3,645, 7% over 4,096; checked loosely in
``tests/test_bench_data_presets.py``), so packing at 4,096 meets long and some over-long
conversations (truncated, end kept). With the bundled 4k BPE the same text is about twice as many
tokens. The report shows the measured
distribution of what was generated, tokenized with the run's tokenizer. Tool calls and results
are rendered as text in ordinary messages (``<tool_call>``/``<tool_response>`` tags, Hermes
style; results in a user message, untrained), not as first-class tool messages.
"""

from __future__ import annotations

import json
import math
import random

from .data import _words

SOURCE = ("Agentic (APIGen-MT-5k shape: tool schemas in the system prompt, 3-56 messages with "
          "tool call/result chains; token lengths per message are assumptions, see "
          "bench/agentic.py)")

MESSAGES_MIN, MESSAGES_MAX = 3, 56     # published: APIGen-MT-5k conversation list lengths
MESSAGES_MEDIAN, MESSAGES_SIGMA = 16, 0.6  # assumption
TYPES = ("string", "integer", "number", "boolean")


def _name(rng: random.Random) -> str:
    verbs = ("get", "list", "update", "cancel", "book", "search", "find", "create", "check")
    nouns = ("order", "reservation", "flight", "user", "item", "payment", "address", "status")
    return f"{rng.choice(verbs)}_{rng.choice(nouns)}_{rng.randint(1, 99)}"


def _schema(rng: random.Random) -> dict:
    props = {}
    for _ in range(rng.randint(2, 6)):
        props[f"{rng.choice(('user', 'order', 'item', 'flight', 'date', 'amount'))}_"
              f"{rng.randint(1, 9)}"] = {"type": rng.choice(TYPES),
                                         "description": _words(rng, rng.randint(4, 14))}
    return {"name": _name(rng), "description": _words(rng, rng.randint(8, 30)),
            "parameters": {"type": "object", "properties": props,
                           "required": sorted(props)[:rng.randint(1, len(props))]}}


def _call(rng: random.Random, tool: dict) -> str:
    args = {k: (rng.randint(0, 9999) if v["type"] in ("integer", "number") else
                rng.choice((True, False)) if v["type"] == "boolean" else _words(rng, 2))
            for k, v in tool["parameters"]["properties"].items()}
    return "<tool_call>\n" + json.dumps({"name": tool["name"], "arguments": args}) + \
        "\n</tool_call>"


def _result(rng: random.Random) -> str:
    fields = {f"field_{i}": (_words(rng, rng.randint(1, 6)) if rng.random() < 0.6 else
                             rng.randint(0, 10**6)) for i in range(rng.randint(3, 12))}
    return "<tool_response>\n" + json.dumps(fields) + "\n</tool_response>"


def message_count(rng: random.Random) -> int:
    n = int(round(rng.lognormvariate(math.log(MESSAGES_MEDIAN), MESSAGES_SIGMA)))
    return min(MESSAGES_MAX, max(MESSAGES_MIN, n))


def generate_agentic(n: int, tokenizer=None, seed: int = 0) -> list[list[dict]]:
    """``n`` agentic conversations (system, user, assistant messages; tools rendered as text)."""
    rng = random.Random(seed + 25)
    convs = []
    for _ in range(n):
        tools = [_schema(rng) for _ in range(rng.randint(3, 8))]
        system = ("# Policy\n" + _words(rng, rng.randint(150, 600)) + "\n\n# Tools\nYou may "
                  "call one or more functions. Function signatures, in <tools></tools>:\n<tools>\n"
                  + "\n".join(json.dumps(t) for t in tools) + "\n</tools>\nReturn each call as "
                  "a JSON object within <tool_call></tool_call>.")
        conv = [{"role": "system", "content": system}]
        target = message_count(rng) - 1  # the system prompt is one of the messages
        while len(conv) - 1 < target:
            conv.append({"role": "user", "content": _words(rng, rng.randint(8, 60))})
            for _ in range(rng.randint(0, 3)):
                if len(conv) - 1 + 3 > target:
                    break
                conv.append({"role": "assistant", "content": _call(rng, rng.choice(tools))})
                conv.append({"role": "user", "content": _result(rng)})
            conv.append({"role": "assistant", "content": _words(rng, rng.randint(10, 120))})
        convs.append(conv)
    return convs
