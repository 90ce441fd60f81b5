"""Markdown summary of a pytest-benchmark JSON of ``bench/test_micro.py``.

    python -m sft_conformance.bench.micro_report reports/bench/micro-cpu.json "exact command"
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

EXTRA = ("examples_per_call", "items", "rows", "fill_rate", "full_logits_mb", "peak_allocated_mb",
         "peak_memory")


def micro_markdown(data: dict, command: str | None = None) -> str:
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {}).get("brand_raw", mi.get("processor", "?"))
    cuda = any(b.get("extra_info", {}).get("device") == "cuda" for b in data["benchmarks"])
    lines = [f"# Micro-benchmarks ({'CUDA' if cuda else 'CPU'})", ""]
    if not cuda:
        lines += ["> **CPU run** on a shared 2-core machine; the loss group runs at a 32,768 "
                  "vocabulary and 1,024 tokens on CPU (151,936 and 4,096 on CUDA).", ""]
    gpus = sorted({b.get("extra_info", {}).get("device_name") for b in data["benchmarks"]} - {None})
    commit = data.get("commit_info", {}).get("id") or "?"
    if commit == "unversioned" and os.environ.get("SFT_CONFORMANCE_GIT_COMMIT"):
        commit = os.environ["SFT_CONFORMANCE_GIT_COMMIT"]  # a tree copied without its .git
    lines += [f"- Machine: {cpu}" + (f", GPU {', '.join(gpus)}" if gpus else "")
              + f", python {mi.get('python_version')}, date {data.get('datetime', '?')}",
              f"- Command: `{command or 'pytest bench/test_micro.py --benchmark-only'}`",
              f"- Commit: {commit[:10]}"
              + (" (dirty)" if data.get("commit_info", {}).get("dirty") else ""), ""]
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"]].append(b)
    for group, items in groups.items():
        items.sort(key=lambda b: b["stats"]["median"])
        ours = next((b for b in items if "ours" in b["name"]), None)
        rows = []
        for b in items:
            st, ex = b["stats"], b.get("extra_info", {})
            per = ex.get("examples_per_call")
            rows.append([
                b["name"].replace("test_", ""), f"{1e3 * st['median']:.1f}",
                f"{1e3 * st['min']:.1f}", st["rounds"],
                f"{per / st['median']:,.0f}" if per else "",
                f"{st['median'] / ours['stats']['median']:.2f}x" if ours else "",
                "; ".join(f"{k}={ex[k]:.4f}" if isinstance(ex[k], float) else f"{k}={ex[k]}"
                          for k in EXTRA if k in ex and k != "examples_per_call"),
            ])
        lines += [f"## {group}", "",
                  tabulate(rows, headers=["benchmark", "median ms", "min ms", "rounds",
                                          "examples/s", "time vs ours", "extra"],
                           tablefmt="github", disable_numparse=True), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0])
    text = micro_markdown(json.loads(path.read_text()), argv[1] if len(argv) > 1 else None)
    path.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
