"""Post-SFT evaluation through lm-eval (the evaluation section of README.md).

* :mod:`.tasks`: the seed-001 toy tasks (word reversal, small sums), generated deterministically,
  with held-out test sets shipped as JSONL next to lm-eval task YAML in ``sft_conformance/tasks``.
* :mod:`.variants`: the collator variants of the ablation, small functions over ``reference``.
* :mod:`.train`: training a tiny Llama per variant and seed, with an in-training greedy evaluation.
* :mod:`.lmeval`: lm-eval offline: the in-memory model, our task files, before/after deltas.
* :mod:`.report`: JSON, Markdown and the plot under ``reports/eval/``.
"""
