"""The correct-but-different catalogue: SFT implementations that follow the specification (S1-S15)
but are written differently from the reference (issue 11, item 1).

Mutants prove that every check can fail; these targets prove that a check does not fail a correct
implementation only because it differs from ``sft_conformance.reference`` in a way the
specification allows: its own exception type, another padding side or multiple, mixed precision,
reordered rows, no attention mask, packing without a declaration, padding-free rows, the shifted
label convention, another way of writing the loss, a declared policy it may but need not use.

None of them calls ``reference.build_example`` or ``reference.Collator``: ids and trained
positions come from :func:`_encode`, which renders the conversation with the tokenizer's chat
template and finds each assistant turn's content and end-of-turn token by itself. Every other
target is :class:`Plain` with one thing changed, named in its docstring, so a check that fails one
of them fails it for that one difference (``correct-plain`` is the control).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sft_conformance.reference import NoTrainedPositionError

IGNORE_INDEX = -100
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


# -- the one private helper: ids and trained positions, independently of the reference ---------


@dataclass
class _Encoded:
    """One conversation: its token ids, which positions are trained, and per trained assistant
    turn the token positions ``[start, stop)`` of its span and the position of its end token."""

    ids: list[int]
    trained: list[bool]
    turns: list[tuple[int, int, int | None]]  # (start, stop, end-token position or None)

    def __len__(self) -> int:
        return len(self.ids)

    def n_targets(self) -> int:
        """Trained positions that reach the loss (position 0 has no logits before it)."""
        return sum(self.trained[1:])


def _render(tokenizer, messages, generation: bool = False) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=generation)


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return ids


def _assistant_header(tokenizer) -> str:
    """The generation prompt alone, for an assistant message with nothing before it."""
    probe = [{"role": "user", "content": "x"}]
    return _render(tokenizer, probe, True)[len(_render(tokenizer, probe)):]


def _by_prefix(text, head_text, upto_text, content):
    """``(header end, content start, content end, turn end)`` when the header and the
    conversation through the turn render as prefixes of the whole text, else None."""
    if not (text.startswith(head_text) and text.startswith(upto_text)):
        return None
    head, upto = len(head_text), len(upto_text)
    turn = text[head:upto]
    if not content:  # an empty answer sits after the glue space (Mistral's '[/INST] </s>')
        at = len(turn) - len(turn.lstrip())
        return head, head + at, head + at, upto
    for shown in (content, content.strip(), content.lstrip(), content.rstrip()):
        at = turn.find(shown)
        if at >= 0:
            return head, head + at, head + at + len(shown), upto
    return None


def _as_rendered(conversation, tokenizer, text, j) -> str:
    """Message ``j``'s content, without its leading whitespace when the template trims it
    (Mistral): that space before the content is then the template's glue, not content."""
    content = conversation[j]["content"]
    if content != content.lstrip():
        trimmed = [dict(m, content=content.lstrip()) if i == j else m
                   for i, m in enumerate(conversation)]
        if _render(tokenizer, trimmed) == text:
            return content.lstrip()
    return content


def _by_difference(conversation, tokenizer, text, j):
    """The same for a template that is not prefix-preserving: render the conversation again
    with message ``j``'s content swapped for a character no template writes; the two texts
    agree before and after it, so what differs is the content as rendered. The header ends
    where the generation prompt last occurs before the content."""
    swapped = [dict(m, content="\ue000") if i == j else m for i, m in enumerate(conversation)]
    other = _render(tokenizer, swapped)
    lead = 0
    while lead < min(len(text), len(other)) and text[lead] == other[lead]:
        lead += 1
    tail = 0
    while (tail < min(len(text), len(other)) - lead
           and text[len(text) - 1 - tail] == other[len(other) - 1 - tail]):
        tail += 1
    content_end = len(text) - tail
    prompt = _render(tokenizer, conversation[:j], True) if j else _assistant_header(tokenizer)
    generation = prompt[len(_render(tokenizer, conversation[:j])):] if j else prompt
    at = text.rfind(generation, 0, lead) if generation else -1
    if at >= 0:
        head = at + len(generation)
    else:  # no generation prompt (Mistral): the prompt ends before the space the template
        # writes ahead of the content, unless inference's prompt ends with that whitespace too
        head = lead
        while head > 0 and text[head - 1].isspace():
            head -= 1
        head = min(lead, head + len(prompt) - len(prompt.rstrip()))
    return head, lead, content_end, len(text)


