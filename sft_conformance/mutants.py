"""Mutants: deliberately buggy targets, each one a real bug class, each caught by the check meant
for it. They prove that every check can fail; the reference proves that none fails wrongly.

``KILLS[name]`` is the check id meant to catch a mutant; ``BUGS[name]`` what the bug is and where
it was seen. ``sft-conformance mutants`` runs all of them through every check and prints the kill
table (kept in ``reports/mutants.md``).
"""

from __future__ import annotations

import torch

from sft_conformance.reference import (
    IGNORE_INDEX,
    NoTrainedPositionError,
    build_example,
    labels_for,
    pack_examples,
    pad_examples,
    sft_loss,
    truncate,
)

from .targets.reference import ReferencePackedTarget, ReferenceTarget


def _starts(labels: torch.Tensor):
    """(row, t) where a trained run starts (label set, previous label ignored)."""
    prev = torch.full_like(labels, IGNORE_INDEX)
    prev[:, 1:] = labels[:, :-1]
    return torch.nonzero((labels != IGNORE_INDEX) & (prev == IGNORE_INDEX), as_tuple=False)


class _Mutant(ReferenceTarget):
    def mutate(self, batch, tokenizer):  # pragma: no cover - overridden
        return batch

    def collate(self, conversations, tokenizer, max_length):
        return self.mutate(super().collate(conversations, tokenizer, max_length), tokenizer)


class OffByOneLate(_Mutant):
    """labels[:P] instead of labels[:P-1] (seed 001): the first response token is not trained."""

    name = "mutant-off-by-one-late"

    def mutate(self, batch, tokenizer):
        for r, t in _starts(batch["labels"]).tolist():
            batch["labels"][r, t] = IGNORE_INDEX
        return batch


class OffByOneEarly(_Mutant):
    """The mask stops one position short: the last prompt token is trained."""

    name = "mutant-off-by-one-early"

    def mutate(self, batch, tokenizer):
        for r, t in _starts(batch["labels"]).tolist():
            if t > 0:
                batch["labels"][r, t - 1] = batch["input_ids"][r, t - 1]
        return batch


class EosMaskedByValue(_Mutant):
    """labels[input_ids == pad_token_id] = -100: with pad == eos the end token is masked
    (trl #1623, #2059)."""

    name = "mutant-eos-masked-by-value"

    def mutate(self, batch, tokenizer):
        batch["labels"][batch["input_ids"] == tokenizer.pad_token_id] = IGNORE_INDEX
        return batch


class MissingEndToken(_Mutant):
    """The response is tokenized without its end-of-turn token (seed 003's SFTDataset)."""

    name = "mutant-missing-end-token"

    def mutate(self, batch, tokenizer):
        batch["labels"][batch["labels"] == tokenizer.eos_token_id] = IGNORE_INDEX
        return batch


class LabelsShiftedTwice(_Mutant):
    """Labels shifted in the collator although the model shifts again (declares HF labels)."""

    name = "mutant-labels-shifted-twice"

    def mutate(self, batch, tokenizer):
        shifted = torch.full_like(batch["labels"], IGNORE_INDEX)
        shifted[:, :-1] = batch["labels"][:, 1:]
        batch["labels"] = shifted
        return batch


class PerSequenceMean(ReferenceTarget):
    """The loss averages each sequence's token mean: short answers weigh as much as long ones."""

    name = "mutant-per-sequence-mean"

    def loss(self, logits, labels, num_items_in_batch=None):
        rows = [sft_loss(logits[b:b + 1], labels[b:b + 1]) for b in range(labels.shape[0])
                if (labels[b, 1:] != IGNORE_INDEX).any()]
        return torch.stack(rows).mean()


class MeanOfMicroBatchMeans(ReferenceTarget):
    """num_items_in_batch ignored: each micro-batch divides by its own count (trl #2175,
    transformers #24725)."""

    name = "mutant-mean-of-micro-batch-means"

    def loss(self, logits, labels, num_items_in_batch=None):
        return sft_loss(logits, labels)


class DenominatorCountsPadding(ReferenceTarget):
    """The loss divides the summed NLL by every position, padding and prompt included."""

    name = "mutant-denominator-counts-padding"

    def loss(self, logits, labels, num_items_in_batch=None):
        n = sft_loss(logits, labels, num_items_in_batch=1)
        return n / labels[:, 1:].numel() if num_items_in_batch is None else n / num_items_in_batch


class LeftPaddingWithoutPositions(ReferenceTarget):
    """Left padding with position ids 0..T-1 counted over the padding (trl PR #550)."""

    name = "mutant-left-padding-without-position-ids"

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference import Collator

        batch = Collator(padding_side="left").__call__(conversations, tokenizer, max_length)
        batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(
            batch["input_ids"]).clone()
        return batch


