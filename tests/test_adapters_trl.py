"""Pinned behaviour of the TRL adapters (SFTTrainer data preparation and collator) with the
installed TRL.

Each test compares the trainer's first batch with the reference collator on the same
conversations; a TRL upgrade that changes behaviour fails here naming the spec requirement.
Building an SFTTrainer on the tiny model takes ~0.2 s once TRL is imported.
"""

from __future__ import annotations

import tempfile

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("datasets")

from samples import CONVS, LOOKALIKE, MULTI, SINGLE  # noqa: E402

from sft_conformance.reference import IGNORE_INDEX, collate, sft_loss  # noqa: E402
from sft_conformance.target import declared, load_target  # noqa: E402


@pytest.fixture(scope="module")
def model(tok_gen):
    from sft_conformance.assets import tiny_model

    return tiny_model(tok_gen)


def eot_id(tok):
    return tok.convert_tokens_to_ids("<|im_end|>")


def reference_docs(convs, tok, max_length=64, **kw):
    """Per conversation: (input_ids, labels) of the reference, unpadded."""
    ref = collate(convs, tok, max_length, **kw)
    out = []
    for b in range(len(convs)):
        n = int(ref["attention_mask"][b].sum())
        out.append((ref["input_ids"][b, :n], ref["labels"][b, :n]))
    return out


def test_declarations():
    for name in ("trl-sft-messages", "trl-sft-assistant-only", "trl-sft-packing-bfd"):
        d = declared(load_target(name))
        assert d.requires == ("trl", "datasets", "accelerate") and not d.missing
        assert d.install_hint == "pip install 'sft-conformance[trl]'"
    assert set(load_target("trl-sft-assistant-only").options) == {"padding_free", "packing_bfd"}


def test_messages_default_trains_the_whole_conversation(tok):
    """Default SFTConfig on {"messages"}: labels == input_ids on every real token (S3, S10
    violated, as TRL documents for assistant_only_loss=False)."""
    batch = load_target("trl-sft-messages").collate(CONVS, tok, 64)
    for b, (ids, _) in enumerate(reference_docs(CONVS, tok)):
        n = len(ids)
        assert torch.equal(batch["input_ids"][b, :n], ids), "S1: TRL's ids differ"
        assert torch.equal(batch["labels"][b, :n], ids), "the prompt is no longer trained"
        assert (batch["labels"][b, n:] == IGNORE_INDEX).all()


def test_prompt_completion_trains_last_turn_including_merged_first_token(tok):
    """Prompt-completion: TRL finds the completion where prompt and prompt+completion ids diverge
    (common_prefix_length), so the BPE token 'assistant\\nhello' that straddles the boundary is
    trained (S2 kept, unlike the naive prompt-length mask); the last turn, its <|im_end|> and the
    newline after it are trained (declared turn_policy='last', trains_after_eot)."""
    target = load_target("trl-sft-prompt-completion")
    assert target.turn_policy == "last" and target.trains_after_eot
    batch = target.collate(CONVS, tok, 64)
    for b, (ids, labels) in enumerate(reference_docs(CONVS, tok, policy="last")):
        n = len(ids)
        want = labels.clone()
        want[n - 1] = ids[n - 1]  # the newline after the final <|im_end|>
        assert ids[n - 2] == eot_id(tok)
        got = batch["labels"][b, :n]
        assert torch.equal(got, want), f"row {b}:\n{got.tolist()}\n{want.tolist()}"
    first = int((reference_docs([SINGLE], tok)[0][1] != IGNORE_INDEX).nonzero()[0])
    assert batch["labels"][0, first] != IGNORE_INDEX, "S2: the merged first token is masked now"


def test_assistant_only_with_generation_tags_equals_reference(tok_gen):
    """assistant_only_loss=True, tags around content + <|im_end|>: labels equal the reference's
    (S2, S3, S4, S10, S11 kept)."""
    convs = [SINGLE, MULTI, LOOKALIKE]
    batch = load_target("trl-sft-assistant-only").collate(convs, tok_gen, 64)
    for b, (ids, labels) in enumerate(reference_docs(convs, tok_gen)):
        n = len(ids)
        assert torch.equal(batch["input_ids"][b, :n], ids)
        assert torch.equal(batch["labels"][b, :n], labels), f"row {b} differs from reference"


def test_assistant_only_eot_outside_tags_never_trains_the_end_token(tok_gen):
    """Tags around the content only: TRL detects it and warns, but every <|im_end|> label is
    -100 (S4 violated); everything else equals the reference."""
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    from sft_conformance.adapters.trl_sft import CHATML_GENERATION_EOT_OUTSIDE

    assert is_chat_template_stop_token_trained(tok_gen) is True
    assert is_chat_template_stop_token_trained(
        tok_gen, chat_template=CHATML_GENERATION_EOT_OUTSIDE) is False
    batch = load_target("trl-sft-assistant-only-eot-outside").collate(CONVS, tok_gen, 64)
    eot = eot_id(tok_gen)
    for b, (ids, labels) in enumerate(reference_docs(CONVS, tok_gen)):
        n = len(ids)
        got = batch["labels"][b, :n]
        assert torch.equal(batch["input_ids"][b, :n], ids), "the variant must render as ChatML"
        assert (got[ids == eot] == IGNORE_INDEX).all(), "S4: an <|im_end|> is trained now"
        want = labels.clone()
        want[ids == eot] = IGNORE_INDEX
        assert torch.equal(got, want)


