"""TRL targets: ``trl.SFTTrainer``'s own dataset preparation and collator.

Each ``collate`` builds an ``SFTTrainer`` (tiny model from
:func:`sft_conformance.assets.tiny_model`, CPU, ``report_to=[]``, ``bf16=False``,
``gradient_checkpointing=False``, ``use_cpu=True``,
output directory in a temporary directory, no hub) on a ``datasets.Dataset`` of the
conversations, with ``train_sampling_strategy="sequential"`` and a batch size larger than the
prepared dataset, and returns the first batch of ``trainer.get_train_dataloader()``: the trainer's
tokenization, label building, truncation, packing and ``trainer.data_collator``, all of it TRL's.
Rows follow the prepared dataset's order: the conversations' order without packing (an example
TRL drops, e.g. left with no trained token, is simply missing), TRL's packing order with it.

The trainer's ``datasets`` maps run without progress bars and without fingerprint hashing
(:func:`sft_conformance.adapters._datasets.in_memory_datasets`: the datasets live in memory,
where a fingerprint names no cache file); the rows they build are TRL's.

Labels are unshifted (the Hugging Face convention). ``forward(model, batch)`` calls the model as
``SFTTrainer.compute_loss`` does: every key of the batch except ``labels`` as keyword arguments,
``use_cache=False``; a padding-free batch has ``position_ids`` (restarting at 0 per document),
``cu_seq_lens_q/k``, ``max_length_q/k``, ``seq_idx`` and no ``attention_mask``. (The trainer also
passes ``fused_lm_head=True`` and computes the loss inside the model's fused head; ``forward``
returns the plain logits, so these targets have no ``loss`` capability.)
"""

from __future__ import annotations

import dataclasses
import re
import tempfile

INSTALL_HINT = "pip install 'sft-conformance[trl]'"

#: ChatML with ``{% generation %}`` tags around the content only: the end-of-turn ``<|im_end|>``
#: is outside the tags (a common hand-written training template). Renders exactly like ChatML.
CHATML_GENERATION_EOT_OUTSIDE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] -}}{%- endgeneration -%}"
    "{{- '<|im_end|>' + '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

#: a ``{% generation %}`` block whose expression ends with the end-of-turn token: a quoted string
#: or ``eos_token`` (the shape of every tagged template the suite ships, bundled and real)
_TAGGED_EOT = re.compile(
    r"(\{%-?\s*generation\s*-?%\}\{\{-?\s*)((?:(?!\}\}).)*?)\s*\+\s*"
    r"('(?:[^'\\]|\\.)*'|eos_token)(\s*-?\}\}\{%-?\s*endgeneration\s*-?%\})")


def eot_outside(template: str) -> str:
    """``template`` with the end-of-turn token of each ``{% generation %}`` block moved after
    ``{% endgeneration %}``: it renders exactly as before, but the tags hold the content only
    (:data:`CHATML_GENERATION_EOT_OUTSIDE` is this for ChatML). ValueError when the template has
    no block of that shape (``{% generation %}{{ ... + <end token> }}{% endgeneration %}``)."""
    out, n = _TAGGED_EOT.subn(r"\1\2\4{{- \3 -}}", template)
    if not n:
        raise ValueError("the tokenizer's chat template has no {% generation %} block that ends "
                         "with its end-of-turn token, so there is no end token to move outside "
                         "the tags (use a tokenizer with a tagged template, e.g. "
                         "chatml-generation or qwen2.5-generation)")
    return out


_BATCH_SIZE = 1 << 14  # larger than any prepared dataset: the first batch holds every row
_NOT_MODEL_INPUTS = ("labels", "seq_lengths")
CHECK_IDS = tuple(f"S{i}" for i in range(1, 13))