def _encode(conversation, tokenizer, policy: str = "all") -> _Encoded:
    """Tokenize the rendered conversation once and mark each assistant turn's span: from the
    first character of its content to the end of the first special token after the content (the
    template's end-of-turn token, whatever ``eos_token`` is), both inclusive. A token overlapping
    the span (a BPE merge of header and content) is trained. ``{% generation %}`` tags, when the
    template has them, decide instead."""
    text = _render(tokenizer, conversation)
    if _GENERATION_TAG.search(tokenizer.chat_template or ""):
        out = tokenizer.apply_chat_template(list(conversation), tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids = list(out["input_ids"])
        trained = [bool(m) for m in out["assistant_masks"]]
        turns, start = [], None
        for t, m in enumerate(trained + [False]):
            if m and start is None:
                start = t
            elif not m and start is not None:
                turns.append((start, t, t - 1))
                start = None
        if policy == "last" and turns:
            trained = [turns[-1][0] <= t < turns[-1][1] for t in range(len(ids))]
            turns = turns[-1:]
        return _Encoded(ids, trained, turns)

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    special = _special_ids(tokenizer)
    char_spans = []
    for j, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        head_text = (_render(tokenizer, conversation[:j], True) if j else
                     _assistant_header(tokenizer))
        upto_text = _render(tokenizer, conversation[:j + 1])
        found = _by_prefix(text, head_text, upto_text,
                           _as_rendered(conversation, tokenizer, text, j))
        if found is None:  # not prefix-preserving (Qwen3, Mistral with a system prompt)
            found = _by_difference(conversation, tokenizer, text, j)
        head, begin, content_end, upto = found
        if text[head:begin].strip():  # the template adds text after the header (<think>)
            begin = head + len(text[head:begin]) - len(text[head:begin].lstrip())
        end = None
        for t, (s, e) in enumerate(offsets):
            if e > s and s >= content_end and e <= upto and ids[t] in special:
                end = e
                break
        if end is None:  # a template with no special end token: the turn's text, trimmed
            end = content_end + len(text[content_end:upto].rstrip())
        char_spans.append((begin, end))
    if policy == "last":
        char_spans = char_spans[-1:]
    trained = [False] * len(ids)
    turns = []
    for begin, end in char_spans:
        positions = [t for t, (s, e) in enumerate(offsets) if e > s and s < end and e > begin]
        if not positions:
            continue
        for t in positions:
            trained[t] = True
        last = positions[-1]
        turns.append((positions[0], last + 1, last if ids[last] in special else None))
    return _Encoded(ids, trained, turns)


# -- over-long examples (S9) --------------------------------------------------------------------


def _fit(ex: _Encoded, max_length: int, policy: str) -> _Encoded | None:
    """The example under the over-long ``policy``; None when it is left out (dropped, or left
    with nothing to train)."""
    if len(ex) > max_length:
        if policy == "raise":
            raise ValueError(f"example of {len(ex)} tokens exceeds max_length={max_length}")
        if policy == "drop":
            return None
        if policy == "truncate_prompt":
            cut = len(ex) - max_length
            ex = _Encoded(ex.ids[cut:], ex.trained[cut:], [])
        elif policy == "truncate":
            ex = _Encoded(ex.ids[:max_length], ex.trained[:max_length], [])
        else:  # truncate_response: the cut turn keeps content and ends with its end token
            ids, trained = ex.ids[:max_length], ex.trained[:max_length]
            for start, stop, end in ex.turns:
                if start < max_length < stop:
                    if end is None or max_length - 1 <= start:
                        return None  # no content token of the cut turn would survive
                    ids[-1], trained[-1] = ex.ids[end], True
            ex = _Encoded(ids, trained, [])
    return ex if ex.n_targets() else None


def _fit_all(conversations, tokenizer, max_length, *, policy="truncate_response", turns="all",
             nothing=None) -> list[_Encoded]:
    kept = []
    for conv in conversations:
        ex = _fit(_encode(conv, tokenizer, turns), max_length, policy)
        if ex is not None:
            kept.append(ex)
    if not kept:
        raise nothing or NoTrainedPositionError(
            "nothing to train: every example of the batch was left out", field="conversations")
    return kept


def _labels(ex: _Encoded, shifted: bool = False) -> list[int]:
    if shifted:
        return [ex.ids[t + 1] if ex.trained[t + 1] else IGNORE_INDEX
                for t in range(len(ex) - 1)] + [IGNORE_INDEX]
    return [i if m else IGNORE_INDEX for i, m in zip(ex.ids, ex.trained)]


def _right_padded(examples, pad_id, *, width=None, shifted=False) -> dict:
    width = width or max(len(e) for e in examples)
    B = len(examples)
    out = {"input_ids": torch.full((B, width), pad_id, dtype=torch.long),
           "labels": torch.full((B, width), IGNORE_INDEX, dtype=torch.long),
           "attention_mask": torch.zeros((B, width), dtype=torch.long),
           "position_ids": torch.arange(width).repeat(B, 1)}
    for b, ex in enumerate(examples):
        n = len(ex)
        out["input_ids"][b, :n] = torch.tensor(ex.ids)
        out["labels"][b, :n] = torch.tensor(_labels(ex, shifted))
        out["attention_mask"][b, :n] = 1
    return out


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token")
    return tokenizer.pad_token_id


# -- losses -------------------------------------------------------------------------------------


def _token_mean(logits, labels, shifted=False, num_items_in_batch=None):
    """F.cross_entropy summed over trained positions, divided by their count (or the step's)."""
    if not shifted:
        logits, labels = logits[:, :-1], labels[:, 1:]
    dtype = torch.promote_types(logits.dtype, torch.float32)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).to(dtype), labels.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    if num_items_in_batch is not None:
        return total / num_items_in_batch
    count = int((labels != IGNORE_INDEX).sum())
    return total / count if count else total * 0.0