class AttentionMaskFromPadId(_Mutant):
    """attention_mask = input_ids != pad_id (seed 003's pad_collate): with pad == eos the real
    end tokens are hidden from attention."""

    name = "mutant-attention-mask-from-pad-id"

    def mutate(self, batch, tokenizer):
        batch["attention_mask"] = (batch["input_ids"] != tokenizer.pad_token_id).long()
        return batch


class TrainsPadding(_Mutant):
    """labels = input_ids.clone() after padding: the pad tokens are trained (alpaca-lora #315)."""

    name = "mutant-trains-padding"

    def mutate(self, batch, tokenizer):
        pad = batch["attention_mask"] == 0
        batch["labels"][pad] = batch["input_ids"][pad]
        return batch


class _PackedMutant(ReferencePackedTarget):
    def mutate(self, batch, tokenizer):  # pragma: no cover - overridden
        return batch

    def collate(self, conversations, tokenizer, max_length):
        return self.mutate(super().collate(conversations, tokenizer, max_length), tokenizer)


class PackingWithoutPositionReset(_PackedMutant):
    """Packed rows keep position ids 0..T-1 across documents (axolotl #1375)."""

    name = "mutant-packing-without-position-reset"

    def mutate(self, batch, tokenizer):
        batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(
            batch["input_ids"]).clone()
        batch.pop("document_ids")
        return batch


class PackingCrossDocumentAttention(ReferencePackedTarget):
    """Packed rows with restarting positions but a plain causal mask: documents attend to each
    other (trl #1230; position ids alone do not isolate documents under sdpa)."""

    name = "mutant-packing-cross-document-attention"

    def forward(self, model, batch):
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits


class PackingCrossDocumentTarget(_PackedMutant):
    """The first token of each packed document is a target of the previous document's last
    position (an EOS separator trained across the boundary)."""

    name = "mutant-packing-cross-document-target"

    def mutate(self, batch, tokenizer):
        starts = (batch["position_ids"] == 0) & (batch["attention_mask"] == 1)
        starts[:, 0] = False
        batch["labels"][starts] = batch["input_ids"][starts]
        return batch


class PackedPerRowMean(ReferencePackedTarget):
    """Packed rows and a per-sequence loss: the mean of each packed row's token mean, so a token
    of a sparsely trained row weighs more (found by the packing ablation, issue 14)."""

    name = "mutant-packing-per-row-mean"
    loss = PerSequenceMean.loss


class WrappedPackingSplitsDocuments(ReferenceTarget):
    """Concatenate everything and cut rows every max_length tokens ('wrapped' packing): documents
    are split across rows (torchtune PR #2613)."""

    name = "mutant-wrapped-packing-splits-documents"
    packs = True

    def collate(self, conversations, tokenizer, max_length):
        ids, labels, pos = [], [], []
        for conv in conversations:
            ex = build_example(conv, tokenizer)
            lab = labels_for(ex)
            lab[0] = IGNORE_INDEX
            ids += ex.input_ids
            labels += lab
            pos += list(range(len(ex)))
        rows = [(ids[i:i + max_length], labels[i:i + max_length], pos[i:i + max_length])
                for i in range(0, len(ids), max_length)]
        W = max(len(r[0]) for r in rows)
        out = {k: torch.full((len(rows), W), v, dtype=torch.long) for k, v in
               (("input_ids", tokenizer.pad_token_id), ("labels", IGNORE_INDEX),
                ("position_ids", 0), ("attention_mask", 0))}
        for r, (i, lab, p) in enumerate(rows):
            n = len(i)
            out["input_ids"][r, :n] = torch.tensor(i)
            out["labels"][r, :n] = torch.tensor(lab)
            out["position_ids"][r, :n] = torch.tensor(p)
            out["attention_mask"][r, :n] = 1
        return out


class PromptTokenizedSeparately(ReferenceTarget):
    """tokenize(prompt) + tokenize(response): a BPE merge across the boundary is lost
    (trl #1400, #4147; seed 003's SFTDataset)."""

    name = "mutant-prompt-tokenized-separately"
    turn_policy = "last"

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference.masks import render

        examples = []
        for conv in conversations:
            last = max(j for j, m in enumerate(conv) if m["role"] == "assistant")
            prompt = render(tokenizer, conv[:last], add_generation_prompt=True)
            full = render(tokenizer, conv[:last + 1])
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            r = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
            ex = build_example(conv, tokenizer, policy="last")
            n_tail = len(ex) - (max(ex.turns[-1].stop, 1))  # glue after the end token
            trained = [False] * len(p) + [True] * (len(r) - n_tail) + [False] * n_tail
            examples.append(type(ex)(p + r, trained))
        return pad_examples(examples, tokenizer.pad_token_id)


def _header(tokenizer) -> str:
    from sft_conformance.reference.masks import generation_prompt

    return generation_prompt(tokenizer)


