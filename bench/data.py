"""Benchmark data: synthetic conversations with published length distributions, or a user's JSONL.

The synthetic sets draw each conversation's total token length from a log-normal fitted to the
published statistics of the dataset it imitates, then fill the turns with common English words
(the number of words comes from the tokenizer's measured tokens per word), so the lengths seen by
the benchmark are those of the *tokenized* conversations, measured after the chat template:

* ``alpaca``: one user/assistant turn, mean about 160 tokens (Alpaca-52k under Llama tokenizers).
* ``ultrachat``: one to four turns, mean about 1,100 tokens, about a tenth over 2,048
  (UltraChat-200k).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sft_conformance.reference.collate import truncate
from sft_conformance.reference.masks import Example, build_example

WORDS = (
    "the of and to in is that for it as with was on be by this are from or have an not which but "
    "at one all were can there what their has more if will about would when do so up out into "
    "time some could them these other than then may only its like over also new two first how "
    "well most very after even through much model data train answer question because example "
    "result people water world number write list explain describe give reason step first second "
    "simple important different small large good great make find use work part place case point"
).split()


@dataclass(frozen=True)
class LengthProfile:
    """A log-normal length model of a public SFT dataset (tokens per conversation)."""

    name: str
    median: float
    sigma: float
    min_turns: int
    max_turns: int
    prompt_share: float  # share of a turn pair's tokens in the user message
    minimum: int
    source: str

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma ** 2 / 2)

    def sample_lengths(self, n: int, seed: int = 0) -> list[int]:
        rng = random.Random(seed)
        mu = math.log(self.median)
        return [max(self.minimum, int(round(rng.lognormvariate(mu, self.sigma))))
                for _ in range(n)]


PROFILES = {
    "alpaca": LengthProfile("alpaca", 130, 0.65, 1, 1, 0.35, 24,
                            "Alpaca-like: single turn, mean ~160 tokens (log-normal fit)"),
    "ultrachat": LengthProfile("ultrachat", 900, 0.63, 1, 4, 0.3, 64,
                               "UltraChat-like: 1-4 turns, mean ~1,100 tokens, ~10% over 2,048"),
}


def _words(rng: random.Random, n: int) -> str:
    out = []
    for i in range(max(1, n)):
        w = rng.choice(WORDS)
        out.append(w.capitalize() if i == 0 or out[-1].endswith(".") else w)
        if rng.random() < 0.08:
            out[-1] += rng.choice((".", ",", "?"))
    return " ".join(out)


def tokens_per_word(tokenizer, seed: int = 0) -> float:
    rng = random.Random(seed)
    text = _words(rng, 2000)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) / 2000


def generate_conversations(profile: LengthProfile, n: int, tokenizer, seed: int = 0) -> list:
    """``n`` conversations whose tokenized lengths follow ``profile`` (approximately)."""
    rng = random.Random(seed + 1)
    tpw = tokens_per_word(tokenizer, seed)
    per_turn_overhead = 5  # role header and end-of-turn glue of a typical template
    convs = []
    for total in profile.sample_lengths(n, seed):
        turns = rng.randint(profile.min_turns, profile.max_turns)
        budget = max(8 * turns, total - 2 * per_turn_overhead * turns)
        conv = []
        for _ in range(turns):
            pair = budget / turns
            user = max(2, int(pair * profile.prompt_share / tpw))
            assistant = max(2, int(pair * (1 - profile.prompt_share) / tpw))
            conv.append({"role": "user", "content": _words(rng, user)})
            conv.append({"role": "assistant", "content": _words(rng, assistant)})
        convs.append(conv)
    return convs


def load_jsonl(path: str | Path) -> list:
    """Conversations from a JSONL file: each line a list of messages or ``{"messages": [...]}``
    (with its ``tools`` when it has some), read by the one loader of every command
    (``sft_conformance.snapshots.load_corpus``): a malformed line is an error naming the file
    and the line."""
    from sft_conformance.snapshots import conversation_of, load_corpus

    return [conversation_of(item) for item in load_corpus(path)]


@dataclass
class BenchData:
    """Tokenized examples ready for the strategies, with the length statistics of the raw data."""

    name: str
    examples: list[Example]
    raw_lengths: list[int]  # before truncation
    max_length: int
    n_truncated: int = 0
    n_dropped: int = 0
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def lengths(self) -> list[int]:
        return [len(e) for e in self.examples]


def tokenize(conversations: Sequence, tokenizer, max_length: int, *, name: str = "data",
             description: str = "") -> BenchData:
    """Build examples with the reference masks; over-long ones keep their end token (S9)."""
    examples, raw, truncated, dropped = [], [], 0, 0
    for i, conv in enumerate(conversations):
        ex = build_example(conv, tokenizer, index=i)
        raw.append(len(ex))
        kept = truncate(ex, max_length, "truncate_response", index=i)
        if kept is None:
            dropped += 1
            continue
        truncated += len(kept) < len(ex)
        examples.append(kept)
    if not examples:
        raise ValueError("every conversation was dropped (no trained position left)")
    return BenchData(name, examples, raw, max_length, truncated, dropped, description)


def length_stats(lengths: Sequence[int], cap: int | None = None) -> dict:
    """Mean, median, p90, p99, max and the fraction over ``cap`` of a list of lengths."""
    xs = sorted(lengths)
    n = len(xs)

    def pct(p: float) -> float:
        k = (n - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return float(xs[lo] + (xs[hi] - xs[lo]) * (k - lo))

    out = {"n": n, "mean": sum(xs) / n, "median": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
           "max": xs[-1], "min": xs[0]}
    if cap is not None:
        out["cap"] = cap
        out["frac_over_cap"] = sum(x > cap for x in xs) / n
    return out
