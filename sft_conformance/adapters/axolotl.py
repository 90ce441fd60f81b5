"""axolotl targets: the ``chat_template`` prompt strategy through axolotl's own config loading and
dataset preparation (``axolotl.cli.config.load_cfg`` + ``axolotl.common.datasets.load_datasets``,
what ``axolotl train config.yml`` runs before training), and the collators its trainer builder
picks (``DataCollatorForSeq2Seq``; with ``sample_packing``, ``MultipackBatchSampler`` bins and
``V2BatchSamplerDataCollatorForSeq2Seq``).

axolotl 0.19.0 (``tox -e axolotl``; the last release for Python 3.11, it pins transformers
5.16.1; ``AXOLOTL_DO_NOT_TRACK=1``). The config is the YAML a user writes, as a dict::

    base_model: <dir>   chat_template: tokenizer_default   sequence_len: N
    datasets: [{path: train.jsonl, ds_type: json, type: chat_template, field_messages: messages,
                [roles_to_train: [...]], [train_on_eos: ...]}]
    [sample_packing: true]

with ``dataset_num_proc: 0`` (``datasets`` maps and filters in the calling process; with 1,
``datasets`` 4 still starts a one-worker pool per call and pickles the tokenizer to it: 10 s a call
on Qwen2.5 against 5 s). The model directory holds the suite's tokenizer and the tiny model's
``config.json``; ``chat_template: tokenizer_default`` uses the tokenizer's own template.
``load_cfg`` and axolotl's ``load_tokenizer(cfg)`` run once per configuration; each ``collate``
then does what ``load_datasets`` does to a dataset of the config (``_load_raw_datasets``):
``get_dataset_wrapper`` (the ``chat_template`` strategy, ``TokenizedPromptDataset``),
``handle_long_seq_in_dataset`` and, with ``sample_packing``, ``process_datasets_for_packing``;
saving the prepared dataset to disk (about 5 s a call) is left out.

What axolotl does (its code): ``ChatTemplateStrategy`` renders the conversation with the
template, tokenizes it whole (declared ``tokenization = "whole"``) and locates each turn by
rendering; trained roles come from ``roles_to_train`` (default ``["assistant"]``) and end tokens
from ``train_on_eos`` (default ``"turn"``: the end token of each trained turn). Examples longer
than ``sequence_len`` are dropped by ``handle_long_seq_in_dataset`` (declared ``overlong =
"drop"``). Labels are unshifted (the Hugging Face convention).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile

from ._local import saved_tokenizer_dir, varlen_forward

INSTALL_HINT = "tox -e axolotl (pip install torch==2.13.0 axolotl==0.19.0)"


def model_dir(tokenizer) -> str:
    from sft_conformance.assets import tiny_model

    path = saved_tokenizer_dir(tokenizer)
    if not os.path.exists(os.path.join(path, "config.json")):
        tiny_model(tokenizer).config.save_pretrained(path)
    return path


@contextlib.contextmanager
def _no_full_collections():
    """``gc.collect()`` as a no-op while axolotl's multipack sampler packs one batch: it runs a
    full collection for every batch it builds, which in the checks' process (Hypothesis, the
    tokenizers, the models) took 0.34 of the 0.47 s a qwen2.5 call cost. Collecting garbage
    changes no result; Python's own collections still run."""
    import gc

    collect = gc.collect
    gc.collect = lambda *args, **kwargs: 0
    try:
        yield
    finally:
        gc.collect = collect


