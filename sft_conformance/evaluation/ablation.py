"""The ablation: every variant x seed trained, evaluated during training and through lm-eval."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from . import variants as V
from .train import TrainConfig, train_run


@dataclass
class Preset:
    train: TrainConfig
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    budget: int
    lm_eval: bool = True
    run_checks: bool = True
    extra: dict = field(default_factory=dict)


PRESETS = {
    # the test's smoke run: three variants, one seed, a few seconds of training
    "smoke": Preset(TrainConfig(steps=100, eval_steps=(50, 100), eval_size=64),
                    ("correct", "no_prompt_mask", "pad_eq_eos"), (0,), budget=100,
                    run_checks=False),
    # the default: the mask variants, two seeds, about a minute or two on 2 cores
    "default": Preset(TrainConfig(steps=200, eval_steps=(50, 75, 100, 150, 200), eval_size=128),
                      V.MASK_VARIANTS, (0, 1), budget=100),
    # the committed report: the mask variants, four seeds, learning curves to step 400
    "full": Preset(TrainConfig(steps=400, eval_steps=(25, 50, 75, 100, 150, 200, 300, 400),
                               eval_size=256),
                   V.MASK_VARIANTS, (0, 1, 2, 3), budget=100),
    # packing and loss normalization: both toy tasks mixed, so answers (and the trained tokens
    # of a sequence, a row and a micro-batch) differ in length as real data does
    "packing": Preset(TrainConfig(tasks=("reverse", "sums"), steps=200,
                                  eval_steps=(50, 75, 100, 150, 200), eval_size=128),
                      V.PACKING_VARIANTS, (0, 1), budget=100),
    "full-packing": Preset(TrainConfig(tasks=("reverse", "sums"), steps=400,
                                       eval_steps=(25, 50, 75, 100, 150, 200, 300, 400),
                                       eval_size=256),
                           V.PACKING_VARIANTS, (0, 1, 2, 3), budget=100),
}


def preset(name: str, **overrides) -> Preset:
    p = PRESETS[name]
    train_over = {k: v for k, v in overrides.items()
                  if k in TrainConfig.__dataclass_fields__ and v is not None}
    rest = {k: v for k, v in overrides.items()
            if k in ("variants", "seeds", "budget", "lm_eval", "run_checks") and v is not None}
    return replace(p, train=replace(p.train, **train_over), **rest)


def caught_by(variant: V.Variant, profile: str = "ci") -> dict:
    """The suite run on ``variant`` as a target: every check's verdict and judged count."""
    from sft_conformance.runner import check_target

    spec = V.target_spec(variant.name)
    run = check_target(spec, profile=profile, shrink=False)
    if run.error:
        return {"error": run.error, "checks": {}, "failed": []}
    checks = {r.id: {"status": r.status, "judged": r.judged,
                     "message": r.message.splitlines()[0] if r.message else ""}
              for r in run.results}
    return {"error": None, "checks": checks, "tokenizer": run.tokenizer, "profile": run.profile,
            "command": f"sft-conformance check {spec} --profile {profile}",
            "failed": [c for c, r in checks.items() if r["status"] in ("failed", "error")]}


def run(p: Preset, progress: Callable[[str], None] = print) -> dict:
    from . import lmeval, report

    cfg = p.train
    gen_tasks = [f"sftc_{t}" for t in cfg.tasks]
    ll_tasks = [f"sftc_{t}_ll" for t in cfg.tasks]
    tm = lmeval.task_manager() if p.lm_eval else None
    runs, t0, step_times, n_params = [], time.perf_counter(), [], 0
    chosen = V.get(p.variants)
    total = len(chosen) * len(p.seeds)
    for variant in chosen:
        for seed in p.seeds:
            progress(f"[{len(runs) + 1}/{total}] {variant.name} seed {seed}: training "
                     f"{cfg.steps} steps")
            r = train_run(variant, seed, cfg, progress=progress)
            step_times.append(r.step_seconds)
            n_params = r.n_params
            entry = {"variant": variant.name, "seed": seed, "curve": r.curve,
                     "seconds": r.seconds, "step_seconds": r.step_seconds,
                     "samples": {t: s[:16] for t, s in r.samples.items()}}
            if p.lm_eval:
                lm = lmeval.make_lm(r.model, r.tokenizer, batch_size=64)
                out = lmeval.evaluate(lm, gen_tasks + ll_tasks, tm=tm, limit=cfg.eval_size)
                entry["lm_eval"], entry["agreement"] = {}, {}
                for task in cfg.tasks:
                    g, ll = f"sftc_{task}", f"sftc_{task}_ll"
                    entry["lm_eval"][task] = {
                        "exact_match": out["results"][g]["exact_match"],
                        "stop": out["stops"].get(g),
                        "acc": out["results"][ll]["acc"],
                        "perplexity": out["results"][ll]["perplexity"]}
                    entry["agreement"][task] = lmeval.agreement(r.samples[task],
                                                                out["samples"][g])
                    a = entry["agreement"][task]
                    progress(f"  lm-eval {g}: exact_match={out['results'][g]['exact_match']:.3f}"
                             f" stop={out['stops'].get(g, float('nan')):.2f} "
                             f"{ll}: acc={out['results'][ll]['acc']:.3f}; agrees with "
                             f"in-training eval on {a['exact_match_agree']}/{a['n']}")
            runs.append(entry)
            del r
    summary = report.summarize(runs, list(cfg.tasks), p.budget,
                               baselines={v.name: v.baseline for v in chosen})
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.reference import build_example

    from .tasks import conversation
    examples = []
    for v in chosen:
        tok = load_tokenizer(cfg.tokenizer, pad_equals_eos=v.pad_equals_eos)
        ex = build_example(conversation({"content": "hello", "answer": "olleh"}), tok)
        entry = {"name": v.name, "description": v.description, "violates": v.violates,
                 "baseline": v.baseline, "example": V.trained_tokens(v, ex, tok)}
        if p.run_checks:
            progress(f"the suite on {v.name} as a target (profile ci)")
            entry["suite"] = caught_by(v)
            progress(f"  failed: {', '.join(entry['suite']['failed']) or 'none'}")
        examples.append(entry)
    return {"config": {**asdict(cfg), "tasks": list(cfg.tasks)}, "variants": examples,
            "seeds": list(p.seeds), "budget": p.budget, "runs": runs, "summary": summary,
            "n_params": n_params, "step_seconds": statistics.median(step_times),
            "seconds": time.perf_counter() - t0, "environment": report.environment()}
