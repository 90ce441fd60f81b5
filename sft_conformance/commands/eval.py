"""``sft-conformance eval``: post-SFT evaluation through lm-eval.

Without ``--model``/``--before``: the seed-001 collator ablation (train a tiny Llama per variant
and seed on CPU, evaluate it during training and through lm-eval).
Reports go to ``--out`` (default ``sft-conformance-reports/eval``).
With ``--model PATH --tasks ...``: lm-eval on a local checkpoint. With ``--before PATH --after
PATH --tasks ...``: both, and the per-task deltas (forgetting shows up as negative deltas).
Exit 0 on success, 1 when lm-eval and the in-training evaluation disagree (or, with ``--strict``,
when the expected ordering of the variants does not hold), 2 on usage errors.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_arguments(parser) -> None:
    a = parser.add_argument_group("ablation (default mode)")
    a.add_argument("--preset", choices=("smoke", "default", "full", "packing", "full-packing"),
                   default="default",
                   help="smoke: seconds (tests); default: the mask variants, a minute or two; "
                        "full: their committed report; packing / full-packing: the packing and "
                        "loss-normalization variants on both toy tasks")
    a.add_argument("--variants", type=_names, help="comma-separated variant names")
    a.add_argument("--seeds", type=_ints, help="comma-separated seeds")
    a.add_argument("--steps", type=int)
    a.add_argument("--eval-steps", type=_ints, help="steps of the learning curve")
    a.add_argument("--budget", type=int, help="the step at which variants are compared")
    a.add_argument("--toy-tasks", type=_names, help="reverse and/or sums (trained as a mix)")
    a.add_argument("--tokenizer", help="seed001 (default, character) or chatml (bundled BPE)")
    a.add_argument("--eval-size", type=int, help="held-out prompts per task")
    a.add_argument("--no-lm-eval", action="store_true", help="in-training evaluation only")
    a.add_argument("--no-checks", action="store_true",
                   help="do not run the suite on each variant as a target")
    a.add_argument("--notes", help="a Markdown file of findings, included in the report")
    a.add_argument("--from-json", metavar="PATH",
                   help="rewrite a stored ablation (its .md, .json and .png) without training: "
                        "with --budget (a step of its curves), --notes, and the suite run on "
                        "variants that have no verdicts yet (unless --no-checks)")
    a.add_argument("--out", default=None, metavar="DIR",
                   help="report folder (default sft-conformance-reports/eval; the committed "
                        "reports are rewritten only with --out reports/eval)")
    a.add_argument("--strict", action="store_true",
                   help="exit 1 when the expected ordering of the variants does not hold")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 for the ablation's tiny models, "
                             "torch's default for checkpoints)")
    c = parser.add_argument_group("checkpoints")
    c.add_argument("--model", help="local Hugging Face checkpoint to evaluate")
    c.add_argument("--before", help="checkpoint before SFT")
    c.add_argument("--after", help="checkpoint after SFT")
    c.add_argument("--tasks", type=_names,
                   help="lm-eval tasks (default: sftc_reverse,sftc_sums, shipped in the package)")
    c.add_argument("--include-path", action="append", default=[],
                   help="folder of the user's task YAML (repeatable)")
    c.add_argument("--lm-eval-defaults", action="store_true",
                   help="also index lm-eval's built-in tasks (slower; their data must be cached)")
    c.add_argument("--limit", type=int, help="documents per task")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    c.add_argument("--chat-template", choices=("auto", "yes", "no"), default="auto",
                   help="apply the tokenizer's chat template (auto: when it has one)")
    c.add_argument("--markdown", help="also write the Markdown table to this path")
    parser.add_argument("--json", help="write the JSON result to this path")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _command() -> str:
    return "sft-conformance " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if (
        sys.argv and sys.argv[0].endswith("sft-conformance")) else "sft-conformance eval " + \
        " ".join(shlex.quote(a) for a in sys.argv[2:])


def run(args) -> int:
    import torch

    from sft_conformance.cli import UsageError
    from sft_conformance.output import default_out
    from sft_conformance.validation import require_modules

    checkpoints = bool(args.model or args.before or args.after)
    args.out = args.out or default_out("eval")
    # before any model is trained or loaded: lm-eval, its datasets, and the plot
    if checkpoints or not (args.no_lm_eval or args.from_json):
        require_modules("eval", {"lm_eval": "eval", "datasets": "eval"},
                        alternative="" if checkpoints else "pass --no-lm-eval")
    if not checkpoints:
        require_modules("eval", {"matplotlib": "eval"})
    threads = args.threads or (None if checkpoints else 1)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if checkpoints:
            return _run_checkpoints(args, UsageError)
        return _run_ablation(args, UsageError)
    finally:
        torch.set_num_threads(previous)


def _run_ablation(args, UsageError) -> int:
    from sft_conformance.evaluation import ablation, report
    from sft_conformance.evaluation import tasks as toy
    from sft_conformance.evaluation import variants as V

    if args.tasks or args.include_path:
        raise UsageError("--tasks/--include-path evaluate checkpoints: pass --model or "
                         "--before/--after (the ablation uses --toy-tasks)")
    notes = None
    if args.notes:
        try:
            notes = Path(args.notes).read_text()
        except OSError as exc:
            raise UsageError(f"--notes {args.notes}: {exc.strerror}") from None
    if args.from_json:
        if not Path(args.from_json).is_file():
            raise UsageError(f"--from-json {args.from_json}: no such file")
        try:
            paths = report.rerender(Path(args.from_json), budget=args.budget, notes=notes,
                                    run_checks=not args.no_checks, progress=_progress,
                                    command=_command())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"report: {paths['markdown']}  json: {paths['json']}  plot: {paths['plot']}")
        return 0
    if args.toy_tasks and set(args.toy_tasks) - set(toy.TASKS):
        raise UsageError(f"--toy-tasks: expected some of {', '.join(toy.TASKS)}")
    if args.tokenizer and args.tokenizer not in ("seed001", "chatml"):
        raise UsageError("--tokenizer: seed001 or chatml")
    try:
        V.get(args.variants)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    p = ablation.preset(args.preset, variants=args.variants, seeds=args.seeds, steps=args.steps,
                        eval_steps=args.eval_steps, budget=args.budget, tasks=args.toy_tasks,
                        tokenizer=args.tokenizer, eval_size=args.eval_size,
                        lm_eval=False if args.no_lm_eval else None,
                        run_checks=False if args.no_checks else None)
    if p.budget > p.train.steps:
        raise UsageError(f"--budget {p.budget} is beyond --steps {p.train.steps}")
    p.train.eval_steps = tuple(sorted(set(p.train.eval_steps) | {p.budget}))
    _progress(f"sft-conformance eval: preset {args.preset}, variants {', '.join(p.variants)}, "
              f"seeds {list(p.seeds)}, {p.train.steps} steps, tasks {', '.join(p.train.tasks)}")
    data = ablation.run(p, progress=_progress)
    data.update(preset=args.preset, command=_command(), date=time.strftime("%Y-%m-%d %H:%M"),
                notes=notes)
    paths = report.write(data, Path(args.out), Path(args.json) if args.json else None)
    summ = data["summary"]
    task = p.train.tasks[0]
    print(f"{'variant':<16}{'EM@' + str(p.budget):>10}{'stop@' + str(p.budget):>10}"
          f"{'EM final':>10}{'lm-eval EM':>12}")
    for v, per_task in summ["at_budget"].items():
        f = summ["final"][v][task]
        print(f"{v:<16}{per_task[task]['exact_match']['mean']:>10.3f}"
              f"{per_task[task]['stop']['mean']:>10.2f}{f['exact_match']['mean']:>10.3f}"
              f"{f.get('lm_eval_exact_match', {}).get('mean', float('nan')):>12.3f}")
    for c in summ["checks"]:
        print(f"{'ok' if c['ok'] else 'FAILED'}: {c['check']} ({c['left']:.3f} vs "
              f"{c['right']:.3f})")
    a = summ["agreement"]
    if a["runs"]:
        print(f"in-training eval vs lm-eval: exact match {a['exact_match_agree']}/{a['samples']}"
              f", stop {a['stop_agree']}/{a['samples']}")
    print(f"report: {paths['markdown']}  json: {paths['json']}  plot: {paths['plot']}")
    if a["runs"] and not a["all_agree"]:
        return 1
    return 1 if args.strict and not summ["ordering_ok"] else 0


def _run_checkpoints(args, UsageError) -> int:
    from sft_conformance.evaluation import lmeval, report

    if args.model and (args.before or args.after):
        raise UsageError("pass either --model or --before/--after, not both")
    if bool(args.before) != bool(args.after):
        raise UsageError("--before and --after go together")
    for path in (args.model, args.before, args.after):
        if path and not Path(path).is_dir():
            raise UsageError(f"checkpoint {path!r} is not a local directory")
    tasks = list(args.tasks or lmeval.TOY_TASKS)
    tm = lmeval.task_manager(args.include_path, include_defaults=args.lm_eval_defaults)
    missing = [t for t in tasks if t not in tm.task_index]
    if missing:
        raise UsageError(f"unknown lm-eval task(s) {missing}"
                         + ("" if args.lm_eval_defaults else
                            " (lm-eval's built-in tasks need --lm-eval-defaults)"))
    chat = {"auto": None, "yes": True, "no": False}[args.chat_template]
    kwargs = dict(tm=tm, batch_size=args.batch_size, limit=args.limit, apply_chat_template=chat,
                  device=args.device)
    data = {"command": _command(), "tasks": tasks}
    if args.model:
        _progress(f"lm-eval on {args.model}: {', '.join(tasks)}")
        data["result"] = lmeval.evaluate_checkpoint(args.model, tasks, **kwargs)
        for t, ms in data["result"]["results"].items():
            stop = data["result"]["stops"].get(t)
            print(f"{t}: " + ", ".join(f"{m}={v:.4f}" for m, v in ms.items())
                  + (f", stop={stop:.3f}" if stop is not None else ""))
    else:
        _progress(f"lm-eval before SFT ({args.before}): {', '.join(tasks)}")
        data["before"] = lmeval.evaluate_checkpoint(args.before, tasks, **kwargs)
        _progress(f"lm-eval after SFT ({args.after}): {', '.join(tasks)}")
        data["after"] = lmeval.evaluate_checkpoint(args.after, tasks, **kwargs)
        data["deltas"] = lmeval.deltas(data["before"], data["after"])
        print(f"{'task':<24}{'metric':<14}{'before':>10}{'after':>10}{'delta':>10}")
        for t, ms in data["deltas"].items():
            for m, d in ms.items():
                print(f"{t:<24}{m:<14}{d['before']:>10.4f}{d['after']:>10.4f}"
                      f"{d['delta']:>+10.4f}")
    for key in ("result", "before", "after"):
        if key in data:
            data[key].pop("config", None)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1, default=float) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(report.checkpoint_markdown(data))
    return 0