class _TextSpanMutant(ReferenceTarget):
    """Train the characters [start, stop) of the rendered text, found by string search."""

    def span(self, text, header, eos):  # pragma: no cover - overridden
        raise NotImplementedError

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference.masks import Example, render

        header, eos = _header(tokenizer), tokenizer.eos_token
        examples = []
        for conv in conversations:
            text = render(tokenizer, conv)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            start, stop = self.span(text, header, eos)
            trained = [s < stop and e > start for s, e in enc["offset_mapping"]]
            examples.append(Example(list(enc["input_ids"]), trained))
        return pad_examples(examples, tokenizer.pad_token_id)


class HeaderFirstOccurrence(_TextSpanMutant):
    """Mask everything up to the first occurrence of the assistant header string, train the rest
    (trl #1493: a user message containing the header moves the mask)."""

    name = "mutant-header-first-occurrence"

    def span(self, text, header, eos):
        start = text.find(header) + len(header)
        return start, text.rfind(eos) + len(eos)


class HeaderLastOccurrence(_TextSpanMutant):
    """Train only after the last occurrence of the assistant header string: earlier turns are
    lost, and an assistant message quoting the header loses its beginning (unsloth #1290)."""

    name = "mutant-header-last-occurrence"

    def span(self, text, header, eos):
        start = text.rfind(header) + len(header)
        return start, text.rfind(eos) + len(eos)


class UserTurnsTrained(_TextSpanMutant):
    """One span from the first assistant content to the last end token: the user turns in
    between are trained (axolotl #1761)."""

    name = "mutant-user-turns-trained"

    def collate(self, conversations, tokenizer, max_length):
        batch = ReferenceTarget.collate(self, conversations, tokenizer, max_length)
        for r in range(batch["labels"].shape[0]):
            trained = torch.nonzero(batch["labels"][r] != IGNORE_INDEX).flatten()
            a, b = int(trained[0]), int(trained[-1])
            batch["labels"][r, a:b + 1] = batch["input_ids"][r, a:b + 1]
        return batch


class OnlyFirstAssistantTurn(ReferenceTarget):
    """Only the first assistant turn is trained (LLaMA-Factory PR #10827)."""

    name = "mutant-only-first-assistant-turn"

    def collate(self, conversations, tokenizer, max_length):
        examples = []
        for conv in conversations:
            ex = build_example(conv, tokenizer)
            first = ex.turns[0]
            ex.trained = [first.start <= t < first.stop for t in range(len(ex))]
            examples.append(ex)
        return pad_examples(examples, tokenizer.pad_token_id)


class NanOnAllMasked(ReferenceTarget):
    """sum / count with no guard: a micro-batch with no trained position gives NaN (trl #1053)."""

    name = "mutant-nan-on-all-masked"

    def loss(self, logits, labels, num_items_in_batch=None):
        if num_items_in_batch is not None:
            return sft_loss(logits, labels, num_items_in_batch=num_items_in_batch)
        nll = sft_loss(logits, labels, num_items_in_batch=1)
        return nll / (labels[:, 1:] != IGNORE_INDEX).sum()


class DoubleBos(_Mutant):
    """tokenizer(text) with add_special_tokens=True on a template that already has BOS: two BOS
    tokens (trl #5213)."""

    name = "mutant-double-bos"
    tokenizer = "llama3"

    def mutate(self, batch, tokenizer):
        bos = torch.full((batch["input_ids"].shape[0], 1), tokenizer.bos_token_id)
        batch["input_ids"] = torch.cat([bos, batch["input_ids"]], 1)
        batch["labels"] = torch.cat([torch.full_like(bos, IGNORE_INDEX), batch["labels"]], 1)
        batch["attention_mask"] = torch.cat([torch.ones_like(bos), batch["attention_mask"]], 1)
        batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(
            batch["input_ids"]).clone()
        return batch


class FusedLossDropsMask(ReferenceTarget):
    """A fused/chunked loss that casts -100 to a token id: the mask is lost when the option is on
    (unsloth-zoo PR #1279, trl PR #3674)."""

    name = "fused-loss-variant"

    def loss(self, logits, labels, num_items_in_batch=None):
        return sft_loss(logits, labels.clamp(min=0), num_items_in_batch=num_items_in_batch)


class FusedLossOptionDropsMask(ReferenceTarget):
    """Declares a fused-loss option that should not change the math, but drops the mask."""

    name = "mutant-fused-loss-drops-mask"
    options = {"fused_loss": FusedLossDropsMask}


class TruncateDropsEndToken(ReferenceTarget):
    """input_ids[:max_length] after tokenization (seed 003): an over-long answer loses its end
    token although the target declares 'truncate_response' (trl #6668)."""

    name = "mutant-truncate-drops-end-token"

    def collate(self, conversations, tokenizer, max_length):
        examples = []
        for conv in conversations:
            ex = build_example(conv, tokenizer)
            ex.input_ids, ex.trained = ex.input_ids[:max_length], ex.trained[:max_length]
            if any(ex.trained):
                examples.append(ex)
        return pad_examples(examples, tokenizer.pad_token_id)


