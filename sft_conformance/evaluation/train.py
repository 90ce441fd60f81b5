"""Training a tiny Llama per (variant, seed) on the toy tasks, with an in-training evaluation.

Every run of an ablation shares the data, the step count, the optimizer and, for a given seed, the
initial weights and the order of the batches; only the variant's collator (and loss) differs.

The in-training evaluation is greedy decoding written here by hand: the prompt as inference
renders it (``add_generation_prompt=True``), argmax until the end-of-turn token or ``max_new``
tokens, decoded without special tokens, compared with the answer. ``stopped`` says whether the
end-of-turn token was produced. lm-eval's ``generate_until`` must give the same exact match,
sample for sample (checked in the report).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from sft_conformance.assets import load_tokenizer, tiny_model
from sft_conformance.reference import build_example, prompt_ids

from . import tasks as toy
from .variants import Variant


@dataclass
class TrainConfig:
    tasks: tuple[str, ...] = ("reverse",)
    tokenizer: str = "seed001"
    steps: int = 200
    eval_steps: tuple[int, ...] = (50, 100, 200)
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    hidden_size: int = 64
    num_layers: int = 2
    pool_size: int = 4096
    eval_size: int = 128
    max_new: int = 8
    data_seed: int = 0

    def model_kwargs(self) -> dict:
        return {"hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "max_positions": 64}


@dataclass
class RunResult:
    variant: str
    seed: int
    curve: list[dict] = field(default_factory=list)  # {step, loss, <task>: {exact_match, stop}}
    seconds: float = 0.0
    step_seconds: float = 0.0
    n_params: int = 0
    model: object = None
    tokenizer: object = None
    samples: dict = field(default_factory=dict)  # task -> [(prompt, generation, match, stopped)]


def tokenizer_for(config: TrainConfig, variant: Variant):
    return load_tokenizer(config.tokenizer, pad_equals_eos=variant.pad_equals_eos)


_EXAMPLES: dict = {}


def training_examples(config: TrainConfig, tokenizer) -> list:
    """The training pool as reference examples (cached: identical for every variant)."""
    key = (config.tokenizer, tokenizer.pad_token, config.tasks, config.pool_size, config.data_seed)
    if key not in _EXAMPLES:
        per_task = config.pool_size // len(config.tasks)
        items = [it for t in config.tasks for it in toy.train_pool(t, per_task, config.data_seed)]
        _EXAMPLES[key] = [build_example(toy.conversation(it), tokenizer, index=i)
                          for i, it in enumerate(items)]
    return _EXAMPLES[key]


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: Sequence[list[int]], max_new: int,
                    batch_size: int = 256) -> list[tuple[list[int], bool]]:
    """Greedy continuation of each prompt: (generated ids without the end token, stopped)."""
    eos = tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    out: list = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for idx in by_len.values():  # same-length prompts: no padding, no attention mask
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            ids = torch.tensor([prompts[i] for i in chunk], dtype=torch.long)
            done = torch.zeros(len(chunk), dtype=torch.bool)
            gen = []
            for _ in range(max_new):
                nxt = model(input_ids=ids).logits[:, -1].argmax(-1)
                gen.append(nxt)
                done |= nxt == eos
                if bool(done.all()):
                    break
                ids = torch.cat([ids, nxt[:, None]], dim=1)
            gen = torch.stack(gen, dim=1).tolist()
            for row, i in enumerate(chunk):
                toks = gen[row]
                stopped = eos in toks
                out[i] = (toks[:toks.index(eos)] if stopped else toks, stopped)
    if was_training:
        model.train()
    return out


def evaluate(model, tokenizer, items: Sequence[dict], max_new: int) -> dict:
    """Exact match (as lm-eval's generate_until scores it) and stop rate over ``items``."""
    prompts = [prompt_ids(toy.conversation(it), tokenizer) for it in items]
    results = greedy_generate(model, tokenizer, prompts, max_new)
    samples = []
    for it, (toks, stopped) in zip(items, results):
        text = tokenizer.decode(toks, skip_special_tokens=True)
        samples.append({"content": it["content"], "answer": it["answer"], "generation": text,
                        "exact_match": float(text == it["answer"]), "stopped": stopped})
    n = max(1, len(samples))
    return {"exact_match": sum(s["exact_match"] for s in samples) / n,
            "stop": sum(s["stopped"] for s in samples) / n, "samples": samples}


def train_run(variant: Variant, seed: int, config: TrainConfig,
              progress: Callable[[str], None] | None = None) -> RunResult:
    """Train one model with ``variant``'s collator; evaluate at ``config.eval_steps``."""
    tokenizer = tokenizer_for(config, variant)
    examples = training_examples(config, tokenizer)
    test_items = {t: toy.read_test_file(t)[:config.eval_size] for t in config.tasks}
    model = tiny_model(tokenizer, seed=seed, **config.model_kwargs())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(seed)
    result = RunResult(variant.name, seed, n_params=sum(p.numel() for p in model.parameters()))
    eval_at = sorted(set(s for s in config.eval_steps if s <= config.steps) | {config.steps})
    t0, train_time, recent = time.perf_counter(), 0.0, []
    for step in range(1, config.steps + 1):
        ts = time.perf_counter()
        pick = torch.randint(len(examples), (config.batch_size,), generator=order).tolist()
        opt.zero_grad(set_to_none=True)
        loss = variant.train_step(model, [examples[i] for i in pick], tokenizer.pad_token_id)
        opt.step()
        train_time += time.perf_counter() - ts
        recent.append(loss)
        if step in eval_at:
            point = {"step": step, "loss": sum(recent) / len(recent)}
            recent = []
            for task, items in test_items.items():
                ev = evaluate(model, tokenizer, items, config.max_new)
                point[task] = {"exact_match": ev["exact_match"], "stop": ev["stop"]}
                if step == config.steps:
                    result.samples[task] = ev["samples"]
            result.curve.append(point)
            if progress:
                scores = "  ".join(f"{t} em={point[t]['exact_match']:.3f} "
                                   f"stop={point[t]['stop']:.2f}" for t in test_items)
                progress(f"  {variant.name:<15} seed={seed} step {step:>4}/{config.steps} "
                         f"loss={point['loss']:.3f}  {scores}  "
                         f"({time.perf_counter() - t0:.0f}s)")
    model.eval()
    result.seconds = time.perf_counter() - t0
    result.step_seconds = train_time / config.steps
    result.model, result.tokenizer = model, tokenizer
    return result
