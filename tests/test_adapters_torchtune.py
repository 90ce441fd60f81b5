"""The torchtune adapters. torchtune is an optional extra that pins torch, so it is not installed
in the default environment: there the targets must load, declare ``requires=("torchtune",)`` and
the install hint, and never import torchtune. The behaviour tests below run only where torchtune
is installed (the torchtune tox environment) and compare with the reference's shifted labels.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from sft_conformance.target import declared, load_target

NAMES = ("torchtune-padded-collate-sft", "torchtune-packed", "torchtune-packed-split")
HINT = "pip install 'sft-conformance[torchtune]'"
HAVE_TORCHTUNE = importlib.util.find_spec("torchtune") is not None

from samples import MULTI, SINGLE  # noqa: E402


@pytest.mark.parametrize("name", NAMES)
def test_declares_requirement_and_install_hint(name):
    d = declared(load_target(name))
    assert d.requires == ("torchtune",)
    assert d.install_hint == HINT
    assert d.labels_shifted and d.tokenizer == "chatml-generation"
    assert d.has_loss and d.has_forward
    if not HAVE_TORCHTUNE:
        assert d.missing == ["torchtune"], "a missing torchtune must skip every check"


def test_loading_targets_does_not_import_torchtune():
    """Listing and loading every adapter target imports neither torchtune nor TRL."""
    code = ("import sys; from sft_conformance.target import declared, load_target; "
            "from sft_conformance.targets import builtin_targets; "
            "[declared(load_target(n)) for n in builtin_targets()]; "
            "bad = {'torchtune', 'trl'} & set(sys.modules); "
            "assert not bad, f'imported eagerly: {bad}'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(HAVE_TORCHTUNE, reason="torchtune is installed")
def test_collate_without_torchtune_fails_with_import_error():
    from sft_conformance.assets import load_tokenizer

    with pytest.raises(ImportError):
        load_target("torchtune-padded-collate-sft").collate([SINGLE], load_tokenizer(
            "chatml-generation"), 64)


# --- with torchtune installed -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok_gen():
    from sft_conformance.assets import load_tokenizer

    return load_tokenizer("chatml-generation")


@pytest.mark.skipif(not HAVE_TORCHTUNE, reason=f"torchtune not installed: {HINT}")
def test_padded_collate_sft_equals_reference_shifted(tok_gen):
    import torch

    from sft_conformance.reference import collate

    convs = [SINGLE, MULTI]
    batch = load_target("torchtune-padded-collate-sft").collate(convs, tok_gen, 64)
    ref = collate(convs, tok_gen, 64, labels_shifted=True)
    assert torch.equal(batch["labels"], ref["labels"])
    assert torch.equal(batch["input_ids"] * ref["attention_mask"],
                       ref["input_ids"] * ref["attention_mask"])


@pytest.mark.skipif(not HAVE_TORCHTUNE, reason=f"torchtune not installed: {HINT}")
def test_packed_positions_restart_per_sample(tok_gen):
    from sft_conformance.reference import collate

    convs = [SINGLE, MULTI]
    ref = collate(convs, tok_gen, 64)
    lens = [int(n) for n in ref["attention_mask"].sum(1)]
    batch = load_target("torchtune-packed").collate(convs, tok_gen, 64)
    assert batch["input_ids"].shape == (1, 64)
    assert batch["position_ids"][0, :sum(lens)].tolist() == [i for n in lens for i in range(n)]


@pytest.mark.skipif(not HAVE_TORCHTUNE, reason=f"torchtune not installed: {HINT}")
def test_recipe_loss_is_the_token_mean(tok_gen):
    import torch

    from sft_conformance.assets import tiny_model
    from sft_conformance.reference import sft_loss

    target = load_target("torchtune-padded-collate-sft")
    batch = target.collate([SINGLE, MULTI], tok_gen, 64)
    with torch.no_grad():
        logits = target.forward(tiny_model(tok_gen), batch)
    torch.testing.assert_close(target.loss(logits, batch["labels"]),
                               sft_loss(logits, batch["labels"], labels_shifted=True))


# -- tool conversations through torchtune's Qwen2.5 tokenizer (agentic matrix, qwen2.5;
# reports/torchtune/findings-agentic.md) --------------------------------------------------------

S1_TT = ("failed", "check", "S1: example * (batch row *): input ids differ from the chat "
                            "template's tokenization")
S3_TT = ("failed", "check", "S3: a token outside the assistant's turns is trained")
TOOLS_PINNED = {
    # no tools schemas nor default system prompt rendered; the assistant header is trained
    "torchtune-tools": {"S1": S1_TT, "S3": S3_TT, "S4": "passed", "S13": "passed",
                        "S14": "passed", "S15": "skipped"},
    # max_seq_len set: truncate() masks the final <|im_end|> (torchtune#2792)
    "torchtune-tools-max-seq-len": {
        "S1": S1_TT, "S3": S3_TT,
        "S4": ("failed", "check", "S4: the end-of-turn token is not trained"),
        "S13": "passed", "S14": "passed", "S15": "skipped"},
}


@pytest.mark.parametrize("name", list(TOOLS_PINNED))
def test_tools_declarations(name):
    d = declared(load_target(name))
    assert d.tools and d.reasoning is None and d.requires == ("torchtune",)


@pytest.mark.skipif(not HAVE_TORCHTUNE, reason=f"torchtune not installed: {HINT}")
@pytest.mark.parametrize("name", list(TOOLS_PINNED))
def test_pinned_agentic_verdicts_qwen25(name):
    from library_pins import compare

    compare(name, TOOLS_PINNED[name], tokenizer="qwen2.5")
