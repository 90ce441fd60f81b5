"""LitGPT targets: ``litgpt.data.JSON`` (the data module ``litgpt finetune --data JSON`` builds),
its ``SFTDataset`` and ``get_sft_collate_fn``, on a local checkpoint directory.

LitGPT 0.5.13 (``tox -e litgpt``; it pins ``huggingface-hub<1.4`` and needs no transformers).
What a user configures::

    litgpt finetune_full <checkpoint_dir> --data JSON --data.json_path <dir with train/val.json>
        --data.mask_prompt true --data.prompt_style qwen3 --train.max_seq_length N

``collate`` writes the conversations as LitGPT's instruction records (``{"instruction": user,
"output": assistant}``) to ``train.json``/``val.json``, loads the tokenizer with
``litgpt.tokenizer.Tokenizer(checkpoint_dir)`` from the suite's tokenizer saved to a temporary
directory (``tokenizer.json`` + ``tokenizer_config.json``: LitGPT takes ``eos_token`` from it),
then ``data.connect(tokenizer, batch_size, max_seq_length)``, ``data.setup()`` and the first batch
of ``data.train_dataloader()`` (``num_workers=0``; LitGPT shuffles with a seeded generator, rows
are matched by ids). Everything from record to batch is LitGPT's:

* ``SFTDataset.__getitem__``: ``prompt = prompt_style.apply(instruction)`` (ChatML up to
  ``<|im_start|>assistant\\n``), ``tokenizer.encode(prompt)`` and
  ``tokenizer.encode(output, bos=False, eos=True)`` apart (declared ``tokenization="per_turn"``),
  concatenated, cut to ``max_seq_length``; with ``mask_prompt`` the first ``len(prompt ids)``
  labels are -100.
* ``get_sft_collate_fn``: right padding (input ids with 0, labels with -100).
* ``finetune_full`` computes ``chunked_cross_entropy(logits[..., :-1, :], targets[..., 1:])``:
  unshifted labels (the Hugging Face convention).

Records are single-turn (an instruction and its output; no system message in the JSON format), so
the targets declare ``multi_turn = False`` and ``system_prompt = False``. The prompt style follows
the tokenizer: ChatML (the bundled ``chatml`` tokenizer) is LitGPT's ``qwen3`` style (ChatML with
no system turn); ``qwen2.5`` is LitGPT's ``qwen2.5`` style (ChatML with Qwen's default system
message, as Qwen2.5's own template writes it).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ._local import saved_tokenizer_dir, tokenizer_family

INSTALL_HINT = "tox -e litgpt (pip install torch==2.13.0 litgpt==0.5.13)"

#: the suite's template name -> LitGPT's prompt style that renders the same prompt
PROMPT_STYLES = {"chatml": "qwen3", "chatml-generation": "qwen3", "qwen2.5": "qwen2.5",
                 "qwen3": "qwen3", "llama3": "llama3"}


def prompt_style_for(tokenizer) -> str:
    family = tokenizer_family(tokenizer)
    try:
        return PROMPT_STYLES[family]
    except KeyError:
        raise ValueError(f"no LitGPT prompt style renders the {family!r} template (LitGPT styles "
                         f"for: {sorted(PROMPT_STYLES)})") from None


class _LitGPTTarget:
    labels_shifted = False
    turn_policy = "all"
    overlong = "truncate"  # encoded[: max_seq_length]: the end is cut
    tokenization = "per_turn"
    multi_turn = False
    system_prompt = False
    requires = ("litgpt",)
    install_hint = INSTALL_HINT
    tokenizer = "chatml"
    mask_prompt = True

    def __init__(self):
        self._tokenizers = {}

    def _litgpt_tokenizer(self, tokenizer):
        from litgpt.tokenizer import Tokenizer

        path = saved_tokenizer_dir(tokenizer)
        if path not in self._tokenizers:
            self._tokenizers[path] = Tokenizer(path)
        return self._tokenizers[path]

    @staticmethod
    def records(conversations):
        out = []
        for conv in conversations:
            roles = [m["role"] for m in conv]
            if roles != ["user", "assistant"]:
                raise ValueError(f"LitGPT's JSON records are single-turn (instruction, output); "
                                 f"got roles {roles}")
            out.append({"instruction": conv[0]["content"], "output": conv[1]["content"]})
        return out

    def data_module(self, json_dir, tokenizer):
        from litgpt.data import JSON

        return JSON(json_path=Path(json_dir), mask_prompt=self.mask_prompt,
                    prompt_style=prompt_style_for(tokenizer), num_workers=0)

    def collate(self, conversations, tokenizer, max_length):
        records = self.records(conversations)
        with tempfile.TemporaryDirectory(prefix="sft-conformance-litgpt-") as d:
            for split in ("train", "val"):
                (Path(d) / f"{split}.json").write_text(json.dumps(records), encoding="utf-8")
            data = self.data_module(d, tokenizer)
            data.connect(tokenizer=self._litgpt_tokenizer(tokenizer),
                         batch_size=len(records), max_seq_length=max_length)
            data.setup()
            batch = next(iter(data.train_dataloader()))
        return {"input_ids": batch["input_ids"].long(), "labels": batch["labels"].long()}


class MaskPromptTarget(_LitGPTTarget):
    """``JSON(mask_prompt=True)``: the prompt (``len(encode(prompt))`` ids) is masked, the output
    and the ``eos_id`` LitGPT appends to it are trained."""

    name = "litgpt-sft-mask-prompt"


class DefaultTarget(_LitGPTTarget):
    """``JSON()`` with its default ``mask_prompt=False``: every token of prompt and output is
    trained (the data module's documented default)."""

    name = "litgpt-sft-default"
    mask_prompt = False
    known_failures = {
        "S3": "litgpt.data.JSON defaults to mask_prompt=False: the prompt (user turn, ChatML "
              "headers) is trained; set --data.mask_prompt true",
    }