# -- the catalogue ------------------------------------------------------------------------------


class Plain:
    """The control: independent masks (no reference code), right padding, HF labels, F.cross_entropy
    token mean; every other target is this one with one thing changed."""

    name = "correct-plain"
    labels_shifted = False
    turn_policy = "all"
    overlong = "truncate_response"
    #: our own in-process collate: serving its label-level batches from chunk calls
    #: (sft_conformance.batch_judging) would only add the recording pass
    batch_judging = False

    def examples(self, conversations, tokenizer, max_length):
        return _fit_all(conversations, tokenizer, max_length, policy=self.overlong,
                        turns=self.turn_policy)

    def collate(self, conversations, tokenizer, max_length):
        return _right_padded(self.examples(conversations, tokenizer, max_length),
                             _pad_id(tokenizer), shifted=self.labels_shifted)

    def loss(self, logits, labels, num_items_in_batch=None):
        return _token_mean(logits, labels, self.labels_shifted, num_items_in_batch)


class OwnException(Plain):
    """Refuses a batch with nothing left to train after truncation with its own
    ValueError('nothing to train'), not the reference's NoTrainedPositionError."""

    name = "correct-own-exception"

    def examples(self, conversations, tokenizer, max_length):
        return _fit_all(conversations, tokenizer, max_length, policy=self.overlong,
                        turns=self.turn_policy, nothing=ValueError("nothing to train"))