def test_assistant_only_without_tags_is_refused(tok):
    """A template without {% generation %} tags that TRL cannot patch: ValueError."""
    with pytest.raises(ValueError, match="patching is not supported"):
        load_target("trl-sft-assistant-only-no-tags").collate(CONVS, tok, 64)


def test_padding_free_flattens_and_isolates_documents(tok_gen, model):
    """padding_free=True: one row, positions restart, no attention mask, first label of each
    document -100, labels otherwise the reference's; with the SDPA tiny model each document's
    logits equal its logits alone (S8, S12 kept)."""
    target = load_target("trl-sft-padding-free")
    batch = target.collate(CONVS, tok_gen, 64)
    docs = reference_docs(CONVS, tok_gen)
    lens = [len(ids) for ids, _ in docs]
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, sum(lens))
    assert batch["position_ids"][0].tolist() == [i for n in lens for i in range(n)]
    assert batch["cu_seq_lens_q"].tolist() == [0, lens[0], sum(lens)]
    assert torch.equal(batch["labels"][0], torch.cat([lab for _, lab in docs]))
    alone = load_target("trl-sft-assistant-only")
    with torch.no_grad():
        logits = target.forward(model, batch)
        for k, conv in enumerate(CONVS):
            lo = sum(lens[:k])
            want = alone.forward(model, alone.collate([conv], tok_gen, 64))[0]
            torch.testing.assert_close(logits[0, lo:lo + lens[k]], want, atol=1e-5, rtol=1e-5)


def test_padding_free_does_not_enforce_max_length(tok_gen):
    """TRL requires max_length=None for padding_free without packing: nothing is cut (S9)."""
    batch = load_target("trl-sft-padding-free").collate(CONVS, tok_gen, 10)
    assert batch["input_ids"].shape[1] == sum(len(i) for i, _ in reference_docs(CONVS, tok_gen))


def test_packing_bfd_whole_documents_longest_first(tok_gen, model):
    """packing bfd: longest document first, whole documents, positions restart, labels the
    reference's (first of each document -100); documents isolated in the forward (S8 kept)."""
    target = load_target("trl-sft-packing-bfd")
    batch = target.collate(CONVS, tok_gen, 64)
    docs = reference_docs(CONVS, tok_gen)[::-1]  # MULTI is longer: packed first
    lens = [len(ids) for ids, _ in docs]
    assert batch["position_ids"][0].tolist() == [i for n in lens for i in range(n)]
    assert torch.equal(batch["input_ids"][0], torch.cat([ids for ids, _ in docs]))
    want = torch.cat([lab for _, lab in docs])
    assert torch.equal(batch["labels"][0], want)
    alone = load_target("trl-sft-assistant-only")
    with torch.no_grad():
        logits = target.forward(model, batch)
        ref = alone.forward(model, alone.collate([SINGLE], tok_gen, 64))[0]
    torch.testing.assert_close(logits[0, lens[0]:], ref, atol=1e-5, rtol=1e-5)


def test_packing_bfd_truncates_and_bfd_split_splits(tok_gen):
    """max_length=20 < len(MULTI)=35: bfd keeps MULTI's first 20 tokens (end cut, overflow
    dropped); bfd_split packs the 15 overflow tokens as a separate document with positions
    restarting at 0 (declared splits_documents)."""
    (multi_ids, _), = reference_docs([MULTI], tok_gen)
    bfd = load_target("trl-sft-packing-bfd").collate(CONVS, tok_gen, 20)
    assert bfd["cu_seq_lens_q"].tolist() == [0, 20, 33]
    assert torch.equal(bfd["input_ids"][0, :20], multi_ids[:20])
    split = load_target("trl-sft-packing-bfd-split")
    assert split.splits_documents
    sb = split.collate(CONVS, tok_gen, 20)
    assert sb["cu_seq_lens_q"].tolist() == [0, 20, 35, 48]
    assert torch.equal(sb["input_ids"][0, 20:35], multi_ids[20:])
    assert sb["position_ids"][0, 20] == 0