class _AxolotlTarget:
    labels_shifted = False
    turn_policy = "all"
    overlong = "drop"
    tokenization = "whole"
    requires = ("axolotl",)
    install_hint = INSTALL_HINT
    tokenizer = "chatml"
    #: keys of the dataset entry beyond the common ones
    dataset_config: dict = {}
    sample_packing = False

    def config(self, tokenizer, max_length, data_file, out_dir):
        path = model_dir(tokenizer)
        return {"base_model": path, "tokenizer_config": path,
                "chat_template": "tokenizer_default",
                "datasets": [{"path": data_file, "ds_type": "json", "type": "chat_template",
                              "field_messages": "messages", **self.dataset_config}],
                "sequence_len": max_length, "sample_packing": self.sample_packing,
                "micro_batch_size": 1, "num_epochs": 1, "learning_rate": 1e-4,
                "output_dir": out_dir, "dataset_prepared_path": os.path.join(out_dir, "prep"),
                "dataset_num_proc": 0, "val_set_size": 0, "bf16": False, "fp16": False,
                "tf32": False, "seed": 0}

    def prepared(self, tokenizer, max_length):
        """``(cfg, tokenizer)`` as ``axolotl train`` builds them: ``load_cfg`` (validation and
        defaults) once per configuration and ``axolotl.loaders.load_tokenizer(cfg)`` once per
        tokenizer."""
        from axolotl.cli.config import load_cfg
        from axolotl.loaders import load_tokenizer
        from axolotl.utils.dict import DictDefault

        key = (saved_tokenizer_dir(tokenizer), max_length)
        if key not in self._prepared:
            work = tempfile.mkdtemp(prefix="sft-conformance-axolotl-")
            self._dirs.append(work)
            data_file = os.path.join(work, "train.jsonl")
            with open(data_file, "w", encoding="utf-8") as f:
                f.write(json.dumps({"messages": [{"role": "user", "content": "x"},
                                                 {"role": "assistant", "content": "y"}]}))
            cfg = load_cfg(DictDefault(self.config(tokenizer, max_length, data_file,
                                                   os.path.join(work, "out"))))
            # load_tokenizer reads none of the length settings: one load per tokenizer (about
            # 1 s at 151k tokens), not one per max_length the checks draw
            if key[0] not in self._tokenizers:
                self._tokenizers[key[0]] = load_tokenizer(cfg)
            self._prepared[key] = (cfg, self._tokenizers[key[0]])
        return self._prepared[key]

    def __init__(self):
        self._prepared, self._tokenizers, self._dirs = {}, {}, []

    def rows(self, conversations) -> list[dict]:
        """The rows of the dataset, as a user's JSONL file holds them."""
        return [{"messages": [dict(m) for m in c]} for c in conversations]

    def collate(self, conversations, tokenizer, max_length):
        os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
        import datasets
        from axolotl.utils.data.utils import handle_long_seq_in_dataset
        from axolotl.utils.data.wrappers import get_dataset_wrapper

        from ._datasets import in_memory_datasets

        logging.disable(logging.WARNING)
        try:
            with in_memory_datasets(), contextlib.redirect_stdout(io.StringIO()):
                cfg, tok = self.prepared(tokenizer, max_length)
                raw = datasets.Dataset.from_list(self.rows(conversations))
                # what _load_raw_datasets does with each dataset of the config
                dataset, _prompter = get_dataset_wrapper(cfg.datasets[0], tok, cfg,
                                                         "chat_template", raw)
                # axolotl's merge_datasets hands on a plain Dataset (shuffled by default; kept
                # in order here so that rows map to conversations), not the wrapper that holds
                # the tokenizer: datasets deep-copies a dataset on every filter / with_format,
                # and copying the wrapper copies the tokenizer (about 1 s a copy at 151k tokens)
                dataset = datasets.Dataset(dataset.data, info=dataset.info.copy(),
                                           split=dataset.split)
                dataset = handle_long_seq_in_dataset(dataset, cfg.sequence_len, cfg)
                if cfg.sample_packing:
                    from axolotl.utils.trainer import process_datasets_for_packing

                    dataset, _ = process_datasets_for_packing(cfg, dataset, None)
            if len(dataset) == 0:
                raise ValueError("axolotl's dataset preparation kept none of the "
                                 f"{len(conversations)} conversation(s) at "
                                 f"sequence_len={max_length}")
            features = [dataset[i] for i in range(len(dataset))]
            return self._collate(features, tok, max_length, dataset)
        finally:
            logging.disable(logging.NOTSET)

    def _collate(self, features, tokenizer, max_length, dataset):
        from axolotl.utils.collators import DataCollatorForSeq2Seq

        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, return_tensors="pt")
        keep = ("input_ids", "labels", "attention_mask")
        batch = collator([{k: f[k] for k in keep if k in f} for f in features])
        return {k: batch[k].long() for k in keep if k in batch}


class ChatTemplateTarget(_AxolotlTarget):
    """``type: chat_template`` with its defaults (``roles_to_train: ["assistant"]``,
    ``train_on_eos: turn``)."""

    name = "axolotl-chat-template"


class EosAllTarget(_AxolotlTarget):
    """``train_on_eos: all``: every end-of-turn token of the conversation is trained, the
    system's and the users' included (documented: "all: train on all EOS tokens")."""

    name = "axolotl-chat-template-eos-all"
    dataset_config = {"train_on_eos": "all"}
    known_failures = {
        "S3": "train_on_eos: all trains the <|im_end|> of system and user turns too "
              "(documented meaning of 'all')",
        "S10": "train_on_eos: all trains the <|im_end|> of user turns",
    }