class PadToMultipleOf8(Plain):
    """pad_to_multiple_of=8: the batch width is the longest row rounded up to a multiple of 8
    (it may exceed max_length, only through the rounding)."""

    name = "correct-pad-multiple-8"
    multiple = 8

    def collate(self, conversations, tokenizer, max_length):
        examples = self.examples(conversations, tokenizer, max_length)
        longest = max(len(e) for e in examples)
        width = -(-longest // self.multiple) * self.multiple
        return _right_padded(examples, _pad_id(tokenizer), width=width)


_BASE_EOS_DIR = None


def _base_eos_tokenizer_dir() -> str:
    """A saved copy of the bundled ChatML tokenizer whose eos is '<|endoftext|>' (a base model's
    configuration), not the template's end-of-turn token '<|im_end|>'."""
    global _BASE_EOS_DIR
    if _BASE_EOS_DIR is not None and Path(_BASE_EOS_DIR).is_dir():
        return _BASE_EOS_DIR
    from transformers import PreTrainedTokenizerFast

    from sft_conformance.assets import BPE_FILE, SPECIAL_TOKENS, TEMPLATES

    where = Path(tempfile.gettempdir()) / f"sft-conformance-chatml-base-eos-{os.getuid()}"
    if not (where / "tokenizer_config.json").is_file():
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(BPE_FILE), eos_token="<|endoftext|>", pad_token="<pad>",
            additional_special_tokens=[s for s in SPECIAL_TOKENS
                                       if s not in ("<|endoftext|>", "<pad>")],
            chat_template=TEMPLATES["chatml"].source, clean_up_tokenization_spaces=False,
            padding_side="right")
        staging = Path(tempfile.mkdtemp(prefix=where.name + ".", dir=where.parent))
        tok.save_pretrained(str(staging))
        try:
            staging.rename(where)
        except OSError:  # another process made it first
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    _BASE_EOS_DIR = str(where)
    return _BASE_EOS_DIR


class BaseModelEos(Plain):
    """Runs on a tokenizer whose eos is '<|endoftext|>' (a base-model configuration): the end of a
    turn is the template's '<|im_end|>', found after the content, never eos_token."""

    name = "correct-base-model-eos"

    @property
    def tokenizer(self) -> str:
        return _base_eos_tokenizer_dir()


class Bf16Autocast(Plain):
    """forward(model, batch) under CPU autocast bfloat16 (bf16 logits); the loss is computed in
    float32 from those logits."""

    name = "correct-bf16-autocast"

    def forward(self, model, batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         position_ids=batch["position_ids"]).logits

    def loss(self, logits, labels, num_items_in_batch=None):
        return _token_mean(logits.float(), labels, False, num_items_in_batch)


class RightPadAllOnesMask(Plain):
    """Right padding with an all-ones attention_mask: harmless under causal attention, the real
    tokens never see the pads after them (the pads are not trained)."""

    name = "correct-right-pad-all-ones-mask"

    def collate(self, conversations, tokenizer, max_length):
        batch = super().collate(conversations, tokenizer, max_length)
        batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
        return batch


class LeftPadding(Plain):
    """Left padding with a correct attention_mask and position_ids counted from the first real
    token (pads get position 1, as transformers' generate does)."""

    name = "correct-left-padding"

    def collate(self, conversations, tokenizer, max_length):
        examples = self.examples(conversations, tokenizer, max_length)
        width, B = max(len(e) for e in examples), len(examples)
        input_ids = torch.full((B, width), _pad_id(tokenizer), dtype=torch.long)
        labels = torch.full((B, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((B, width), dtype=torch.long)
        for b, ex in enumerate(examples):
            input_ids[b, width - len(ex):] = torch.tensor(ex.ids)
            labels[b, width - len(ex):] = torch.tensor(_labels(ex))
            attention_mask[b, width - len(ex):] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
                "position_ids": position_ids}


class LengthGrouped(Plain):
    """A length-grouping collator: the rows of the batch are sorted longest first, not in the
    order of the conversations."""

    name = "correct-length-grouped"

    def examples(self, conversations, tokenizer, max_length):
        return sorted(super().examples(conversations, tokenizer, max_length),
                      key=len, reverse=True)


class NoAttentionMask(Plain):
    """input_ids and labels only (no attention_mask, no position_ids), right-padded, each row
    ending at its last end-of-turn token (the template's trailing newline dropped)."""

    name = "correct-no-attention-mask"

    def examples(self, conversations, tokenizer, max_length):
        out = []
        for ex in super().examples(conversations, tokenizer, max_length):
            last = max(t for t in range(len(ex)) if ex.trained[t]) + 1
            if not tokenizer.decode(ex.ids[last:]).strip():  # only glue after it: drop it
                ex = _Encoded(ex.ids[:last], ex.trained[:last], ex.turns)
            out.append(ex)
        return out

    def collate(self, conversations, tokenizer, max_length):
        batch = super().collate(conversations, tokenizer, max_length)
        return {"input_ids": batch["input_ids"], "labels": batch["labels"]}


def _documents(position_ids, attention_mask=None):
    """Document index of every position: a new document wherever position_ids restart at 0;
    padding (attention_mask 0) gets -1."""
    docs = (position_ids == 0).long().cumsum(-1)
    if attention_mask is not None:
        docs = docs.masked_fill(attention_mask == 0, -1)
    return docs


def _block_diagonal_mask(docs, dtype):
    """(B, 1, T, T) additive mask: q sees k iff k <= q in the same document (padding sees
    itself)."""
    T = docs.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal & (docs[:, :, None] == docs[:, None, :]) & (docs[:, None, :] >= 0)
    allowed |= torch.eye(T, dtype=torch.bool)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]