class KeepsZeroTargetExample(ReferenceTarget):
    """Truncation keeps examples whose every trained token was cut (torchtune #2341)."""

    name = "mutant-keeps-zero-target-example"
    overlong = "truncate_prompt"

    def collate(self, conversations, tokenizer, max_length):
        examples = []
        for conv in conversations:
            ex = build_example(conv, tokenizer)
            ex.input_ids, ex.trained = ex.input_ids[:max_length], ex.trained[:max_length]
            examples.append(ex)
        return pad_examples(examples, tokenizer.pad_token_id)


def _kept(examples):
    """The examples left after truncation; refusing the batch, as the reference does, when none
    is left (S9 allows that)."""
    if not examples:
        raise NoTrainedPositionError("every example of the batch was dropped; nothing to train")
    return examples


class DropButTruncates(ReferenceTarget):
    """Declares overlong = 'drop' but truncates the response of an over-long example (keeping the
    end token) instead of leaving it out: the declaration is not held."""

    name = "mutant-drop-but-truncates"
    overlong = "drop"

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference import Collator

        return Collator(overlong="truncate_response")(conversations, tokenizer, max_length)


class TruncatePromptCutsEnd(ReferenceTarget):
    """Declares overlong = 'truncate_prompt' but cuts the end of the response (keeping the end
    token) instead of the start of the prompt: the declaration is not held."""

    name = "mutant-truncate-prompt-cuts-end"
    overlong = "truncate_prompt"

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference import Collator

        return Collator(overlong="truncate_response")(conversations, tokenizer, max_length)


class ExtraEndTokenNoMask(ReferenceTarget):
    """Appends an extra end-of-turn token, trained, after each example's last token (an EOS added
    on top of the template's own) and returns no attention_mask, so nothing marks where the
    template's tokens end."""

    name = "mutant-extra-end-token-no-mask"

    def collate(self, conversations, tokenizer, max_length):
        examples = []
        for i, conv in enumerate(conversations):
            ex = build_example(conv, tokenizer, index=i)
            end = ex.input_ids[ex.turns[-1].end_token]
            ex = truncate(ex, max_length - 1, self.overlong, index=i)  # room for the extra one
            if ex is not None:
                ex.input_ids, ex.trained = ex.input_ids + [end], ex.trained + [True]
                examples.append(ex)
        batch = pad_examples(_kept(examples), tokenizer.pad_token_id)
        return {"input_ids": batch["input_ids"], "labels": batch["labels"]}


class PackedDocumentNothingToTrain(ReferencePackedTarget):
    """Over-long conversations are cut at the last whole message that fits; when not even the
    first assistant message fits, the prompt-only remainder (nothing to train) is still packed,
    beside trained documents (torchtune #2341, counted per document)."""

    name = "mutant-packed-document-nothing-to-train"
    overlong = "truncate"

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference.masks import render

        examples = []
        for i, conv in enumerate(conversations):
            ex = build_example(conv, tokenizer, index=i)
            if len(ex) > max_length:
                keep = 0
                for k in range(1, len(conv) + 1):
                    n = len(tokenizer(render(tokenizer, conv[:k]),
                                      add_special_tokens=False)["input_ids"])
                    if n <= max_length:
                        keep = n
                ex.input_ids, ex.trained = ex.input_ids[:keep], ex.trained[:keep]
            if len(ex):
                examples.append(ex)
        batch = pack_examples(examples, max_length, tokenizer.pad_token_id)
        batch.pop("rows")
        return batch


class PadEosPromptUndercount(ReferenceTarget):
    """The prompt length is measured as (prompt_ids != pad_id).sum(): with pad == eos every end
    token inside the prompt is not counted, so the last header token(s) before the response are
    trained."""

    name = "mutant-pad-eos-prompt-undercount"

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference.masks import render

        examples = []
        for i, conv in enumerate(conversations):
            ex = build_example(conv, tokenizer, index=i)
            for span in ex.turns:
                j = span.message
                prompt = tokenizer(render(tokenizer, conv[:j], add_generation_prompt=True),
                                   add_special_tokens=False)["input_ids"] if j else []
                measured = int((torch.tensor(prompt, dtype=torch.long)
                                != tokenizer.pad_token_id).sum())
                for t in range(min(span.start, measured), span.start):
                    ex.trained[t] = True
            ex = truncate(ex, max_length, self.overlong, index=i)
            if ex is not None:
                examples.append(ex)
        return pad_examples(_kept(examples), tokenizer.pad_token_id)


def _end_text(tokenizer, example) -> str | None:
    span = example.turns[-1] if example.turns else None
    if span is None or span.end_token is None:
        return None
    return tokenizer.decode([example.input_ids[span.end_token]])


