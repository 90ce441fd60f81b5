"""Pinned behaviour of the transformers adapters with the installed transformers.

Each test compares an adapter's batch with the reference collator on the same conversations; a
transformers upgrade that changes what the library does fails here with a message that says which
spec requirement (S1-S12) moved.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from sft_conformance.adapters import REGISTRY
from sft_conformance.adapters.versions import library_versions
from sft_conformance.reference import IGNORE_INDEX, collate, per_token_nll, sft_loss
from sft_conformance.target import declared, load_target

ADAPTERS = Path(__file__).resolve().parents[1] / "sft_conformance" / "adapters"

from samples import CONVS, LOOKALIKE, MULTI, SINGLE  # noqa: E402


@pytest.fixture(scope="module")
def model(tok):
    from sft_conformance.assets import tiny_model

    return tiny_model(tok)


def real(row, batch, b):
    """The non-pad positions of row ``b`` of a padded batch."""
    return row[batch["attention_mask"][b].bool()]


def test_registry_targets_load_and_declare():
    for name in REGISTRY:
        d = declared(load_target(name))
        assert d.name == name, f"{REGISTRY[name]} declares name {d.name!r}, registered as {name!r}"
        assert d.description, f"{name}: the target class needs a docstring saying what it exercises"


def test_adapter_modules_import_libraries_lazily():
    """A target whose library is missing must not break ``import sft_conformance.adapters``."""
    lazy = {"trl", "torchtune", "datasets", "accelerate", "transformers", "torchao"}
    for path in ADAPTERS.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            top = {n.split(".")[0] for n in names}
            assert not top & lazy, f"{path.name}:{node.lineno} imports {top & lazy} at module level"


def test_library_versions():
    v = library_versions()
    assert {"torch", "transformers", "tokenizers"} <= set(v)
    assert "torchtune" not in v or v["torchtune"]
    import transformers

    assert v["transformers"] == transformers.__version__


# --- DataCollatorForLanguageModeling ------------------------------------------------------------


def test_lm_collator_trains_every_token_of_the_chat_text(tok):
    """DataCollatorForLanguageModeling(mlm=False), pad != eos: labels == input_ids on every real
    token, so system/user turns and headers are trained (S3, S10 violated) and <|im_end|> is
    trained (S4 kept)."""
    batch = load_target("transformers-lm-collator").collate(CONVS, tok, 64)
    ref = collate(CONVS, tok, 64)
    assert torch.equal(batch["input_ids"][:, :ref["input_ids"].shape[1]] * ref["attention_mask"],
                       ref["input_ids"] * ref["attention_mask"]), "S1: ids differ from reference"
    for b in range(len(CONVS)):
        ids, labels = real(batch["input_ids"][b], batch, b), real(batch["labels"][b], batch, b)
        assert torch.equal(labels, ids), "labels are no longer input_ids on real tokens"
        assert (batch["labels"][b][~batch["attention_mask"][b].bool()] == IGNORE_INDEX).all()
        n_ref = int((ref["labels"][b] != IGNORE_INDEX).sum())
        assert int((labels != IGNORE_INDEX).sum()) > n_ref, "S3: the prompt is no longer trained?"
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert (batch["labels"][batch["input_ids"] == eot] == eot).all(), "S4: <|im_end|> masked"


def test_lm_collator_pad_eos_masks_every_end_of_turn(tok):
    """DataCollatorForLanguageModeling with pad == eos: the label of every <|im_end|>, the final
    one included, is -100 (S4 violated: the model never learns to stop)."""
    pad_before = tok.pad_token
    batch = load_target("transformers-lm-collator-pad-eos").collate(CONVS, tok, 64)
    assert tok.pad_token == pad_before, "the adapter must restore the tokenizer's pad token"
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    ref = collate(CONVS, tok, 64)
    for b in range(len(CONVS)):
        n = int(ref["attention_mask"][b].sum())
        ids, labels = batch["input_ids"][b, :n], batch["labels"][b, :n]
        assert ids[-2] == eot and labels[-2] == IGNORE_INDEX, (
            "S4: the final <|im_end|> is trained again with pad == eos: "
            "DataCollatorForLanguageModeling changed how it masks padding")
        assert ref["labels"][b][ref["input_ids"][b] == eot].ne(IGNORE_INDEX).any()
        assert (labels[ids == eot] == IGNORE_INDEX).all()
        assert (labels[ids != eot] == ids[ids != eot]).all()


# --- DataCollatorForSeq2Seq ---------------------------------------------------------------------


def test_seq2seq_prompt_mask_loses_a_merged_first_response_token(tok):
    """Prompt masked by the length of apply_chat_template(prompt, add_generation_prompt=True):
    with this BPE, 'assistant\\nhello' is one token, so the tokenized prompt is not a prefix of the
    conversation and its length masks the first response token (S2 violated); the reference trains
    that straddling token."""
    batch = load_target("transformers-seq2seq-collator").collate([SINGLE], tok, 64)
    ref = collate([SINGLE], tok, 64)
    first = int((ref["labels"][0] != IGNORE_INDEX).nonzero()[0])
    assert batch["input_ids"][0, first] == ref["input_ids"][0, first]
    prompt = tok.apply_chat_template(SINGLE[:1], tokenize=True, add_generation_prompt=True,
                                     return_dict=True)["input_ids"]
    assert list(batch["input_ids"][0, :len(prompt)]) != prompt, "prompt is now a prefix"
    assert batch["labels"][0, first] == IGNORE_INDEX, (
        "S2: the first response token is trained now: the prompt/response boundary changed")


def test_seq2seq_trains_last_turn_and_newline_after_eot(tok):
    """With no merge at the boundary, the labels are the reference's with turn_policy='last',
    plus the newline after the last <|im_end|> (declared trains_after_eot)."""
    target = load_target("transformers-seq2seq-collator")
    assert target.turn_policy == "last" and target.trains_after_eot
    batch = target.collate([MULTI], tok, 64)
    ref = collate([MULTI], tok, 64, policy="last")
    got, want = batch["labels"][0], ref["labels"][0].clone()
    n = int(ref["attention_mask"][0].sum())
    want[n - 1] = ref["input_ids"][0, n - 1]  # the trailing newline
    assert torch.equal(got[:n], want[:n]), f"labels moved:\n{got.tolist()}\n{want.tolist()}"


def test_seq2seq_left_padding_keeps_logits(tok, model):
    """Left padding without position_ids (as the Trainer calls the model): RoPE makes the shift
    invisible, real-token logits equal the unpadded ones (S5 kept)."""
    target = load_target("transformers-seq2seq-collator-left")
    batch = target.collate(CONVS, tok, 64)
    assert "position_ids" not in batch
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    with torch.no_grad():
        logits = target.forward(model, batch)
        alone = target.forward(model, target.collate([SINGLE], tok, 64))
    n = alone.shape[1]
    torch.testing.assert_close(logits[0, -n:], alone[0], atol=1e-5, rtol=1e-5)


# --- DataCollatorWithFlattening -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["transformers-flattening-collator",
                                  "transformers-flattening-collator-fa-kwargs"])
def test_flattening_isolates_documents(name, tok, model):
    """DataCollatorWithFlattening: one row, positions restart per example, the first label of each
    example is -100, and (SDPA, no attention mask) each document's logits equal its logits alone
    (S8 kept)."""
    target = load_target(name)
    batch = target.collate(CONVS, tok, 64)
    alone = [target.collate([c], tok, 64) for c in CONVS]
    lens = [a["input_ids"].shape[1] for a in alone]
    assert batch["input_ids"].shape == (1, sum(lens)) and "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == [i for n in lens for i in range(n)]
    assert torch.equal(batch["labels"], torch.cat([a["labels"] for a in alone], dim=1))
    assert batch["labels"][0, lens[0]] == IGNORE_INDEX
    if target.flash_kwargs:
        assert batch["cu_seq_lens_q"].tolist() == [0, lens[0], sum(lens)]
        assert batch["max_length_q"] == max(lens)
    with torch.no_grad():
        logits = target.forward(model, batch)
        for k, a in enumerate(alone):
            lo = sum(lens[:k])
            torch.testing.assert_close(logits[0, lo:lo + lens[k]], target.forward(model, a)[0],
                                       atol=1e-5, rtol=1e-5, msg=f"S8: document {k} leaks")


# --- the model's own loss -----------------------------------------------------------------------


def test_model_loss_matches_reference_and_accumulates(tok, model):
    """ForCausalLMLoss with num_items_in_batch: equals the reference token mean (S6) and summing
    micro-batches with the step's count gives the full batch's mean (S7)."""
    target = load_target("transformers-model-loss")
    batch = target.collate(CONVS, tok, 64)
    with torch.no_grad():
        logits = target.forward(model, batch)
        full = target.loss(logits, batch["labels"])
        torch.testing.assert_close(full, sft_loss(logits, batch["labels"]))
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        parts = [target.collate([c], tok, 64) for c in CONVS]
        acc = sum(target.loss(target.forward(model, p), p["labels"], num_items_in_batch=n)
                  for p in parts)
        torch.testing.assert_close(acc, full)
        # model(..., labels=...) computes the same loss
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask")},
                    labels=batch["labels"])
        torch.testing.assert_close(out.loss, full)


def test_model_loss_without_num_items_is_a_mean_of_means(tok, model):
    """Without num_items_in_batch each micro-batch is its own token mean (S7 violated)."""
    target = load_target("transformers-model-loss-no-num-items")
    assert "S7" in target.known_failures
    batch = target.collate(CONVS, tok, 64)
    with torch.no_grad():
        full = target.loss(target.forward(model, batch), batch["labels"])
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        parts = [target.collate([c], tok, 64) for c in CONVS]
        means = [target.loss(target.forward(model, p), p["labels"], num_items_in_batch=n)
                 for p in parts]
        nlls = [per_token_nll(target.forward(model, p), p["labels"]) for p in parts]
    counts = [int((p["labels"][:, 1:] != IGNORE_INDEX).sum()) for p in parts]
    assert counts[0] != counts[1]
    for m, nll, c in zip(means, nlls, counts):
        torch.testing.assert_close(m, nll.sum() / c)  # its own count, not the step's
    assert not torch.allclose(sum(means) / len(means), full, atol=1e-6), (
        "S7: the mean of micro-batch means equals the token mean now")


# --- apply_chat_template(return_assistant_tokens_mask=True) -------------------------------------


def test_assistant_mask_trains_exactly_the_reference_positions(tok_gen):
    """{% generation %} tags around content + <|im_end|>: labels equal the reference's on every
    turn (S2, S3, S4, S10 kept), also when the user writes the header as text (S11 kept)."""
    target = load_target("transformers-assistant-mask")
    assert target.tokenizer == "chatml-generation"
    convs = [SINGLE, MULTI, LOOKALIKE]
    batch = target.collate(convs, tok_gen, 64)
    ref = collate(convs, tok_gen, 64)
    assert torch.equal(batch["labels"], ref["labels"]), "assistant mask != reference mask"
    assert torch.equal(batch["input_ids"] * ref["attention_mask"],
                       ref["input_ids"] * ref["attention_mask"])


def test_assistant_mask_truncates_the_end(tok_gen):
    """truncation=True, max_length=n cuts the end, end token included (declared 'truncate')."""
    target = load_target("transformers-assistant-mask")
    assert target.overlong == "truncate"
    full = target.collate([MULTI], tok_gen, 64)
    batch = target.collate([MULTI], tok_gen, 20)
    assert torch.equal(batch["input_ids"], full["input_ids"][:, :20])
    assert torch.equal(batch["labels"], full["labels"][:, :20])
    eot = tok_gen.convert_tokens_to_ids("<|im_end|>")
    assert batch["input_ids"].shape[1] == 20 < full["input_ids"].shape[1]
    assert full["input_ids"][0, -2] == eot  # the last turn's end token is cut away


@pytest.mark.parametrize("name", ["transformers-seq2seq-collator", "transformers-assistant-mask"])
def test_cut_keeps_examples_with_no_trained_position(name, tok, tok_gen):
    """ids and labels cut to max_length and kept: MULTI cut to 12 tokens has no trained label
    left but stays in the batch (S9 violated, declared)."""
    target = load_target(name)
    assert "S9" in target.known_failures
    t = tok_gen if target.tokenizer == "chatml-generation" else tok
    batch = target.collate([SINGLE, MULTI], t, 12)
    assert batch["input_ids"].shape == (2, 12)
    assert (batch["labels"][1] == IGNORE_INDEX).all()