class PackedUndeclared(Plain):
    """Packs conversations into rows (first fit, data order) with position_ids restarting at 0
    per document, WITHOUT declaring packs; forward isolates documents with a block-diagonal
    causal 4D mask built from the position ids."""

    name = "correct-packed-undeclared"

    def collate(self, conversations, tokenizer, max_length):
        rows: list[list[_Encoded]] = []
        for ex in self.examples(conversations, tokenizer, max_length):
            row = next((r for r in rows if sum(map(len, r)) + len(ex) <= max_length), None)
            if row is None:
                rows.append([ex])
            else:
                row.append(ex)
        width = max(sum(map(len, r)) for r in rows)
        R = len(rows)
        out = {"input_ids": torch.full((R, width), _pad_id(tokenizer), dtype=torch.long),
               "labels": torch.full((R, width), IGNORE_INDEX, dtype=torch.long),
               "attention_mask": torch.zeros((R, width), dtype=torch.long),
               "position_ids": torch.zeros((R, width), dtype=torch.long)}
        for r, members in enumerate(rows):
            t = 0
            for ex in members:
                n = len(ex)
                labels = _labels(ex)
                labels[0] = IGNORE_INDEX  # never predicted from the previous document
                out["input_ids"][r, t:t + n] = torch.tensor(ex.ids)
                out["labels"][r, t:t + n] = torch.tensor(labels)
                out["attention_mask"][r, t:t + n] = 1
                out["position_ids"][r, t:t + n] = torch.arange(n)
                t += n
        return out

    def forward(self, model, batch):
        docs = _documents(batch["position_ids"], batch.get("attention_mask"))
        dtype = next(model.parameters()).dtype
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                     attention_mask=_block_diagonal_mask(docs, dtype)).logits


class PaddingFree(Plain):
    """Padding-free, like transformers' DataCollatorWithFlattening: one row of the concatenated
    examples, position_ids restarting at 0, the first label of each document -100, no attention
    mask; forward passes the position ids with use_cache=False so transformers derives the
    document boundaries from them. Declares packs."""

    name = "correct-padding-free"
    packs = True

    def collate(self, conversations, tokenizer, max_length):
        ids, labels, positions = [], [], []
        for ex in self.examples(conversations, tokenizer, max_length):
            ids += ex.ids
            labels += [IGNORE_INDEX] + _labels(ex)[1:]
            positions += list(range(len(ex)))
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions])}

    def forward(self, model, batch):
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                     use_cache=False).logits


class Shifted(Plain):
    """The shifted label convention (labels[t] is the target of logits[t], as torchtune), with its
    own loss that does not shift."""

    name = "correct-shifted"
    labels_shifted = True

    def loss(self, logits, labels, num_items_in_batch=None):
        flat = logits.reshape(-1, logits.shape[-1]).to(torch.promote_types(logits.dtype,
                                                                           torch.float32))
        total = F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                reduction="sum")
        n = num_items_in_batch if num_items_in_batch is not None else int(
            (labels != IGNORE_INDEX).sum())
        return total / n if n else total * 0.0


class SumOverCount(Plain):
    """The loss written as sum of token NLL (log_softmax, gather) / count, not F.cross_entropy's
    mean; num_items_in_batch, when given, is the count."""

    name = "correct-sum-over-count"

    def loss(self, logits, labels, num_items_in_batch=None):
        logp = torch.log_softmax(logits[:, :-1].to(torch.promote_types(logits.dtype,
                                                                        torch.float32)), dim=-1)
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        nll = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        total = (nll * keep).sum()
        count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
        return total / count if int(count) else total * 0.0