class EndTokenAppendedUnlessPresent(ReferenceTarget):
    """The end token is appended to the response only if the response does not already end with
    its text (`if not text.endswith(eos): text += eos`, LitGPT-style SFTDataset code): an answer
    whose content ends with '<|im_end|>' keeps that text as its only end, and the template's
    real end-of-turn token is lost."""

    name = "mutant-end-token-appended-unless-present"
    multi_turn = False

    def collate(self, conversations, tokenizer, max_length):
        examples = []
        for i, conv in enumerate(conversations):
            ex = build_example(conv, tokenizer, index=i)
            end = _end_text(tokenizer, ex)
            last = ex.turns[-1] if ex.turns else None
            if end and conv[last.message]["content"].rstrip().endswith(end):
                k = last.end_token  # "already ends with eos": the real one is never added
                ex = type(ex)(ex.input_ids[:k] + ex.input_ids[k + 1:],
                              ex.trained[:k] + ex.trained[k + 1:], [], ex.text)
                if len(ex) > max_length:
                    continue
            else:
                ex = truncate(ex, max_length, self.overlong, index=i)
            if ex is not None:
                examples.append(ex)
        return pad_examples(_kept(examples), tokenizer.pad_token_id)


class TokenizesWithSpecialTokens(ReferenceTarget):
    """Renders the conversation to text, then calls tokenizer(text) with its default
    add_special_tokens=True: a tokenizer whose post-processor adds BOS (Llama 3, Mistral v0.3)
    gives a second BOS after the template's own (sglang PR #888)."""

    name = "mutant-tokenizes-with-special-tokens"
    tokenizer = "llama3"

    def collate(self, conversations, tokenizer, max_length):
        examples = []
        for i, conv in enumerate(conversations):
            ex = build_example(conv, tokenizer, index=i)
            ids = tokenizer(ex.text)["input_ids"]  # the bug: add_special_tokens defaults to True
            extra = len(ids) - len(ex)
            if extra > 0 and ids[extra:] == ex.input_ids:  # specials added in front
                ex.input_ids, ex.trained = ids, [False] * extra + ex.trained
            ex = truncate(ex, max_length, self.overlong, index=i)
            if ex is not None:
                examples.append(ex)
        return pad_examples(_kept(examples), tokenizer.pad_token_id)


class DropsFullyMaskedRows(ReferenceTarget):
    """Masks by searching the assistant header's token ids in the ids (unsloth's
    train_on_responses_only), then drops every row left with no trained label, raising when
    none is left: where the tokenizer merges the header's last piece with the answer's first
    characters, the header is not found and a conversation that had tokens to train is lost."""

    name = "mutant-drops-fully-masked-rows"

    def collate(self, conversations, tokenizer, max_length):
        header = tokenizer(_header(tokenizer), add_special_tokens=False)["input_ids"]
        examples = []
        for i, conv in enumerate(conversations):
            ex = build_example(conv, tokenizer, index=i)
            ids, trained = ex.input_ids, [False] * len(ex)
            ends = {s.end_token for s in ex.turns if s.end_token is not None}
            k = 0
            while header and k + len(header) <= len(ids):
                if ids[k:k + len(header)] == header:
                    t = k + len(header)
                    while t < len(ids):
                        trained[t] = True
                        if t in ends:
                            break
                        t += 1
                    k = t
                k += 1
            ex = type(ex)(ids, trained, ex.turns, ex.text)
            if ex.n_trained and len(ex) <= max_length:  # the filter: no trained label, dropped
                examples.append(ex)
        if not examples:
            raise ValueError("no samples left after dropping samples with no trainable tokens")
        return pad_examples(examples, tokenizer.pad_token_id)


class PromptLengthCountsNonPad(PadEosPromptUndercount):
    """The prompt length is measured as (prompt_ids != pad_id).sum() (stanford_alpaca's
    _tokenize_fn): a message that contains the pad token's own text ('<pad>',
    '<|endoftext|>') loses one count per occurrence and the header after it is trained. Pinned
    to pad != eos, so only the content can trigger it."""

    name = "mutant-prompt-length-counts-non-pad"
    pad_equals_eos = False


# -- agentic: tool calls, tool results, reasoning (S13-S15) ---------------------------------------


class _AgenticMutant(ReferenceTarget):
    """The reference's examples, with the trained positions changed by ``mutate_example``."""

    tokenizer = "chatml-tools"

    def mutate_example(self, ex, conversation, tokenizer):  # pragma: no cover - overridden
        return ex

    def collate(self, conversations, tokenizer, max_length):
        examples = []
        for i, conv in enumerate(conversations):
            ex = self.mutate_example(build_example(conv, tokenizer, index=i), conv, tokenizer)
            ex = truncate(ex, max_length, self.overlong, index=i)
            if ex is not None:
                examples.append(ex)
        return pad_examples(_kept(examples), tokenizer.pad_token_id)


class ToolResultsTrained(_AgenticMutant):
    """Tool results are trained like the assistant's text (TRL's default loss on a messages +
    tools dataset without assistant_only_loss; ARPO#9, oumi PR #2369, Megatron-Bridge#2598)."""

    name = "mutant-tool-results-trained"

    def mutate_example(self, ex, conversation, tokenizer):
        for k, region in ex.regions.items():
            if ex.roles.get(k) == "tool":
                for t in ex.positions(region):
                    ex.trained[t] = True
        return ex


