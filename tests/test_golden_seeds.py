"""Golden numbers: the worked examples of the specification, reproduced by the reference.

Each test computes the numbers of one worked example in the appendix of
``docs/specification.md`` and cites its anchor. Where the textbook material the examples come
from is inconsistent, the worked example says so and the test pins what is actually true.
"""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from sft_conformance.assets import SEED000, load_tokenizer
from sft_conformance.reference import IGNORE_INDEX, build_example, labels_for, oracle_loss, sft_loss


def word_tokenizer(vocab: dict[str, int]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer with the seed's vocabulary and the seed-000 template."""
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = [t for t in vocab if t.startswith("<|")]
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|end|>",
                                   additional_special_tokens=[s for s in specials
                                                              if s != "<|end|>"],
                                   chat_template=SEED000)


# -- seed 000, chapter 2: cross-entropy by hand ------------------------------------------------

SEED000_LOGITS = [[0.1, 0.2, 2.0, 0.5, 0.3, 0.1],
                  [0.1, 0.1, 0.2, 2.5, 0.4, 0.2],
                  [0.2, 0.1, 0.1, 0.3, 3.0, 0.5]]


def test_seed000_cross_entropy_table():
    """The table's probabilities give 0.522/0.232/0.257 and the mean 0.337.

    Numbers from the worked example docs/specification.md#worked-seed-000.
    """
    probs = [0.593, 0.793, 0.773]
    nll = [-math.log(p) for p in probs]
    assert [round(x, 2) for x in nll] == [0.52, 0.23, 0.26]
    assert round(sum(nll) / 3, 3) == 0.337
    # the same mean through the tensor loss, from logits whose softmax has those probabilities
    logits = torch.full((1, 3, 6), -1e9, dtype=torch.float64)
    for t, (target, p) in enumerate(zip([2, 3, 4], probs)):
        logits[0, t, target], logits[0, t, 0] = math.log(p), math.log(1 - p)
    loss = sft_loss(logits, torch.tensor([[2, 3, 4]]), labels_shifted=True)
    assert round(loss.item(), 3) == 0.337


def test_seed000_printed_logits_give_0437_not_0337():
    """Seed bug, pinned: the chapter-2 logits do not have the table's softmax column.

    softmax([0.1, 0.2, 2.0, 0.5, 0.3, 0.1])[2] is 0.535, not 0.593, and the code sample prints
    0.437 when run, not the 0.337 the seed shows as its output. Numbers from the worked example
    docs/specification.md#worked-seed-000.
    """
    logits = torch.tensor([SEED000_LOGITS], dtype=torch.float64)
    loss = sft_loss(logits, torch.tensor([[2, 3, 4]]), labels_shifted=True)
    assert round(loss.item(), 3) == 0.437
    assert round(oracle_loss([SEED000_LOGITS], [[2, 3, 4]], labels_shifted=True), 3) == 0.437
    flat = torch.nn.functional.cross_entropy(logits.view(-1, 6), torch.tensor([2, 3, 4]))
    assert round(flat.item(), 3) == 0.437


# -- seed 000, chapters 3 and 4: the mask tables -----------------------------------------------

def test_seed000_chapter3_mask_table():
    """Ids and labels of the chapter-3 table: docs/specification.md#worked-seed-000-masks."""
    vocab = {"<pad>": 0, "<|user|>": 6, "Explain": 7, "gravity": 8, "<|end|>": 9,
             "<|assistant|>": 10, "Gravity": 11, "is": 12, "a": 13, "force": 14}
    tok = word_tokenizer(vocab)
    conv = [{"role": "user", "content": "Explain gravity"},
            {"role": "assistant", "content": "Gravity is a force"}]
    ex = build_example(conv, tok)
    assert ex.input_ids == [6, 7, 8, 9, 10, 11, 12, 13, 14, 9]
    assert labels_for(ex) == [-100] * 5 + [11, 12, 13, 14, 9]