class Float32Loss(Plain):
    """The loss as transformers' ForCausalLMLoss computes it: logits upcast (here: cast) to
    float32 whatever they came in, shifted, F.cross_entropy summed and divided by
    num_items_in_batch (or the count); a float32 result even for float64 logits."""

    name = "correct-float32-loss"

    def loss(self, logits, labels, num_items_in_batch=None):
        logits = logits.float()
        shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
        shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
        total = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX,
                                reduction="sum")
        n = num_items_in_batch if num_items_in_batch is not None else int(
            (shift_labels != IGNORE_INDEX).sum())
        return total / n if n else total * 0.0


class TrainsAfterEotUnused(Plain):
    """Declares trains_after_eot = True (it MAY train the newline after the end token) but does
    not: declaring 'may train' must not require it."""

    name = "correct-trains-after-eot-unused"
    trains_after_eot = True


class LastTurnOnly(Plain):
    """turn_policy = 'last': only the last assistant turn is trained (declared)."""

    name = "correct-last-turn"
    turn_policy = "last"


class DropOverlong(Plain):
    """overlong = 'drop': an example longer than max_length is left out whole (declared)."""

    name = "correct-drop-overlong"
    overlong = "drop"


class TruncatePrompt(Plain):
    """overlong = 'truncate_prompt': an over-long example loses tokens from its start, so the end
    of the conversation stays (declared)."""

    name = "correct-truncate-prompt"
    overlong = "truncate_prompt"


class TruncateEnd(Plain):
    """overlong = 'truncate': an over-long example is cut at max_length, end token included
    (declared); an example left with nothing to train is dropped."""

    name = "correct-truncate"
    overlong = "truncate"


class Llama3(Plain):
    """On the llama3 template (BOS in the template, content trimmed, <|eot_id|> ends a turn)."""

    name = "correct-llama3"
    tokenizer = "llama3"


class WithOptions(Plain):
    """Declares two math-neutral options (S12): left padding and the sum/count loss."""

    name = "correct-with-options"
    options = {"left_padding": LeftPadding, "sum_over_count_loss": SumOverCount}


def _encode_per_turn(conversation, tokenizer, policy: str = "all") -> _Encoded:
    """Message-pair encoding (as LLaMA-Factory-style trainers do): each assistant turn's prompt
    (since the previous turn, through the generation prompt) and its response (content through
    the end of the turn) tokenized apart; the response's tokens through its first special
    token after the content are trained."""
    text = _render(tokenizer, conversation)
    special = _special_ids(tokenizer)
    ids, trained, turns, done = [], [], [], 0
    assistant = [j for j, m in enumerate(conversation) if m["role"] == "assistant"]
    for j in assistant:
        head_text = (_render(tokenizer, conversation[:j], True) if j else
                     _assistant_header(tokenizer))
        upto_text = _render(tokenizer, conversation[:j + 1])
        found = _by_prefix(text, head_text, upto_text,
                           _as_rendered(conversation, tokenizer, text, j))
        if found is not None:
            head, _, _, upto = found
        else:  # not prefix-preserving (Mistral moves the system prompt): the turn ends after
            # the first special token written after the content
            head, _, content_end, _ = _by_difference(conversation, tokenizer, text, j)
            upto = min((at + len(t) for t in tokenizer.all_special_tokens
                        if (at := text.find(t, content_end)) >= 0), default=len(text))
        prompt = tokenizer(text[done:head], add_special_tokens=False)["input_ids"]
        enc = tokenizer(text[head:upto], add_special_tokens=False, return_offsets_mapping=True)
        response, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        turn, content = text[head:upto], _as_rendered(conversation, tokenizer, text, j)
        at, shown = next(((turn.find(c), c) for c in (content, content.strip(), content.lstrip(),
                                                      content.rstrip()) if turn.find(c) >= 0),
                         (0, ""))
        if not content:  # an empty answer: after the glue whitespace, where a word would go
            at = len(turn) - len(turn.lstrip())
        content_end = at + len(shown)
        gap = turn[:at]
        begin = len(gap) - len(gap.lstrip()) if gap.strip() else at  # <think> text is trained
        # the first trained token is the first one holding a character of the trained text:
        # glue alone before it (SentencePiece's lone '▁' after [/INST]) is not trained
        first = next((k for k, (a, b) in enumerate(offsets) if b > begin), 0)
        end = next((k for k, (a, b) in enumerate(offsets)
                    if b > a and a >= content_end and response[k] in special), None)
        stop = (end + 1) if end is not None else len(response)
        train = policy == "all" or j == assistant[-1]
        ids += prompt
        trained += [False] * len(prompt)
        start = len(ids)
        ids += response
        trained += [train and first <= k < stop for k in range(len(response))]
        if train:
            turns.append((start + first, start + stop,
                          start + end if end is not None else None))
        done = upto
    tail = tokenizer(text[done:], add_special_tokens=False)["input_ids"] if done < len(text) \
        else []
    ids += tail
    trained += [False] * len(tail)
    return _Encoded(ids, trained, turns)