class ToolCallArgumentsMasked(_AgenticMutant):
    """Only an assistant message's content is trained: the tool calls rendered beside it
    (names, arguments, wrappers) are masked (ms-swift#9263, axolotl PR #2115)."""

    name = "mutant-tool-call-arguments-masked"

    def mutate_example(self, ex, conversation, tokenizer):
        from sft_conformance.reference.agentic import Locator
        from sft_conformance.reference.conversation import split

        messages, tools = split(conversation)
        loc = Locator(tokenizer, messages, tools, ex.text)
        for j in ex.calls:
            calls = loc.region(j, ("tool_calls",))
            if calls is not None:
                for t in ex.positions(calls):
                    ex.trained[t] = False
        return ex


class ToolCallEndUntrained(_AgenticMutant):
    """The end-of-turn token of a turn that calls tools is not trained: the model never
    learns to stop after a call (prime-rl PR #2644, TRL PR #5988, slime#514)."""

    name = "mutant-tool-call-end-untrained"

    def mutate_example(self, ex, conversation, tokenizer):
        for span in ex.turns:
            if span.message in ex.calls and span.end_token is not None:
                ex.trained[span.end_token] = False
        return ex


class ToolsNotPassedToTemplate(_AgenticMutant):
    """The conversation's tools never reach the chat template: rendered without tools=, the
    schemas are missing from the system prompt (slime#1008, open-instruct PR #1746)."""

    name = "mutant-tools-not-passed-to-template"

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference.conversation import messages_of

        return super().collate([messages_of(c) for c in conversations], tokenizer, max_length)


class ReasoningMasked(_AgenticMutant):
    """Reasoning the template renders inside a trained turn is masked (axolotl#3088, ms-swift
    #4939): the model is trained to answer without the reasoning it was shown."""

    name = "mutant-reasoning-masked"
    tokenizer = "qwen3"

    def mutate_example(self, ex, conversation, tokenizer):
        for region in ex.reasoning.values():
            for t in ex.positions(region):
                ex.trained[t] = False
        return ex


class ToolResultsRenderedApart(_AgenticMutant):
    """Consecutive tool results are rendered as separate turns (each its own
    '<|im_start|>user' block) instead of the one block the template groups them in: the model
    trains on a layout inference never shows (slime#2263, LLaMA-Factory PR #9630). The ChatML
    templates' grouping (chatml-tools, Qwen2.5, Qwen3)."""

    name = "mutant-tool-results-rendered-apart"
    tokenizer = "qwen2.5"
    GROUPED = "</tool_response>\n<tool_response>"
    APART = "</tool_response><|im_end|>\n<|im_start|>user\n<tool_response>"

    def mutate_example(self, ex, conversation, tokenizer):
        from sft_conformance.reference.masks import Example

        if self.GROUPED not in ex.text:
            return ex
        text, origin, at = [], [], 0  # the new text, and each new character's old index
        while (hit := ex.text.find(self.GROUPED, at)) >= 0:
            text.append(ex.text[at:hit])
            origin += range(at, hit)
            cut = hit + len("</tool_response>")
            text.append(self.APART)
            origin += range(hit, cut)
            origin += [-1] * (len(self.APART) - len(self.GROUPED))
            origin += range(cut, hit + len(self.GROUPED))
            at = hit + len(self.GROUPED)
        text.append(ex.text[at:])
        origin += range(at, len(ex.text))
        text = "".join(text)
        trained_chars = {c for t, (a, b) in enumerate(ex.offsets) if ex.trained[t]
                         for c in range(a, b)}
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        trained = [b > a and origin[a] in trained_chars for a, b in enc["offset_mapping"]]
        return Example(ids, trained, [], text)


class PrefixRenderLabels(_AgenticMutant):
    """The ids are the whole conversation's rendering, but each assistant turn's span is
    found by rendering the prefix up to it and counting its tokens: right on a prefix-stable
    template, shifted on Qwen3, whose rendering of a turn depends on what follows it (the empty
    <think> block of a last turn, reasoning dropped before the last user query;
    open-instruct#1800, #1804), and wherever the tokenizer merges the generation prompt's
    newline with the answer."""

    name = "mutant-prefix-render-labels"
    tokenizer = "qwen3"

    @staticmethod
    def trained_positions(conv, tokenizer) -> list[bool]:
        """The bug: each assistant turn from the token count of the prefix rendered with the
        generation prompt to the count of the prefix through the turn, less the glue after
        the end token (ChatML's newline)."""
        from sft_conformance.reference.agentic import render
        from sft_conformance.reference.conversation import split

        def ids(messages, tools, prompt=False):
            return tokenizer(render(tokenizer, messages, tools, add_generation_prompt=prompt),
                             add_special_tokens=False)["input_ids"]

        messages, tools = split(conv)
        n = len(ids(messages, tools))
        trained = [False] * n
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            start, through = len(ids(messages[:k], tools, True)), ids(messages[:k + 1], tools)
            stop = len(through)
            if stop and not tokenizer.decode(through[-1:]).strip():
                stop -= 1  # the newline after <|im_end|>
            for t in range(start, min(stop, n)):
                trained[t] = True
        return trained

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.reference.masks import Example

        examples = []
        for i, conv in enumerate(conversations):
            ex = build_example(conv, tokenizer, index=i)
            trained = self.trained_positions(conv, tokenizer)
            ex = truncate(Example(ex.input_ids, trained, [], ex.text), max_length,
                          self.overlong, index=i)
            if ex is not None:
                examples.append(ex)
        return pad_examples(_kept(examples), tokenizer.pad_token_id)


