"""verl targets: ``verl.utils.dataset.multiturn_sft_dataset.MultiTurnSFTDataset`` and
``verl.utils.dataset.dataset_utils.SFTTensorCollator``, as ``verl.trainer.sft_trainer`` builds
them (``create_sft_dataset`` then ``SFTTensorCollator(config.data.pad_mode)``).

verl 0.9.1 (``tox -e verl``; it needs ``transformers<5.11``; ray and tensordict import on CPU).
The configuration is the ``data`` section of verl's own ``sft_trainer_engine.yaml`` (loaded from
the installed package, so its defaults are verl's: ``pad_mode: no_padding``, ``truncation:
error``, ``messages_key: messages``, ``ignore_input_ids_mismatch: False``) with ``max_length`` set
to the suite's and, for the right-padding target, ``pad_mode: right``. The conversations are
written to a parquet file with a ``messages`` column, the format verl documents.

What verl does (all of it verl's code): each message is rendered and tokenized alone
(``apply_chat_template([message])``), the system prompt a one-message rendering adds is cut from
every message after the first, and an assistant message's ``loss_mask`` is 1 on every token but
the first ``len(generation_prompt)`` ids (``<|im_start|>assistant\\n`` tokenized alone). So the
content, ``<|im_end|>`` and the template's newline after it are trained (declared
``trains_after_eot``). ``sanity_check`` asserts that the concatenated ids equal the whole
conversation's tokenization (declared ``tokenization = "whole"``). An example longer than
``max_length`` raises ``ValueError`` (``truncation: error``; declared ``overlong = "raise"``).

Labels: ``loss_mask[t] == 1`` means token ``t`` is a target: ``sft_loss`` rolls the flattened
mask left by one to align it with ``log_probs`` (the log-probability of token ``t+1`` at position
``t``). The targets return ``labels = where(loss_mask == 1, input_ids, -100)``, unshifted.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile

from ._local import varlen_forward

INSTALL_HINT = "tox -e verl (pip install torch==2.13.0 verl==0.9.1 'transformers<5.11')"
IGNORE_INDEX = -100


def verl_data_config(max_length, pad_mode):
    """The ``data`` section of verl's ``sft_trainer_engine.yaml``, with the suite's length."""
    import verl
    from omegaconf import OmegaConf

    path = os.path.join(os.path.dirname(verl.__file__), "trainer", "config",
                        "sft_trainer_engine.yaml")
    data = OmegaConf.load(path).data
    data.max_length = max_length
    data.pad_mode = pad_mode
    return data


class _VerlTarget:
    labels_shifted = False
    turn_policy = "all"
    overlong = "raise"
    trains_after_eot = True
    tokenization = "whole"
    requires = ("verl", "tensordict", "pandas")
    install_hint = INSTALL_HINT
    tokenizer = "chatml"
    pad_mode = "no_padding"

    #: keys of verl's ``data`` config this target sets beyond the suite's length and pad mode
    data_overrides: dict = {}

    def frame(self, conversations):
        """The parquet rows: a ``messages`` column (verl's documented format)."""
        import pandas as pd

        return pd.DataFrame({"messages": [list(c) for c in conversations]})

    def batch(self, conversations, tokenizer, max_length):
        """verl's collated batch (``SFTTensorCollator`` output) for these conversations."""
        from verl.utils.dataset.dataset_utils import SFTTensorCollator
        from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

        with tempfile.TemporaryDirectory(prefix="sft-conformance-verl-") as d:
            path = os.path.join(d, "train.parquet")
            self.frame(conversations).to_parquet(path)
            config = verl_data_config(max_length, self.pad_mode)
            for key, value in self.data_overrides.items():
                config[key] = value
            # verl prints the dataset length and the first assembled message
            with contextlib.redirect_stdout(io.StringIO()):
                dataset = MultiTurnSFTDataset(path, tokenizer, config)
                samples = [dataset[i] for i in range(len(dataset))]
        return SFTTensorCollator(self.pad_mode)(samples)


class MultiTurnNoPaddingTarget(_VerlTarget):
    """``pad_mode: no_padding`` (verl's default): the collator returns jagged nested tensors
    (``input_ids``, ``position_ids``, ``loss_mask``), which verl's engine runs padding-free
    (flattened, ``cu_seqlens`` from the nested offsets, flash-attention varlen). The target
    returns that flattened row: ``input_ids`` (1, total), ``position_ids`` restarting at 0 per
    conversation, ``cu_seq_lens`` and the labels. ``forward``: the varlen call on CPU (a
    block-diagonal causal mask per document, see :func:`varlen_forward`)."""

    name = "verl-multiturn-sft"
    packs = True

    def collate(self, conversations, tokenizer, max_length):
        import torch

        b = self.batch(conversations, tokenizer, max_length)
        ids = b["input_ids"].values()
        mask = b["loss_mask"].values()
        return {"input_ids": ids[None].long(),
                "labels": torch.where(mask == 1, ids, IGNORE_INDEX)[None].long(),
                "position_ids": b["position_ids"].values()[None].long(),
                "cu_seq_lens": b["input_ids"].offsets().long()}

    def forward(self, model, batch):
        return varlen_forward(model, batch)


class MultiTurnRightPaddingTarget(_VerlTarget):
    """``pad_mode: right``: every sample is padded on the right to ``max_length`` by the dataset
    (pad id, attention mask 0, loss mask 0, position ids 0) and ``default_collate`` stacks them.
    The target returns ``input_ids``, ``attention_mask``, ``position_ids`` and the labels."""

    name = "verl-multiturn-sft-right"
    pad_mode = "right"

    def collate(self, conversations, tokenizer, max_length):
        import torch

        b = self.batch(conversations, tokenizer, max_length)
        ids = b["input_ids"]
        labels = torch.where(b["loss_mask"] == 1, ids, IGNORE_INDEX)
        return {"input_ids": ids.long(), "labels": labels.long(),
                "attention_mask": b["attention_mask"].long(),
                "position_ids": b["position_ids"].long()}


# -- tool conversations (issue 23) ---------------------------------------------------------------


class _ToolsMixin:
    """Tool conversations the way verl reads them: the parquet row has a ``messages`` column (the
    OpenAI/HF messages, ``tool_calls`` and ``tool`` messages as they are, ``reasoning_content``
    kept) and a ``tools`` column (the schemas; ``tools_key: tools`` in verl's config, its
    default). verl passes ``tools`` to the first message's rendering only and renders every
    message alone; ``sanity_check`` compares the concatenation with the whole conversation's
    rendering *with* the tools. The Qwen3 template's reasoning is whatever a one-message
    rendering keeps (declared ``reasoning = "template"``: verl leaves it to the template)."""

    tools = True
    reasoning = "template"
    tokenizer = "chatml-tools"

    def frame(self, conversations):
        import pandas as pd

        from sft_conformance.reference.conversation import split

        messages, tools = [], []
        for conv in conversations:
            msgs, tls = split(conv)
            messages.append([dict(m) for m in msgs])
            tools.append([dict(t) for t in tls] if tls else None)
        columns = {"messages": messages}
        if any(t is not None for t in tools):
            columns["tools"] = tools
        return pd.DataFrame(columns)


class MultiTurnToolsTarget(_ToolsMixin, MultiTurnNoPaddingTarget):
    """``MultiTurnSFTDataset`` on rows with a ``tools`` column, verl's defaults otherwise
    (``pad_mode: no_padding``, ``ignore_input_ids_mismatch: False``: a conversation whose
    per-message rendering differs from the whole rendering raises ``AssertionError``)."""

    name = "verl-multiturn-sft-tools"


class MultiTurnToolsIgnoreMismatchTarget(_ToolsMixin, MultiTurnNoPaddingTarget):
    """As ``verl-multiturn-sft-tools`` with ``ignore_input_ids_mismatch: True``, what verl's
    ``sanity_check`` error tells the user to set: the concatenated per-message ids are trained
    even where they differ from the whole rendering (a warning is logged once)."""

    name = "verl-multiturn-sft-tools-ignore-mismatch"
    data_overrides = {"ignore_input_ids_mismatch": True}