class PerTurn(Plain):
    """Declares tokenization = "per_turn": each prompt and response tokenized apart (message
    pairs), as inference tokenizes the prompt; its own per-turn encoder."""

    name = "correct-per-turn"
    tokenization = "per_turn"

    def examples(self, conversations, tokenizer, max_length):
        kept = []
        for conv in conversations:
            ex = _fit(_encode_per_turn(conv, tokenizer, self.turn_policy), max_length,
                      self.overlong)
            if ex is not None:
                kept.append(ex)
        if not kept:
            raise ValueError("nothing to train: every example of the batch was left out")
        return kept


def _tagged_source(tokenizer) -> str:
    """:func:`_tagged_template`, or a ValueError naming the tokenizer when there is none."""
    source = _tagged_template(tokenizer)
    if source is None:
        raise ValueError(f"no tagged twin of {tokenizer.name_or_path!r}'s template")
    return source


def _tagged_template(tokenizer) -> str | None:
    """The ``{% generation %}``-tagged twin of a bundled template (same rendering, tags around
    what the assistant produces), found by the tokenizer's bundled name."""
    from sft_conformance.assets import TEMPLATES
    from sft_conformance.assets.families import FAMILIES

    name = str(getattr(tokenizer, "name_or_path", "")).removeprefix("sft-conformance/")
    name = name.split("+")[0]
    tagged = f"{name}-generation"
    if tagged in TEMPLATES:
        return TEMPLATES[tagged].source
    if tagged in FAMILIES:
        return FAMILIES[tagged].template
    return None


class AgenticGenerationTags(Plain):
    """Tool conversations labelled by the tagged twin of the template
    (apply_chat_template(..., tools=..., return_assistant_tokens_mask=True), as TRL's
    assistant_only_loss does), the ids from the plain template; no reference code."""

    name = "correct-agentic-generation-tags"
    tokenizer = "chatml-tools"
    tools = True
    reasoning = "template"

    def examples(self, conversations, tokenizer, max_length):
        from sft_conformance.assets import copy_tokenizer

        source = _tagged_source(tokenizer)
        tagged = copy_tokenizer(tokenizer)
        tagged.chat_template = source
        kept = []
        for conv in conversations:
            messages, tools = (conv["messages"], conv.get("tools")) if isinstance(conv, dict) \
                else (conv, None)
            kwargs = {"tools": tools} if tools else {}
            out = tagged.apply_chat_template(list(messages), tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True, **kwargs)
            ids, mask = list(out["input_ids"]), [bool(m) for m in out["assistant_masks"]]
            turns = []
            for t, m in enumerate(mask):
                if m and (t == 0 or not mask[t - 1]):
                    turns.append([t, t + 1, None])
                elif m:
                    turns[-1][1] = t + 1
            special = _special_ids(tokenizer)
            turns = [(a, b, b - 1 if ids[b - 1] in special else None) for a, b, _ in turns]
            ex = _fit(_Encoded(ids, mask, turns), max_length, self.overlong)
            if ex is not None:
                kept.append(ex)
        if not kept:
            raise NoTrainedPositionError("nothing to train: every example was left out",
                                         field="conversations")
        return kept