class ReasoningKeptEverywhere(_AgenticMutant):
    """The template is patched to keep every turn's reasoning (Qwen3 drops it from turns
    before the last user query): training shows reasoning in the history that inference never
    shows (verl#3477, PR #7322: 783 of 10,726 rows differed)."""

    name = "mutant-reasoning-kept-everywhere"
    tokenizer = "qwen3"
    RULE = "loop.index0 > query.index and (loop.last or turn.reasoning)"
    KEEP = "(loop.index0 > query.index and loop.last) or turn.reasoning"

    def __init__(self):
        self._patched = {}

    def collate(self, conversations, tokenizer, max_length):
        from sft_conformance.assets import copy_tokenizer

        if self.RULE not in (tokenizer.chat_template or ""):
            return super().collate(conversations, tokenizer, max_length)
        key = id(tokenizer)
        if key not in self._patched:
            patched = copy_tokenizer(tokenizer)
            patched.chat_template = tokenizer.chat_template.replace(self.RULE, self.KEEP)
            self._patched = {key: (tokenizer, patched)}  # keeps tokenizer alive: id stays its
        return super().collate(conversations, self._patched[key][1], max_length)


_ALL = [OffByOneLate, OffByOneEarly, EosMaskedByValue, MissingEndToken, LabelsShiftedTwice,
        PerSequenceMean, MeanOfMicroBatchMeans, DenominatorCountsPadding,
        LeftPaddingWithoutPositions, AttentionMaskFromPadId, TrainsPadding,
        PackingWithoutPositionReset, PackingCrossDocumentAttention, PackingCrossDocumentTarget,
        PackedPerRowMean, WrappedPackingSplitsDocuments, PromptTokenizedSeparately,
        HeaderFirstOccurrence, HeaderLastOccurrence, UserTurnsTrained, OnlyFirstAssistantTurn,
        NanOnAllMasked, DoubleBos, FusedLossOptionDropsMask, TruncateDropsEndToken,
        KeepsZeroTargetExample, DropButTruncates, TruncatePromptCutsEnd, ExtraEndTokenNoMask,
        PackedDocumentNothingToTrain, PadEosPromptUndercount, PromptLengthCountsNonPad,
        EndTokenAppendedUnlessPresent, TokenizesWithSpecialTokens, DropsFullyMaskedRows,
        ToolResultsTrained, ToolCallArgumentsMasked, ToolCallEndUntrained,
        ToolsNotPassedToTemplate, ReasoningMasked, ToolResultsRenderedApart, PrefixRenderLabels,
        ReasoningKeptEverywhere]

REGISTRY = {cls.name: f"{__name__}:{cls.__name__}" for cls in _ALL}

# a mutant fails by design and its collate is ours (cheap): serving its label-level batches
# from chunk calls (sft_conformance.batch_judging) would only add the recording pass and the
# re-run of each failing check
for _cls in _ALL:
    _cls.batch_judging = False

KILLS = {
    "mutant-off-by-one-late": "S2",
    "mutant-off-by-one-early": "S3",
    "mutant-eos-masked-by-value": "S4",
    "mutant-missing-end-token": "S4",
    "mutant-labels-shifted-twice": "S2",
    "mutant-per-sequence-mean": "S6",
    "mutant-mean-of-micro-batch-means": "S7",  # and S7dp, across ranks
    "mutant-denominator-counts-padding": "S6",
    "mutant-left-padding-without-position-ids": "S5",
    "mutant-attention-mask-from-pad-id": "S5",
    "mutant-trains-padding": "S5",
    "mutant-packing-without-position-reset": "S8",
    "mutant-packing-cross-document-attention": "S8",
    "mutant-packing-cross-document-target": "S8",
    "mutant-packing-per-row-mean": "S6",
    "mutant-wrapped-packing-splits-documents": "S8",
    "mutant-prompt-tokenized-separately": "S1",
    "mutant-header-first-occurrence": "S11",
    "mutant-header-last-occurrence": "S10",
    "mutant-user-turns-trained": "S10",
    "mutant-only-first-assistant-turn": "S10",
    "mutant-nan-on-all-masked": "S9",
    "mutant-double-bos": "S1",
    "mutant-fused-loss-drops-mask": "S12",
    "mutant-truncate-drops-end-token": "S9",
    "mutant-keeps-zero-target-example": "S9",
    "mutant-drop-but-truncates": "S9",
    "mutant-truncate-prompt-cuts-end": "S9",
    "mutant-extra-end-token-no-mask": "S1",
    "mutant-packed-document-nothing-to-train": "S9",  # counted per document, not per row
    "mutant-pad-eos-prompt-undercount": "S3",  # needs S3 run with pad == eos
    "mutant-prompt-length-counts-non-pad": "S3",  # the pad token's text in a message
    "mutant-end-token-appended-unless-present": "S4",  # the end token's text ending an answer
    "mutant-tokenizes-with-special-tokens": "S1",  # a tokenizer that adds BOS by itself
    "mutant-drops-fully-masked-rows": "S2",  # a trainable conversation lost: failed, not error
    "mutant-tool-results-trained": "S13",
    "mutant-tool-call-arguments-masked": "S14",
    "mutant-tool-call-end-untrained": "S14",
    "mutant-tools-not-passed-to-template": "S1",  # needs a tool conversation among S1's draws
    "mutant-reasoning-masked": "S15",
    "mutant-tool-results-rendered-apart": "S1",  # needs consecutive tool results
    "mutant-prefix-render-labels": "S2",  # Qwen3 (not prefix-stable), or glue merged by BPE
    "mutant-reasoning-kept-everywhere": "S1",  # reasoning before the last user query
}