def test_packing_wrapped_leaks_across_documents(tok_gen, model):
    """wrapped: rows of max_length cut mid-document, all-ones attention mask, no position ids:
    the second document attends to the first (S8 violated)."""
    target = load_target("trl-sft-packing-wrapped")
    assert "S8" in target.known_failures
    short = target.collate(CONVS, tok_gen, 20)
    assert short["input_ids"].shape == (3, 20) and "position_ids" not in short
    batch = target.collate(CONVS, tok_gen, 64)
    n0 = len(reference_docs([SINGLE], tok_gen)[0][0])
    assert batch["attention_mask"].all()
    alone = load_target("trl-sft-assistant-only")
    with torch.no_grad():
        logits = target.forward(model, batch)
        ref = alone.forward(model, alone.collate([MULTI], tok_gen, 64))[0]
    assert (logits[0, n0:] - ref).abs().max() > 1e-3, "S8: wrapped packing isolates documents now"


def test_padding_free_option_keeps_trained_tokens(tok_gen):
    """S12: padding_free on/off trains the same tokens."""
    target = load_target("trl-sft-assistant-only")
    padded = target.collate(CONVS, tok_gen, 64)
    flat = target.options["padding_free"]().collate(CONVS, tok_gen, 64)
    assert sorted(padded["labels"][padded["labels"] != IGNORE_INDEX].tolist()) == sorted(
        flat["labels"][flat["labels"] != IGNORE_INDEX].tolist())


def test_trainer_compute_loss_is_the_token_mean(tok_gen):
    """SFTTrainer.compute_loss (TRL's fused LM head) on its own first batch equals the reference
    token mean (S6 kept). Under a second."""
    target = load_target("trl-sft-assistant-only")
    with tempfile.TemporaryDirectory() as out:
        trainer = target.trainer(CONVS, tok_gen, 64, out)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.eval()
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, dict(batch))
            logits = target.forward(trainer.model, batch)
    torch.testing.assert_close(loss, sft_loss(logits, batch["labels"]), atol=1e-5, rtol=1e-5)


def test_truncation_drops_examples_left_without_trained_tokens(tok_gen):
    """keep_start truncation, then TRL drops examples whose labels are all -100 (S9 kept for
    the empty example); the kept one is its first max_length tokens (keep_start)."""
    batch = load_target("trl-sft-assistant-only").collate([MULTI, SINGLE], tok_gen, 12)
    (single_ids, single_labels), = reference_docs([SINGLE], tok_gen)
    assert batch["input_ids"].shape == (1, 12)
    assert torch.equal(batch["input_ids"][0], single_ids[:12])
    assert torch.equal(batch["labels"][0], single_labels[:12])


def test_eot_outside_is_the_tokenizers_template_with_the_end_token_moved():
    """The eot-outside configuration is derived from the tokenizer's own tagged template: on
    ChatML it is CHATML_GENERATION_EOT_OUTSIDE; it renders as the template does and its tags
    hold everything the original's held but the end token; a template without such a block is
    a clear ValueError."""
    from sft_conformance.adapters.trl_sft import CHATML_GENERATION_EOT_OUTSIDE, eot_outside
    from sft_conformance.assets import load_tokenizer

    tok = load_tokenizer("chatml-generation")
    derived = eot_outside(tok.chat_template)
    for conv in CONVS:
        assert (tok.apply_chat_template(conv, tokenize=False, chat_template=derived)
                == tok.apply_chat_template(conv, tokenize=False)
                == tok.apply_chat_template(conv, tokenize=False,
                                           chat_template=CHATML_GENERATION_EOT_OUTSIDE))
        before = tok.apply_chat_template(conv, return_assistant_tokens_mask=True,
                                         return_dict=True)
        after = tok.apply_chat_template(conv, chat_template=derived,
                                        return_assistant_tokens_mask=True, return_dict=True)
        eot = eot_id(tok)
        want = [m and i != eot for i, m in zip(before["input_ids"], before["assistant_masks"])]
        assert [bool(m) for m in after["assistant_masks"]] == want
    # an eos_token end (Mistral's shape) moves too
    assert eot_outside("{%- generation -%}{{- message['content'] + eos_token -}}"
                       "{%- endgeneration -%}") == (
        "{%- generation -%}{{- message['content'] -}}{%- endgeneration -%}{{- eos_token -}}")
    with pytest.raises(ValueError, match="no {% generation %} block"):
        eot_outside(load_tokenizer("chatml").chat_template)


def test_the_callers_tokenizer_is_left_as_it_was():
    """The adapter hands SFTTrainer a copy that shares the Rust backend (copy_tokenizer): the
    trainer's pad-token setting stays on the copy, and the backend is not changed."""
    from sft_conformance.assets import copy_tokenizer, load_tokenizer

    tok = load_tokenizer("chatml")
    state = (tok.pad_token, tok.chat_template, tok._tokenizer.to_str())
    load_target("trl-sft-messages").collate(CONVS, tok, 256)
    assert (tok.pad_token, tok.chat_template, tok._tokenizer.to_str()) == state
    clone = copy_tokenizer(tok)
    clone.pad_token = clone.eos_token
    clone.padding_side = "left"
    assert tok.pad_token == state[0] != clone.pad_token and tok.padding_side == "right"
    assert clone._tokenizer is tok._tokenizer
    assert clone("hi there")["input_ids"] == tok("hi there")["input_ids"]
