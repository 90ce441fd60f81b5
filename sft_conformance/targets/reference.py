"""The reference implementation wrapped as targets: it must pass every check."""

from __future__ import annotations

from sft_conformance.reference import Collator, forward, pack_examples, sft_loss


class ReferenceTarget:
    """reference.Collator (right padding, HF labels) + reference.sft_loss + reference.forward."""

    name = "reference"
    labels_shifted = False
    turn_policy = "all"
    overlong = "truncate_response"
    tools = True  # tool conversations: the reference locates their turns by rendering
    reasoning = "template"  # reasoning where the chat template renders it
    #: its collate costs what the checks' own expectations cost: serving its label-level
    #: batches from chunk calls (sft_conformance.batch_judging) would only add the recording
    batch_judging = False

    def collate(self, conversations, tokenizer, max_length):
        return Collator(labels_shifted=self.labels_shifted, policy=self.turn_policy,
                        overlong=self.overlong, reasoning=self.reasoning)(
            conversations, tokenizer, max_length)

    def loss(self, logits, labels, num_items_in_batch=None):
        return sft_loss(logits, labels, labels_shifted=self.labels_shifted,
                        num_items_in_batch=num_items_in_batch)

    def forward(self, model, batch):
        return forward(model, batch)


class ReferenceShiftedTarget(ReferenceTarget):
    """The reference with shifted labels (seed 001 / torchtune convention)."""

    name = "reference-shifted"
    labels_shifted = True


class ReferencePackedTarget(ReferenceTarget):
    """The reference packer: best-fit-decreasing rows, positions restart, block-causal mask."""

    name = "reference-packed"
    packs = True

    def collate(self, conversations, tokenizer, max_length):
        examples = Collator(labels_shifted=self.labels_shifted, policy=self.turn_policy,
                            overlong=self.overlong).examples(conversations, tokenizer, max_length)
        batch = pack_examples(examples, max_length, tokenizer.pad_token_id,
                              labels_shifted=self.labels_shifted)
        batch.pop("rows")
        return batch
