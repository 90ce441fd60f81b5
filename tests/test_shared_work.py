"""What the ``mutants`` command's processes keep between rows (sft_conformance.assets.shared and
the oracle on shared random logits): off unless turned on, and when on, the very answers a fresh
call gives, never an object a caller can spoil."""

import copy

import pytest
import torch

from sft_conformance.assets import load_tokenizer, shared, tiny_model
from sft_conformance.checks import loss as loss_checks

CONV = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


@pytest.fixture
def sharing():
    shared.share()
    loss_checks.share_random_logits()
    try:
        yield shared
    finally:
        shared.share(None, None)
        loss_checks.share_random_logits(None)


def test_nothing_is_shared_by_default():
    tok = load_tokenizer("chatml")
    assert type(tok).__name__ == "TokenizersBackend"
    assert type(tok) not in shared._RENDERING_CLASSES.values()
    assert type(tiny_model(tok)) not in shared._MODEL_CLASSES.values()
    assert shared.stats() == {}


def test_shared_renderings_are_the_fresh_ones(sharing):
    fresh = load_tokenizer("llama3")
    shared.share(None, None)
    plain = load_tokenizer("llama3")
    shared.share()
    want = plain.apply_chat_template(CONV, tokenize=False)
    assert fresh.apply_chat_template(CONV, tokenize=False) == want
    assert fresh.apply_chat_template(CONV, tokenize=False) == want
    assert shared.stats()["renderings"] == (1, 1)
    assert type(fresh).__name__ == type(plain).__name__
    # a copy with its own template renders with it, not from the store
    other = copy.deepcopy(fresh)
    other.chat_template = "{% for m in messages %}[{{ m.content }}]{% endfor %}"
    assert other.apply_chat_template(CONV, tokenize=False) == "[hi][yo]"
    # another pad token is another rendering key (the special tokens are template variables)
    pad_eos = load_tokenizer("llama3", pad_equals_eos=True)
    assert pad_eos.apply_chat_template(CONV, tokenize=False) == want
    # tokenized calls and assistant masks are never served from the store
    ids = fresh.apply_chat_template(CONV, tokenize=True, return_dict=False)
    assert ids == plain.apply_chat_template(CONV, tokenize=True, return_dict=False)


def test_shared_encodings_are_copies(sharing):
    tok = load_tokenizer("llama3")
    first = tok("hello world", add_special_tokens=True, return_offsets_mapping=True)
    first["input_ids"].append(99)  # a caller that changes what it got
    again = tok("hello world", add_special_tokens=True, return_offsets_mapping=True)
    assert 99 not in again["input_ids"]
    assert again["input_ids"] == tok._tokenizer.encode("hello world").ids
    without = tok("hello world", add_special_tokens=False)
    assert without["input_ids"] == again["input_ids"][1:]  # no BOS: another key
    assert "offset_mapping" not in without


def test_shared_model_outputs_are_the_fresh_ones(sharing):
    tok = load_tokenizer("chatml")
    shared.share(None, None)
    plain = tiny_model(tok)
    shared.share()
    model = tiny_model(tok)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = plain(input_ids=ids).logits
        got = model(input_ids=ids).logits
        got.zero_()  # a caller that writes into its logits
        again = tiny_model(tok)(input_ids=ids).logits
    assert torch.equal(again, want)
    assert shared.stats()["model_outputs"] == (1, 1)
    # with gradients, under autocast, or with another seed: computed anew
    assert model(input_ids=ids).logits.requires_grad
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(input_ids=ids).logits.dtype == torch.bfloat16
    with torch.no_grad():
        seeded = tiny_model(tok, seed=1)(input_ids=ids).logits
    assert not torch.equal(seeded, want)
    assert shared.stats()["model_outputs"] == (1, 2)


def test_the_oracle_reads_logits_a_loss_changed_in_place(sharing):
    batch = {"input_ids": torch.zeros(1, 4, dtype=torch.long)}
    labels = [[-100, 1, 2, 3]]
    logits = loss_checks.random_logits(batch, 5, 3)
    want = loss_checks.oracle_on_random(logits, labels, False, 3)
    assert loss_checks.oracle_on_random(loss_checks.random_logits(batch, 5, 3), labels, False,
                                        3) == want
    changed = loss_checks.random_logits(batch, 5, 3)
    changed.detach().zero_()  # a target's loss that zeroes its logits
    assert loss_checks.oracle_on_random(changed, labels, False, 3) == pytest.approx(
        -torch.log(torch.tensor(0.2, dtype=torch.float64)).item())


def test_an_in_process_mutants_run_leaves_nothing_shared(capsys):
    from sft_conformance.cli import main

    assert main(["mutants", "--only-meant", "--mutant", "mutant-off-by-one-late", "-j", "1",
                 "--no-progress"]) == 0
    assert shared.stats() == {}
    assert loss_checks._SHARED_LOGITS is None and loss_checks._SHARED_ORACLE is None


def _verdicts(run_):
    return [(r.id, r.status, r.judged, r.message) for r in run_.results]


def test_replayed_check_runs_are_the_hypothesis_runs():
    """A kept passing run replayed for another target with the same declarations gives the
    same verdicts and judged counts; a target whose draw comes out otherwise (a mutant caught
    on it) falls back to Hypothesis and gets exactly the run it gets without replays."""
    from sft_conformance.checks import engine
    from sft_conformance.runner import check_target

    only = ["S2", "S3", "S6"]
    plain = {name: _verdicts(check_target(name, profile="ci", only=only, shrink=False))
             for name in ("reference", "mutant-off-by-one-early", "mutant-user-turns-trained")}
    assert engine._TRACES is None
    engine.share_traces()
    try:
        before = list(engine._REPLAYS)
        for name in ("reference", "reference", "mutant-off-by-one-early",
                     "mutant-user-turns-trained"):
            got = _verdicts(check_target(name, profile="ci", only=only, shrink=False))
            assert got == plain[name], name
        replayed, diverged = (engine._REPLAYS[0] - before[0], engine._REPLAYS[1] - before[1])
        assert replayed >= 3  # the second reference run: every check replayed
        assert diverged >= 1  # a caught check came out otherwise on a kept input
    finally:
        engine.share_traces(False)
    assert engine._TRACES is None