class _TRLTarget:
    labels_shifted = False
    turn_policy = "all"
    overlong = "truncate"  # SFTConfig(truncation_mode="keep_start"): the end is cut
    requires = ("trl", "datasets", "accelerate")
    install_hint = INSTALL_HINT
    tokenizer = "chatml-generation"
    #: SFTConfig keyword arguments of this target
    config: dict = {}
    #: a template that replaces the tokenizer's own for this target, or None
    chat_template: str | None = None

    def template_for(self, tokenizer) -> str | None:
        """The chat template the user sets on the tokenizer for this configuration, or None to
        keep the tokenizer's own."""
        return self.chat_template

    def __init__(self):
        self._models = {}

    # -- what the user hands to SFTTrainer ---------------------------------------------------
    def rows(self, conversations):
        return [{"messages": list(c)} for c in conversations]

    def sft_config(self, output_dir, max_length):
        from trl import SFTConfig

        kwargs = {"max_length": max_length, **self.config}
        # transformers >= 5.2x renamed gradient_checkpointing (SFTConfig defaults it to True)
        fields = {f.name for f in dataclasses.fields(SFTConfig)}
        ckpt = ("activation_checkpointing" if "activation_checkpointing" in fields
                else "gradient_checkpointing")
        kwargs[ckpt] = False
        return SFTConfig(output_dir=output_dir, report_to=[], bf16=False, fp16=False, use_cpu=True,
                         per_device_train_batch_size=_BATCH_SIZE,
                         train_sampling_strategy="sequential", dataloader_num_workers=0,
                         dataset_num_proc=None, save_strategy="no", logging_strategy="no",
                         seed=0, **kwargs)

    def _model(self, tokenizer):
        from sft_conformance.assets import tiny_model, vocabulary_size

        key = (vocabulary_size(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
        if key not in self._models:
            self._models[key] = tiny_model(tokenizer)
        return self._models[key]

    def trainer(self, conversations, tokenizer, max_length, output_dir):
        """The ``SFTTrainer`` a user would build for these conversations."""
        from datasets import Dataset
        from trl import SFTTrainer

        from sft_conformance.assets import copy_tokenizer

        tok = copy_tokenizer(tokenizer)  # the trainer sets pad/eos tokens on it
        template = self.template_for(tok)
        if template is not None:
            tok.chat_template = template
        return SFTTrainer(model=self._model(tok), args=self.sft_config(output_dir, max_length),
                          train_dataset=Dataset.from_list(self.rows(conversations)),
                          processing_class=tok)

    def collate(self, conversations, tokenizer, max_length):
        from ._datasets import in_memory_datasets

        with in_memory_datasets(), \
                tempfile.TemporaryDirectory(prefix="sft-conformance-trl-") as out:
            trainer = self.trainer(conversations, tokenizer, max_length, out)
            batch = next(iter(trainer.get_train_dataloader()), None)
        if batch is None:
            # a refusal in the adapter's own words: S9 accepts any exception on a batch
            # with nothing left to train
            raise ValueError(
                f"SFTTrainer's dataset preparation kept none of the {len(conversations)} "
                f"conversation(s) at max_length={max_length}: no batch to train on")
        return {k: v for k, v in batch.items()}

    def forward(self, model, batch):
        kwargs = {k: v for k, v in batch.items() if k not in _NOT_MODEL_INPUTS}
        return model(**kwargs, use_cache=False).logits


class MessagesTarget(_TRLTarget):
    """``SFTTrainer`` on conversational language-modeling data (``{"messages": conv}``), default
    ``SFTConfig`` (``assistant_only_loss=False``, ``completion_only_loss`` unset).

    TRL tokenizes with ``apply_chat_template`` and trains every token of the conversation: system
    and user turns, role headers and glue (S3, S10 violated, as documented: "loss is computed on
    the entire sequence"). Truncation ``keep_start`` at ``max_length`` cuts the end.
    """

    name = "trl-sft-messages"
    tokenizer = "chatml"
    trains_after_eot = True
    known_failures = {
        "S3": "assistant_only_loss=False (the default): every token of the conversation is "
              "trained, system/user turns and headers included",
        "S10": "every turn is trained, user turns included",
    }


class PromptCompletionTarget(_TRLTarget):
    """``SFTTrainer`` on conversational prompt-completion data: ``{"prompt": conv[:last],
    "completion": conv[last:]}`` where ``last`` is the last assistant message.

    TRL tokenizes the prompt with ``add_generation_prompt=True`` and prompt + completion apart,
    takes the completion to start where the two token lists diverge (``common_prefix_length``),
    and trains it (``completion_only_loss`` defaults to True for this format): the last assistant
    turn, its ``<|im_end|>`` and the newline after it (declared ``turn_policy="last"``,
    ``trains_after_eot``). Earlier assistant turns are part of the prompt, untrained.
    """

    name = "trl-sft-prompt-completion"
    tokenizer = "chatml"
    turn_policy = "last"
    trains_after_eot = True

    def rows(self, conversations):
        out = []
        for conv in conversations:
            last = max(j for j, m in enumerate(conv) if m["role"] == "assistant")
            out.append({"prompt": list(conv[:last]), "completion": list(conv[last:])})
        return out


class AssistantOnlyTarget(_TRLTarget):
    """``SFTConfig(assistant_only_loss=True)`` on ``{"messages": conv}`` with a template that has
    ``{% generation %}`` tags around the content and ``<|im_end|>`` (``chatml-generation``).

    TRL tokenizes with ``apply_chat_template(return_assistant_tokens_mask=True)`` and keeps the
    labels where ``assistant_masks`` is 1. Option (S12): ``padding_free`` (the same with
    ``padding_free=True``).
    """

    name = "trl-sft-assistant-only"
    config = {"assistant_only_loss": True}

    @property
    def options(self):
        return {"padding_free": PaddingFreeTarget, "packing_bfd": PackingBfdTarget}


class AssistantOnlyEotOutsideTarget(AssistantOnlyTarget):
    """``assistant_only_loss=True`` with a template whose ``{% generation %}`` tags hold the
    content only, the end-of-turn token after ``{% endgeneration %}`` (a common hand-written
    training template): the tokenizer's own tagged template with its end token moved outside
    the tags (:func:`eot_outside`; :data:`CHATML_GENERATION_EOT_OUTSIDE` on ChatML), set as the
    tokenizer's template for the trainer. It renders exactly like the family's template, on
    every family (``<|im_end|>`` on ChatML and Qwen, ``</s>`` on Mistral, ...).

    TRL 1.16 detects it (``is_chat_template_stop_token_trained`` is False) and only logs a
    warning; the end-of-turn token is never trained (S4 violated).
    """

    name = "trl-sft-assistant-only-eot-outside"
    known_failures = {
        "S4": "the template's {% generation %} tags end before the end-of-turn token: TRL warns "
              "but leaves every end-of-turn token untrained",
    }

    def template_for(self, tokenizer) -> str:
        return eot_outside(tokenizer.chat_template or "")

    @property
    def options(self):
        return {}


class AssistantOnlyNoTagsTarget(AssistantOnlyTarget):
    """``assistant_only_loss=True`` with plain ChatML (no ``{% generation %}`` tags).

    TRL 1.16 swaps in a training template only for the model families it knows
    (``get_training_chat_template``); for any other template it raises ``ValueError`` ("patching
    is not supported for this template") when the trainer is built, so ``collate`` raises it.
    """

    name = "trl-sft-assistant-only-no-tags"
    tokenizer = "chatml"
    known_failures = {
        c: "TRL refuses assistant_only_loss for a template without {% generation %} tags that it "
           "cannot patch (ValueError when SFTTrainer is built)" for c in CHECK_IDS
    }

    @property
    def options(self):
        return {}


class PaddingFreeTarget(AssistantOnlyTarget):
    """``SFTConfig(assistant_only_loss=True, padding_free=True, max_length=None)``.

    TRL's ``DataCollatorForLanguageModeling(padding_free=True)`` concatenates the batch into one
    row with ``position_ids`` restarting at 0, the first label of every example set to -100, and
    ``cu_seq_lens_q/k``, ``max_length_q/k``, ``seq_idx``; no attention mask. TRL refuses
    ``padding_free`` without packing unless ``max_length=None``, so ``max_length`` is not
    enforced: an over-long conversation stays whole (S9).
    """

    name = "trl-sft-padding-free"
    packs = True
    config = {"assistant_only_loss": True, "padding_free": True}
    known_failures = {
        "S9": "padding_free without packing requires max_length=None in TRL: over-long "
              "examples are neither truncated nor dropped",
    }

    def sft_config(self, output_dir, max_length):
        return super().sft_config(output_dir, None)

    @property
    def options(self):
        return {}


class PackingBfdTarget(AssistantOnlyTarget):
    """``SFTConfig(assistant_only_loss=True, packing=True, packing_strategy="bfd")``.

    TRL's ``pack_dataset`` puts whole examples into rows of ``max_length`` by best-fit decreasing
    (an example longer than ``max_length`` is truncated, its end cut); "bfd" turns padding-free
    on, so the collator returns one flattened row with ``position_ids`` restarting per document
    (from ``seq_lengths``) and no attention mask.
    """

    name = "trl-sft-packing-bfd"
    packs = True
    strategy = "bfd"

    @property
    def config(self):
        return {"assistant_only_loss": True, "packing": True, "packing_strategy": self.strategy}

    @property
    def options(self):
        return {}


class PackingBfdSplitTarget(PackingBfdTarget):
    """``packing=True, packing_strategy="bfd_split"``: as ``bfd``, but the overflow of an example
    longer than ``max_length`` becomes a separate document (positions restarting at 0) packed
    elsewhere, instead of being dropped (declared ``splits_documents``)."""

    name = "trl-sft-packing-bfd-split"
    strategy = "bfd_split"
    splits_documents = True


class PackingWrappedTarget(PackingBfdTarget):
    """``packing=True, packing_strategy="wrapped"``: the examples are concatenated and cut into
    rows of exactly ``max_length`` tokens, mid-document. Not padding-free: the collator returns an
    all-ones attention mask and no position ids, so a document attends to the documents before it
    in its row and positions do not restart (S8 violated; TRL documents it as "aggressive")."""

    name = "trl-sft-packing-wrapped"
    strategy = "wrapped"
    splits_documents = True
    known_failures = {
        "S8": "wrapped packing: no position_ids, all-ones attention mask: documents of a row "
              "attend to each other and positions do not restart",
    }
