"""The textbook targets: the algorithms of the seed documents, run through the suite.

Each reproduces a seed textbook's code sample line for line (their worked numbers are in
docs/specification.md#appendix-worked-examples); only the
glue that turns our conversations into the seed's ``{"prompt", "response"}`` records is ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


class Seed000Collator:
    """Seed 000 (chapter 4): ``sft_data_collator`` over ``prepare_sft_batch``'s algorithm.

    prompt_part = "<|user|> {prompt} <|end|> <|assistant|>", full_text = prompt_part + " {response}
    <|end|>", labels[:len(encode(prompt_part))] = -100, then ``torch.stack`` of the rows (no
    padding: "In a real implementation, you'd pad"). The loss is the Hugging Face model's own
    (``outputs.loss`` in ``sft_training_step``), which takes no ``num_items_in_batch`` there.
    Single-turn records without a system prompt, on the bundled seed-000 template.
    """

    name = "textbook-seed000"
    labels_shifted = False
    tokenizer = "seed000"
    multi_turn = False
    system_prompt = False
    overlong = "truncate"  # the seed never truncates; declared so S9 holds it to something

    def collate(self, conversations, tokenizer, max_length):
        batch = [{"prompt": c[0]["content"], "response": c[1]["content"]} for c in conversations]
        all_input_ids, all_labels = [], []
        for example in batch:  # the seed's loop, verbatim in substance
            prompt_part = f"<|user|> {example['prompt']} <|end|> <|assistant|>"
            full_text = f"{prompt_part} {example['response']} <|end|>"
            prompt_ids = tokenizer.encode(prompt_part)
            mask_until_idx = len(prompt_ids)
            input_ids = tokenizer.encode(full_text)
            labels = torch.tensor(input_ids).clone()
            labels[:mask_until_idx] = -100
            all_input_ids.append(torch.tensor(input_ids))
            all_labels.append(labels)
        return {"input_ids": torch.stack(all_input_ids), "labels": torch.stack(all_labels)}

    def loss(self, logits, labels, num_items_in_batch=None):
        from transformers.loss.loss_utils import ForCausalLMLoss

        return ForCausalLMLoss(logits, labels, vocab_size=logits.shape[-1])


class Seed003Pipeline:
    """Seed 003: ``SFTDataset`` + ``pad_collate`` + ``sft_loss``.

    The record's prompt is the conversation rendered up to the last assistant turn with the
    generation prompt (system + user messages, as the post describes), the response the last
    assistant content. ``encode(prompt) + encode(response)`` tokenized apart, truncated with
    ``[:max_length]``, no end token; ``pad_collate`` pads labels with -100 and builds
    ``attention_mask = input_ids != pad_id``; ``sft_loss`` shifts and takes
    ``F.cross_entropy``'s mean. Only the last assistant turn is trained (the record format).
    """

    name = "textbook-seed003"
    labels_shifted = False
    tokenizer = "chatml"
    turn_policy = "last"
    overlong = "truncate"

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference.masks import render

        items = []
        for conv in conversations:
            last = max(j for j, m in enumerate(conv) if m["role"] == "assistant")
            record = {"prompt": render(tokenizer, conv[:last], add_generation_prompt=True),
                      "response": conv[last]["content"]}
            items.append(_seed003_getitem(record, tokenizer, max_length))
        return _seed003_pad_collate(items, tokenizer.pad_token_id)

    def loss(self, logits, labels, num_items_in_batch=None):
        shift_logits = logits[:, :-1, :].contiguous()
        shift_labels = labels[:, 1:].contiguous()
        return F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)),
                               shift_labels.view(-1), ignore_index=IGNORE_INDEX)


def _seed003_getitem(ex, tok, max_length):
    prompt_ids = tok.encode(ex["prompt"], add_special_tokens=False)
    response_ids = tok.encode(ex["response"], add_special_tokens=False)
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long)}


def _seed003_pad_collate(batch, pad_id):
    max_len = max(x["input_ids"].size(0) for x in batch)
    input_ids, labels = [], []
    for x in batch:
        pad_len = max_len - x["input_ids"].size(0)
        input_ids.append(torch.cat([x["input_ids"],
                                    torch.full((pad_len,), pad_id, dtype=torch.long)]))
        labels.append(torch.cat([x["labels"],
                                 torch.full((pad_len,), IGNORE_INDEX, dtype=torch.long)]))
    return {"input_ids": torch.stack(input_ids), "labels": torch.stack(labels),
            "attention_mask": (torch.stack(input_ids) != pad_id).long()}


REGISTRY = {
    "textbook-seed000": f"{__name__}:Seed000Collator",
    "textbook-seed003": f"{__name__}:Seed003Pipeline",
}
