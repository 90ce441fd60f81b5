"""An example adapter: a user's own collator and loss, plugged into sft-conformance.

Replace the bodies with calls into your trainer. Run:

    sft-conformance check examples/ci/my_adapter.py:MyTarget
"""

from sft_conformance.reference import Collator, sft_loss


class MyTarget:
    name = "my-trainer"
    labels_shifted = False  # Hugging Face convention: the model shifts

    # optional declarations (defaults shown)
    turn_policy = "all"  # or "last"
    overlong = "truncate_response"  # raise | drop | truncate_prompt | truncate_response | truncate
    known_failures: dict = {}  # {"S9": "we raise on over-long examples, see issue 12"}

    def collate(self, conversations, tokenizer, max_length):
        return Collator()(conversations, tokenizer, max_length)

    def loss(self, logits, labels, num_items_in_batch=None):
        return sft_loss(logits, labels, num_items_in_batch=num_items_in_batch)
