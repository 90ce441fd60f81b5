"""OpenRLHF targets: ``openrlhf.datasets.SFTDataset`` and its ``collate_fn``, as
``openrlhf.cli.train_sft`` builds them, and the label alignment of its ``SFTTrainer``.

OpenRLHF 0.11.2 (``tox -e openrlhf``). It is installed with ``--no-deps``: its requirements pin
``flash-attn``, a CUDA source build that cannot be installed on a CPU machine; the tox
environment installs what the SFT data path imports (transformers 5.15.0 as OpenRLHF pins it,
datasets, deepspeed built with ``DS_BUILD_OPS=0``, pylatexenc). What a user configures::

    python -m openrlhf.cli.train_sft --data.dataset <file> --data.input_key messages
        --data.apply_chat_template --data.multiturn --data.max_len N

``strategy.args.data`` is a namespace with those keys (``input_key``, ``output_key``,
``apply_chat_template=True``, no ``tokenizer_chat_template``); the dataset is a
``datasets.Dataset`` of the conversations (``num_processors=0``: ``datasets`` maps in the calling
process; with 1, ``datasets`` 4 still starts a one-worker pool per call and pickles the tokenizer
to it: 4.2 s a collate on Qwen2.5 against 0.9 s).

What OpenRLHF does: the text is ``(prompt + response).rstrip("\\n")`` (plus ``" " + eos`` when it
does not end with eos), tokenized whole and cut to ``max_len``; the last id is overwritten with
``eos_token_id``. The loss mask is *shifted*: ``SFTTrainer.fit`` feeds ``loss_mask[:, :-1]``
against the log-probabilities of ``input_ids[:, 1:]``, so ``loss_mask[t] = 1`` trains token
``t + 1``. The targets return those shifted labels (``labels_shifted = True``): ``labels[t] =
input_ids[t + 1]`` where ``loss_mask[t] = 1``. Multiturn mode builds each assistant turn's range
from the token counts of its prompt and of its rendered response (``<|im_end|>\\n`` included:
declared ``trains_after_eot``); single-turn mode masks by the prompt's token count.

Packing (``--ds.packing_samples``) changes no data: the collated batch is the same and the actor
removes the padding inside its forward (flash-attention varlen, CUDA), so it has no target here.
"""

from __future__ import annotations

import contextlib
import io
import types

INSTALL_HINT = ("tox -e openrlhf (pip install torch==2.13.0 transformers==5.15.0 datasets "
                "deepspeed pylatexenc; pip install --no-deps openrlhf==0.11.2)")
IGNORE_INDEX = -100


class _OpenRLHFTarget:
    labels_shifted = True
    turn_policy = "all"
    overlong = "truncate"
    trains_after_eot = True
    tokenization = "whole"
    requires = ("openrlhf", "datasets")
    install_hint = INSTALL_HINT
    tokenizer = "chatml"
    multiturn = True

    def rows(self, conversations):
        return [{"messages": [dict(m) for m in c]} for c in conversations]

    def data_args(self):
        return types.SimpleNamespace(input_key="messages", output_key=None,
                                     apply_chat_template=True, tokenizer_chat_template=None)

    def collate(self, conversations, tokenizer, max_length):

        import datasets
        import torch
        from openrlhf.datasets import SFTDataset

        from sft_conformance.assets import copy_tokenizer

        from ._datasets import in_memory_datasets

        strategy = types.SimpleNamespace(args=types.SimpleNamespace(data=self.data_args()))
        with in_memory_datasets(), contextlib.redirect_stdout(io.StringIO()):
            dataset = SFTDataset(datasets.Dataset.from_list(self.rows(conversations)),
                                 copy_tokenizer(tokenizer), max_length, strategy,
                                 num_processors=0, multiturn=self.multiturn)
        if len(dataset) == 0:
            raise ValueError(f"OpenRLHF's SFTDataset kept none of the {len(conversations)} "
                             f"conversation(s) at max_len={max_length}")
        input_ids, attention_mask, loss_mask = dataset.collate_fn(
            [dataset[i] for i in range(len(dataset))])
        input_ids, attention_mask = input_ids.squeeze(1), attention_mask.squeeze(1)
        loss_mask = loss_mask.squeeze(1)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        labels[:, :-1] = torch.where(loss_mask[:, :-1] == 1, input_ids[:, 1:], IGNORE_INDEX)
        return {"input_ids": input_ids.long(), "attention_mask": attention_mask.long(),
                "labels": labels.long()}


class MultiturnTarget(_OpenRLHFTarget):
    """``--data.multiturn``: every assistant turn trained by its token range."""

    name = "openrlhf-sft-multiturn"


class SingleTurnTarget(_OpenRLHFTarget):
    """Prompt-response records (``--data.input_key prompt --data.output_key response``): the
    conversation up to the last assistant message is the prompt, that message the response;
    the response is trained from the prompt's token count on (declared ``turn_policy =
    "last"``)."""

    name = "openrlhf-sft"
    multiturn = False
    turn_policy = "last"

    def rows(self, conversations):
        out = []
        for conv in conversations:
            last = max(j for j, m in enumerate(conv) if m["role"] == "assistant")
            out.append({"prompt": [dict(m) for m in conv[:last]],
                        "response": [dict(conv[last])]})
        return out

    def data_args(self):
        return types.SimpleNamespace(input_key="prompt", output_key="response",
                                     apply_chat_template=True, tokenizer_chat_template=None)


# -- tool conversations (issue 23) ---------------------------------------------------------------


class MultiturnToolsTarget(MultiturnTarget):
    """``--data.multiturn`` on rows with a ``tools`` column beside ``messages`` (the shape of a
    Hugging Face tool dataset): OpenRLHF 0.11.2 has no option that reads tools, and
    ``SFTDataset.process_data`` calls ``tokenizer.apply_chat_template(messages[:i], ...)``
    without ``tools=`` (the column is dropped by ``dataset.map(remove_columns=...)``). The
    assistant ``tool_calls`` and ``tool`` messages go to the template as they are; each
    assistant turn's range comes from the prefix renderings, so ``reasoning_content`` is where
    those renderings put it (declared ``reasoning = "template"``)."""

    name = "openrlhf-sft-multiturn-tools"
    tools = True
    reasoning = "template"
    tokenizer = "chatml-tools"

    def rows(self, conversations):
        from ._local import tool_rows

        return tool_rows(conversations)