def test_seed000_chapter4_mask_table():
    """Ids and labels of the chapter-4 table: docs/specification.md#worked-seed-000-masks."""
    vocab = {"<pad>": 0, "The": 1, "quick": 2, "brown": 3, "fox": 4, "jumps": 5, "over": 6,
             "lazy": 7, "dog": 8, "<|user|>": 9, "<|assistant|>": 10, "<|end|>": 11,
             "What": 12, "is": 13, "a": 14, "?": 15}
    tok = word_tokenizer(vocab)
    # The seed's own response "jumps over the lazy dog" raises KeyError in its SimpleTokenizer
    # ('the' is not in the vocabulary); its printed table and decode use "The" (id 1).
    conv = [{"role": "user", "content": "The quick brown fox"},
            {"role": "assistant", "content": "jumps over The lazy dog"}]
    ex = build_example(conv, tok)
    assert ex.input_ids == [9, 1, 2, 3, 4, 11, 10, 5, 6, 1, 7, 8, 11]
    assert labels_for(ex) == [-100] * 7 + [5, 6, 1, 7, 8, 11]


# -- seed 001: the shift-by-one walkthrough ----------------------------------------------------

def test_seed001_reversal_shifted_mask():
    """The 13-token shift-by-one diagram: docs/specification.md#worked-seed-001."""
    tok = load_tokenizer("seed001")
    ex = build_example([{"role": "user", "content": "hello"},
                        {"role": "assistant", "content": "olleh"}], tok)
    s = ex.input_ids
    assert tok.decode(s) == "<hello>olleh#" and len(s) == 13  # T = P + R = 7 + 6
    P = len(tok("<hello>", add_special_tokens=False)["input_ids"])
    assert P == 7
    y = labels_for(ex, labels_shifted=True)[:-1]  # y = s[1:] with the mask; x = s[:-1]
    assert y[: P - 1] == [IGNORE_INDEX] * 6  # y[:6] masked
    assert tok.decode(y[6:11]) == "olleh"  # y[6..10] trained, as the seed says
    # The seed's diagram numbers x[0..10] although "<hello>olleh" has 12 tokens; its own formula
    # y[P-1 .. T-2] with T = 13 also trains y[11] = '#', the end token. So do we.
    assert y[P - 1:] == s[P:] and tok.decode(y[11:]) == "#"


# -- seed 002: the 7-token walkthrough ---------------------------------------------------------

def test_seed002_walkthrough():
    """The 7-token masked mean, 2.454: docs/specification.md#worked-seed-002."""
    labels = [-100, -100, -100, -100, -100, 42, 99]
    nll = [-math.log(0.018), -math.log(0.41)]
    assert [round(x, 3) for x in nll] == [4.017, 0.892]
    assert round(sum(nll) / 2, 3) == pytest.approx(2.454, abs=1e-3)
    # The same numbers through the tensor loss: logits whose softmax puts 0.018 on id 42 at
    # position 4 and 0.41 on id 99 at position 5 (HF convention: logits[t-1] predict labels[t]).
    V = 128
    logits = torch.full((1, 7, V), -1e9, dtype=torch.float64)
    for t, (target, p) in {4: (42, 0.018), 5: (99, 0.41)}.items():
        logits[0, t, target] = math.log(p)
        logits[0, t, 0] = math.log(1 - p)
    logits[0, :4, 0] = 0.0
    logits[0, 6, 0] = 0.0
    loss = sft_loss(logits, torch.tensor([labels]))
    assert loss.item() == pytest.approx(2.4545, abs=1e-4)


# -- seed 003: padding waste ---------------------------------------------------------------------

def test_seed003_padding_waste():
    """About 88% of a padded batch is padding: docs/specification.md#worked-seed-003.

    Measured on batches our fixed-padding strategy builds (examples of 250 tokens on average,
    padded to max_length 2048), not computed from the two numbers."""
    from sft_conformance.bench.strategies import epoch_counts, make_batches
    from sft_conformance.reference import Example

    lengths = [200, 300, 150, 350, 250, 250, 220, 280]  # mean 250
    examples = [Example(input_ids=list(range(3, 3 + n)), trained=[False] * (n // 2)
                        + [True] * (n - n // 2)) for n in lengths]
    counts = epoch_counts(make_batches("fixed", examples, pad_token_id=0, max_length=2048,
                                       batch_size=4))
    assert counts["slots"] == 2048 * len(lengths)
    assert counts["real_tokens"] == sum(lengths)
    assert round(counts["padding_fraction"], 2) == 0.88
    # dynamic padding to the longest row wastes far less on the same examples
    dynamic = epoch_counts(make_batches("dynamic", examples, pad_token_id=0, max_length=2048,
                                        batch_size=4))
    assert dynamic["padding_fraction"] < 0.3
