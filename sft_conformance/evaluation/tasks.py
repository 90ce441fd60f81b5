"""The seed-001 toy tasks, generated deterministically, with held-out test sets.

* ``reverse``: reverse a 4- or 5-letter word, ``<hello>`` -> ``olleh#``.
* ``sums``: add two or three digits, ``<3+4+5>`` -> ``12#``.

Each task has a fixed test set (shipped as ``sft_conformance/tasks/toy/<task>_test.jsonl`` and
read by the lm-eval task files next to it) and a training pool drawn from the same generator that
never contains a test prompt. The records hold the plain user ``content`` and the assistant
``answer``; the chat template is applied by whoever consumes them (the trainer through
``reference.build_example``, lm-eval through ``apply_chat_template=True``), so the same files
serve the seed-001 character tokenizer and the bundled BPE with ChatML.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent.parent / "tasks" / "toy"
TASKS = ("reverse", "sums")
TEST_SIZE = 256
TEST_SEED = 1234
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _reverse_item(rng: random.Random) -> dict:
    word = "".join(rng.choice(LETTERS) for _ in range(rng.choice((4, 5))))
    return {"content": word, "answer": word[::-1]}


def _sums_item(rng: random.Random) -> dict:
    terms = [rng.randint(0, 9) for _ in range(rng.choice((2, 3)))]
    return {"content": "+".join(map(str, terms)), "answer": str(sum(terms))}


GENERATORS = {"reverse": _reverse_item, "sums": _sums_item}


def test_set(task: str, n: int = TEST_SIZE) -> list[dict]:
    """The held-out test set of ``task``: ``n`` distinct prompts from a fixed seed."""
    rng = random.Random(f"{task}-test-{TEST_SEED}")
    seen, out = set(), []
    while len(out) < n:
        item = GENERATORS[task](rng)
        if item["content"] not in seen:
            seen.add(item["content"])
            out.append(item)
    return out


def train_pool(task: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` training items of ``task`` (repeats allowed) that never hold a test prompt."""
    held_out = {item["content"] for item in test_set(task)}
    rng = random.Random(f"{task}-train-{seed}")
    out = []
    while len(out) < n:
        item = GENERATORS[task](rng)
        if item["content"] not in held_out:
            out.append(item)
    return out


def conversation(item: dict) -> list[dict]:
    """The chat of one record: a user turn and the assistant's answer."""
    return [{"role": "user", "content": item["content"]},
            {"role": "assistant", "content": item["answer"]}]


def test_file(task: str) -> Path:
    return TASK_DIR / f"{task}_test.jsonl"


def write_test_files(directory: Path = TASK_DIR) -> list[Path]:
    """(Re)write the shipped JSONL test sets; ``tests/test_eval.py`` checks they are current."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in TASKS:
        path = directory / f"{task}_test.jsonl"
        path.write_text("".join(json.dumps(item) + "\n" for item in test_set(task)))
        paths.append(path)
    return paths


def read_test_file(task: str) -> list[dict]:
    return [json.loads(line) for line in test_file(task).read_text().splitlines() if line]


if __name__ == "__main__":
    for p in write_test_files():
        print(p)
