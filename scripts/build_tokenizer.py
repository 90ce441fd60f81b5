"""Train the bundled byte-level BPE tokenizer on deterministically generated text.

Run from the repository root:

    python scripts/build_tokenizer.py

It writes ``sft_conformance/assets/bpe.json``, which is committed. The corpus is generated here
from a fixed seed: chat conversations rendered through every bundled chat template, so that the
learned merges join template glue to the first characters of message contents (``"\\nThe"``,
``"> jumps"``), exactly the boundary merges that break naive prompt/response tokenization in real
tokenizers. The pre-tokenizer does not split on a regex (like SentencePiece-style tokenizers), so
merges may cross word and glue boundaries.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from sft_conformance.assets import SPECIAL_TOKENS, TEMPLATES  # noqa: E402

VOCAB_SIZE = 4096
SEED = 20261122

_SYLLABLES = [
    "ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "an", "er", "in", "on", "th", "st", "re",
    "ch", "qu", "ple", "tion", "ing", "ed", "ly", "al", "ous", "ment", "ness", "ive", "ant",
]
_COMMON = (
    "the a an of to in is it that for on with as are was be this by or from at you your we can "
    "how what why when which who explain write tell list give make please answer question model "
    "gravity force cat dog fox quick brown lazy jumps over sum reverse word number assistant user "
    "system role content hello world yes no thanks sure here is the answer step first then finally"
).split()
_UNICODE = ["café", "naïve", "über", "日本語", "中文", "emoji 🙂", "Ωμέγα", "привет", "ß", "→"]


def _word(rng: random.Random) -> str:
    if rng.random() < 0.6:
        w = rng.choice(_COMMON)
    elif rng.random() < 0.9:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))
    else:
        w = rng.choice(_UNICODE)
    if rng.random() < 0.15:
        w = w.capitalize()
    if rng.random() < 0.05:
        w = str(rng.randint(0, 999))
    return w


def _sentence(rng: random.Random) -> str:
    words = [_word(rng) for _ in range(rng.randint(1, 14))]
    return " ".join(words) + rng.choice([".", "?", "!", "", ":", ","])


def _content(rng: random.Random) -> str:
    text = " ".join(_sentence(rng) for _ in range(rng.randint(1, 4)))
    r = rng.random()
    if r < 0.1:
        text = " " + text
    elif r < 0.15:
        text = "\n" + text
    elif r < 0.2:
        text = text + "\n"
    return text


_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def generate_corpus(n_conversations: int = 6000, seed: int = SEED) -> list[str]:
    """Deterministic training text: rendered conversations plus plain sentences."""
    from jinja2 import Environment

    env = Environment()
    rng = random.Random(seed)
    def strip_tags(source: str) -> str:  # plain jinja2 has no {% generation %} tag
        return source.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", "")

    templates = [
        env.from_string(strip_tags(t.source)) for t in TEMPLATES.values() if t.tokenizer == "bpe"
    ]
    texts: list[str] = []
    for i in range(n_conversations):
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": _content(rng)})
        for _ in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": _content(rng)})
            messages.append({"role": "assistant", "content": _content(rng)})
        tpl = templates[i % len(templates)]
        rendered = tpl.render(messages=messages, add_generation_prompt=False)
        # Special tokens are matched before BPE runs, so train only on the text between them.
        texts.extend(piece for piece in _SPECIAL_RE.split(rendered) if piece)
        texts.append(_sentence(rng))
    return texts


def build() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(generate_corpus(), trainer=trainer)
    return tok


def main() -> None:
    out = ROOT / "sft_conformance" / "assets" / "bpe.json"
    tok = build()
    tok.save(str(out), pretty=False)
    print(f"wrote {out} ({tok.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