class SamplePackingTarget(_AxolotlTarget):
    """``sample_packing: true``: ``MultipackBatchSampler`` (sequential) bins whole examples
    into rows of ``sequence_len`` tokens, and ``V2BatchSamplerDataCollatorForSeq2Seq``
    concatenates each bin: ``position_ids`` restart per example and the attention mask numbers
    the documents 1, 2, 3... (kept as ``document_ids``); axolotl's patched attention isolates
    them. ``forward``: the varlen call on CPU (a block-diagonal causal mask per document)."""

    name = "axolotl-sample-packing"
    packs = True
    sample_packing = True

    def _collate(self, features, tokenizer, max_length, dataset):
        from axolotl.utils.collators import V2BatchSamplerDataCollatorForSeq2Seq
        from axolotl.utils.samplers import MultipackBatchSampler
        from axolotl.utils.samplers.utils import get_dataset_lengths
        from torch.utils.data import SequentialSampler

        sampler = MultipackBatchSampler(SequentialSampler(dataset),
                                        lengths=get_dataset_lengths(dataset),
                                        batch_max_len=max_length, batch_size=1,
                                        bin_size=200, sequential=True, drop_last=False,
                                        num_processes=1)
        with _no_full_collections():
            bins = [b for batch in sampler for b in batch]
        collator = V2BatchSamplerDataCollatorForSeq2Seq(tokenizer, padding=True,
                                                        return_tensors="pt")
        keep = ("input_ids", "labels", "attention_mask", "position_ids")
        out = collator([[{k: features[i][k] for k in keep if k in features[i]} for i in b]
                        for b in bins])
        return {"input_ids": out["input_ids"].long(), "labels": out["labels"].long(),
                "position_ids": out["position_ids"].long(),
                "document_ids": out["attention_mask"].long()}

    def forward(self, model, batch):
        return varlen_forward(model, batch)


class ChatTemplateToolsTarget(_AxolotlTarget):
    """``type: chat_template`` on tool conversations, as axolotl's conversation docs describe
    them: ``tool_calls`` on assistant messages, ``tool`` messages (the default ``roles`` map
    has ``tool: tool``), the schemas in the ``tools`` field (``field_tools``, default
    ``tools``), with the defaults ``roles_to_train: ["assistant"]``, ``train_on_eos: turn``.
    The rows hold ``tools`` and each call's ``arguments`` as JSON strings, the form axolotl
    documents for data whose argument shapes differ from row to row (an Arrow column cannot hold
    both dicts and strings, nor dicts of different keys without filling them with nulls);
    axolotl decodes both before rendering (``_get_tools``, ``transform_message``), so a dict
    written as a string renders as the dict. ``reasoning_content`` is left to the template."""

    name = "axolotl-chat-template-tools"
    tools = True
    reasoning = "template"
    dataset_config = {"field_tools": "tools"}

    def rows(self, conversations) -> list[dict]:
        from sft_conformance.reference.conversation import split

        out = []
        for c in conversations:
            messages, tools = split(c)
            rows = []
            for m in messages:
                m = dict(m)
                if m.get("tool_calls"):
                    calls = []
                    for call in m["tool_calls"]:
                        call = dict(call)
                        fn = dict(call.get("function", call))
                        if not isinstance(fn.get("arguments"), str):
                            fn["arguments"] = json.dumps(fn.get("arguments", {}),
                                                         ensure_ascii=False)
                        if "function" in call:
                            call["function"] = fn
                        else:
                            call = {"type": "function", "function": fn}
                        calls.append(call)
                    m["tool_calls"] = calls
                rows.append(m)
            out.append({"messages": rows,
                        "tools": json.dumps(tools, ensure_ascii=False) if tools else None})
        return out


class ToolRoleTrainedTarget(ChatTemplateToolsTarget):
    """``roles_to_train: [assistant, tool]``: axolotl trains the turns of the roles listed, tool
    results included (an opt-in: S13 fails by declaration)."""

    name = "axolotl-chat-template-tools-train-tool"
    dataset_config = {"field_tools": "tools", "roles_to_train": ["assistant", "tool"]}
    known_failures = {"S13": "roles_to_train: [assistant, tool] trains the tool results "
                             "(the configuration asks for it)"}
