"""``sft-conformance bench``: padding vs packing throughput, report and regression gate.

Examples::

    sft-conformance bench --preset smoke
    sft-conformance bench --preset cuda-qwen-alpaca
    sft-conformance bench --preset cuda-qwen-alpaca --batch-size 32 --loss chunked --compile
    sft-conformance bench --preset smoke --loss reference --strategies dynamic,packed
    sft-conformance bench --model ./my-model --data chats.jsonl --tokenizer ./my-model
    sft-conformance bench --preset smoke --compare reports/bench/smoke-cpu.json --fail-above 10
"""

from __future__ import annotations

import shlex
import sys


def add_arguments(parser) -> None:
    from sft_conformance.bench.presets import PRESETS
    from sft_conformance.bench.strategies import STRATEGIES

    parser.add_argument("--preset", default="smoke", choices=sorted(PRESETS),
                        help="named settings (default smoke); the options below override them")
    parser.add_argument("--model", help="tiny, tiny-wide, qwen2.5-0.5b, llama-3.2-1b, or a "
                        "local checkpoint/config directory or config.json")
    parser.add_argument("--data", help="alpaca, ultrachat, agentic, or a JSONL file of "
                        "conversations")
    parser.add_argument("--tokenizer", help="bundled template name (chatml, ...) or a local "
                        "tokenizer directory with a chat template")
    parser.add_argument("--n-examples", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--batch-size", type=int, help="examples per optimizer step")
    parser.add_argument("--warmup-steps", type=int)
    parser.add_argument("--repeats", type=int, help="timed epochs")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32", "float16"])
    parser.add_argument("--strategies", help=f"comma-separated subset of {','.join(STRATEGIES)}")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int, help="CPU only: torch threads for the run")
    parser.add_argument("--loss", choices=["auto", "reference", "chunked", "fused"],
                        help="the step's loss: reference (full float32 logits), chunked "
                        "(projection + cross-entropy in chunks of positions), fused (Liger, "
                        "needs liger-kernel and CUDA); auto = chunked above a 64k vocabulary")
    parser.add_argument("--loss-chunk-tokens", type=int, metavar="N",
                        help="positions per chunk of the chunked loss (default 1024)")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile the model and the loss")
    parser.add_argument("--compile-backend", metavar="NAME",
                        help="torch.compile backend (default inductor; eager/aot_eager to debug)")
    parser.add_argument("--attention", choices=["auto", "flash_attention_2", "torch_varlen",
                                                "flex_attention", "sdpa+block_causal_4d"],
                        help="attention of the packed and padding-free layouts (default auto: "
                        "flash-attn, else torch varlen_attn, else FlexAttention on CUDA; sdpa "
                        "block-causal on CPU)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="report directory (default sft-conformance-reports/bench; the "
                             "committed reports are rewritten only with --out reports/bench)")
    parser.add_argument("--name", help="report file stem (default PRESET-DEVICE)")
    parser.add_argument("--json", help="also write the results JSON here")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--results", help="use stored results JSON instead of running "
                        "(with --compare: gate a stored run)")
    parser.add_argument("--render", action="store_true",
                        help="with --results: write the report of the stored results to --out "
                             "(named --name, default the JSON's stem) instead of running")
    parser.add_argument("--compare", metavar="BASELINE.json",
                        help="regression gate against a baseline measured on the same device")
    parser.add_argument("--fail-above", type=float, default=10.0, metavar="PCT",
                        help="with --compare: exit 1 when a strategy's real-token throughput "
                        "drops by more than PCT percent (default 10)")


def run(args) -> int:
    import os

    from sft_conformance.bench import compare as gate
    from sft_conformance.cli import UsageError
    from sft_conformance.output import default_out
    from sft_conformance.validation import require_modules

    args.out = args.out or default_out("bench")
    writes = not args.results or args.render
    if writes and not args.no_plot:  # before any step runs: the plot is written last
        require_modules("bench", {"matplotlib": "bench"}, alternative="pass --no-plot")
    baseline = None
    if args.compare:
        if not os.path.exists(args.compare):
            raise UsageError(f"baseline {args.compare} does not exist")
        baseline = gate.load(args.compare)
    if args.results:
        if not os.path.exists(args.results):
            raise UsageError(f"results {args.results} do not exist")
        results = gate.load(args.results)
        if args.render:
            _render(results, args)
    else:
        results = _run(args)
    if baseline is None:
        s = results["summary"]
        return 0 if (s["all_parity_passed"] and s.get("all_isolation_passed", True)
                     and s.get("all_loss_checks_passed") is not False) else 1
    try:
        ok, table, regressions = gate.compare(results, baseline, args.fail_above)
    except gate.DeviceMismatch as exc:
        raise UsageError(str(exc)) from exc
    print(f"\nregression gate against {args.compare}:\n{table}")
    if not ok:
        names = ", ".join(r["strategy"] for r in regressions)
        print(f"FAILED: real-token throughput dropped by more than {args.fail_above:g}% "
              f"({names})", file=sys.stderr)
        return 1
    print("gate passed")
    return 0


def _render(results: dict, args) -> None:
    """Write the Markdown report (and plot) of stored results, re-summarized with this version's
    rules: a GPU machine sends back the JSON, the report is made where the repository is."""
    from pathlib import Path

    from sft_conformance.bench.report import parity_word, write_report
    from sft_conformance.bench.runner import _summarize

    if "strategies" not in results or "config" not in results:
        from sft_conformance.cli import UsageError

        raise UsageError(f"{args.results} is not a stored benchmark result (no strategies)")
    results["summary"] = _summarize(results["strategies"], results["dtype"])
    name = args.name or Path(args.results).stem
    paths = write_report(results, args.out, name, plot=not args.no_plot)
    s = results["summary"]
    print(f"loss parity: {parity_word(s['all_parity_passed'])}; report: "
          + ", ".join(str(p) for p in paths.values()))


def _run(args) -> dict:
    import json

    from sft_conformance.bench.presets import get_preset
    from sft_conformance.bench.report import parity_word, strategy_table, write_report
    from sft_conformance.bench.runner import run_benchmark
    from sft_conformance.cli import UsageError

    strategies = tuple(s.strip() for s in args.strategies.split(",")) if args.strategies else None
    try:
        cfg = get_preset(args.preset, model=args.model, data=args.data, tokenizer=args.tokenizer,
                         n_examples=args.n_examples, max_length=args.max_length,
                         batch_size=args.batch_size, warmup_steps=args.warmup_steps,
                         repeats=args.repeats, device=args.device, dtype=args.dtype,
                         strategies=strategies, seed=args.seed,
                         threads=args.threads, loss=args.loss,
                         loss_chunk_tokens=args.loss_chunk_tokens, compile=args.compile,
                         compile_backend=args.compile_backend, attention=args.attention)
    except KeyError as exc:
        raise UsageError(str(exc)) from exc
    command = "sft-conformance bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "bench" else None
    try:
        results = run_benchmark(cfg, progress=not args.no_progress, command=command)
    except (ValueError, RuntimeError, OSError) as exc:
        raise UsageError(str(exc)) from exc
    kind = results["device"]["kind"]
    name = args.name or (cfg.preset if kind in cfg.preset else f"{cfg.preset}-{kind}")
    paths = write_report(results, args.out, name, plot=not args.no_plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    print(strategy_table(results))
    s = results["summary"]
    print(f"\nloss parity: {parity_word(s['all_parity_passed'])}; isolation: "
          f"{'ok' if s['all_isolation_passed'] else 'FAILED'}; report: "
          + ", ".join(str(p) for p in paths.values()))
    return results