#: the mutants of tool conversations and reasoning (their checks need a template with tools)
AGENTIC = ("mutant-tool-results-trained", "mutant-tool-call-arguments-masked",
           "mutant-tool-call-end-untrained", "mutant-tools-not-passed-to-template",
           "mutant-reasoning-masked", "mutant-tool-results-rendered-apart",
           "mutant-prefix-render-labels", "mutant-reasoning-kept-everywhere")

BUGS = {cls.name: (cls.__doc__ or "").strip().replace("\n    ", " ") for cls in _ALL}


def not_applicable(name: str, tokenizer) -> str | None:
    """Why mutant ``name``'s bug cannot occur under ``tokenizer`` (None when it can): the
    mutant x tokenizer table says so instead of counting a survivor."""
    if name in AGENTIC:
        from .checks.agentic import REASONING, WEATHER, renders_tools
        from .reference.agentic import render

        why = renders_tools(tokenizer)
        if why:
            return why
        if name == "mutant-tools-not-passed-to-template" and (
                render(tokenizer, WEATHER["messages"], WEATHER["tools"])
                == render(tokenizer, WEATHER["messages"])):
            return ("the template renders no tool schemas (DeepSeek's), so leaving tools out "
                    "changes nothing")
        if name == "mutant-reasoning-masked" and "I need the weather tool." not in render(
                tokenizer, REASONING["messages"], REASONING["tools"]):
            return "the template renders no reasoning, so there is none to mask"
        if name == "mutant-tool-results-rendered-apart":
            from .checks.agentic import PARALLEL

            try:
                text = render(tokenizer, PARALLEL["messages"], PARALLEL["tools"])
            except Exception:
                text = ""
            if ToolResultsRenderedApart.GROUPED not in text:
                return ("the template does not group consecutive tool results the ChatML way "
                        "(this mutant splits '<tool_response>' blocks only)")
        if name == "mutant-prefix-render-labels":
            from .checks.agentic import PARALLEL, REASONING_FOLLOW_UP

            same = True
            for conv in (WEATHER, PARALLEL, REASONING, REASONING_FOLLOW_UP):
                try:
                    ex = build_example(conv, tokenizer)
                except Exception:
                    continue
                same = same and PrefixRenderLabels.trained_positions(conv, tokenizer) \
                    == ex.trained
            if same:
                return ("counting the tokens of rendered prefixes finds the reference's spans "
                        "on every tool and reasoning fixture (the template is prefix-stable at "
                        "assistant turns and no glue merges with an answer)")
        if name == "mutant-reasoning-kept-everywhere" and \
                ReasoningKeptEverywhere.RULE not in (tokenizer.chat_template or ""):
            return ("the template has no Qwen3 last-query rule to patch (it keeps or drops "
                    "reasoning by a rule of its own)")

    if name == "mutant-tokenizes-with-special-tokens":
        probe = "hi"
        if (tokenizer(probe)["input_ids"]
                == tokenizer(probe, add_special_tokens=False)["input_ids"]):
            return ("the tokenizer adds no special token of its own (add_special_tokens=True "
                    "gives the same ids), so tokenizing with it changes nothing")
    if name == "mutant-double-bos" and tokenizer.bos_token is None:
        return ("the tokenizer has no bos token (the Qwen families), so there is no bos to "
                "double")
    if name in ("mutant-header-first-occurrence", "mutant-header-last-occurrence",
                "mutant-drops-fully-masked-rows"):
        if not _header(tokenizer):
            return ("the template has no generation prompt (Mistral: the response follows "
                    "[/INST] directly), so there is no assistant header string to search for")
    return None