class AgenticGenerationTagsLastTurn(AgenticGenerationTags):
    """Declares reasoning = "last_turn": the data path drops reasoning_content from every
    assistant message but the last before the tagged template labels it (its own loop, no
    reference code)."""

    name = "correct-agentic-last-turn-reasoning"
    tokenizer = "qwen3"
    reasoning = "last_turn"

    def examples(self, conversations, tokenizer, max_length):
        stripped = []
        for conv in conversations:
            messages = conv["messages"] if isinstance(conv, dict) else conv
            last = max((j for j, m in enumerate(messages) if m["role"] == "assistant"),
                       default=-1)
            messages = [m if j == last or m["role"] != "assistant"
                        else {k: v for k, v in m.items() if k != "reasoning_content"}
                        for j, m in enumerate(messages)]
            stripped.append(dict(conv, messages=messages) if isinstance(conv, dict)
                            else messages)
        return super().examples(stripped, tokenizer, max_length)


class AgenticPerTurn(AgenticGenerationTags):
    """Declares tokenization = "per_turn" on tool conversations: the whole rendering is cut at
    the character spans of the tagged twin's {% generation %} blocks (transformers'
    render_jinja_template), and each prompt and response piece is tokenized alone; no reference
    code."""

    name = "correct-agentic-per-turn"
    tokenization = "per_turn"

    def examples(self, conversations, tokenizer, max_length):
        from transformers.utils.chat_template_utils import render_jinja_template

        source = _tagged_source(tokenizer)
        special = _special_ids(tokenizer)
        # whitespace the generation prompt ends with ('\n' after ChatML's assistant header);
        # whitespace between it and the tagged text (Mistral's space after [/INST]) is not part
        # of what inference tokenizes as the prompt, so the response piece starts before it
        probe = [{"role": "user", "content": "x"}]
        prompt = _render(tokenizer, probe, True)
        prompt_ws = len(prompt) - len(prompt.rstrip())
        kept = []
        for conv in conversations:
            messages, tools = (conv["messages"], conv.get("tools")) if isinstance(conv, dict) \
                else (conv, None)
            (text,), (spans,) = render_jinja_template(
                conversations=[list(messages)], tools=tools or None, chat_template=source,
                return_assistant_tokens_mask=True, **tokenizer.special_tokens_map)
            ids, trained, turns, done = [], [], [], 0
            for a, b in list(spans) + [(len(text), len(text))]:
                cut = a
                while cut > done and text[cut - 1].isspace():
                    cut -= 1
                cut = min(a, cut + prompt_ws) if b > a else a
                for lo, hi, train in ((done, cut, False), (cut, b, True)):
                    if hi <= lo:
                        continue
                    enc = tokenizer(text[lo:hi], add_special_tokens=False,
                                    return_offsets_mapping=True)
                    piece = list(enc["input_ids"])
                    # a token of the response piece is trained when it holds a tagged character
                    marks = [train and (lo + s >= a or lo + e > a)
                             for s, e in enc["offset_mapping"]]
                    start = len(ids)
                    ids += piece
                    trained += marks
                    if train and any(marks):
                        first = start + marks.index(True)
                        end = start + len(piece) - 1
                        turns.append((first, start + len(piece),
                                      end if ids[end] in special else None))
                done = max(done, b)
            ex = _fit(_Encoded(ids, trained, turns), max_length, self.overlong)
            if ex is not None:
                kept.append(ex)
        if not kept:
            raise NoTrainedPositionError("nothing to train: every example was left out",
                                         field="conversations")
        return kept


_ALL = [Plain, OwnException, PadToMultipleOf8, BaseModelEos, Bf16Autocast, RightPadAllOnesMask,
        LeftPadding, LengthGrouped, NoAttentionMask, PackedUndeclared, PaddingFree, Shifted,
        SumOverCount, Float32Loss, TrainsAfterEotUnused, LastTurnOnly, DropOverlong,
        TruncatePrompt,
        TruncateEnd, Llama3, WithOptions, PerTurn, AgenticGenerationTags,
        AgenticGenerationTagsLastTurn, AgenticPerTurn]

REGISTRY = {cls.name: f"{__name__}:{cls.__name__}" for cls in _ALL}

HOW = {cls.name: " ".join((cls.__doc__ or "").split()) for cls in _ALL}
