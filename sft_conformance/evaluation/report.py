"""JSON, Markdown and the plot of an ablation (``reports/eval/``), and the checkpoint tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path

#: The orderings the seed-001 ablation predicts at the step budget (mean over seeds).
EXPECTED = (
    ("correct", ">", "no_prompt_mask", "exact_match"),
    ("correct", ">", "mask_late", "exact_match"),
    ("correct", ">", "pad_eq_eos", "exact_match"),
    ("correct", ">", "pad_eq_eos", "stop"),
)


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform(),
           "processor": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    for mod in ("transformers", "lm_eval", "datasets", "tokenizers"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional
            env[mod] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return env


def _stats(values: list[float]) -> dict:
    if not values:
        return {}
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


#: Two-sided 95% Student t quantiles by degrees of freedom (n seeds - 1).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228}


def paired(runs: list[dict], variant: str, baseline: str, task: str, metric: str,
           step: int) -> dict:
    """``variant - baseline`` at ``step``, paired by seed (same initial weights and batch
    order): mean, the 95% interval of the mean, and whether it excludes 0."""
    def at(name):
        return {r["seed"]: p[task][metric] for r in runs if r["variant"] == name
                for p in r["curve"] if p["step"] == step}

    a, b = at(variant), at(baseline)
    diffs = [a[s] - b[s] for s in sorted(a) if s in b]
    if not diffs:
        return {}
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "n": 1, "half_width": None, "verdict": "one seed"}
    half = T95.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / len(diffs) ** 0.5
    verdict = ("within seed noise" if abs(mean) <= half
               else "worse" if mean < 0 else "better")
    return {"mean": mean, "n": len(diffs), "half_width": half, "verdict": verdict,
            "diffs": diffs}


def summarize(runs: list[dict], tasks: list[str], budget: int,
              baselines: dict | None = None) -> dict:
    """Mean and spread over seeds per variant, task and step; the ordering checks at ``budget``;
    each variant against its baseline (``baselines``: variant -> baseline), paired by seed."""
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    versus = {}
    for v, base in (baselines or {}).items():
        if v == base or v not in variants or base not in variants:
            continue
        last = max(p["step"] for r in runs for p in r["curve"])
        versus[v] = {"baseline": base, **{
            task: {m: paired(runs, v, base, task, m, budget) for m in ("exact_match", "stop")}
            for task in tasks}, "final": {
            task: {"step": last, "exact_match": paired(runs, v, base, task, "exact_match", last)}
            for task in tasks}}
    curves, at_budget, final = {}, {}, {}
    for v in variants:
        vr = [r for r in runs if r["variant"] == v]
        steps = sorted({p["step"] for r in vr for p in r["curve"]})
        for task in tasks:
            for metric in ("exact_match", "stop"):
                curves.setdefault(v, {}).setdefault(task, {})[metric] = [
                    {"step": s, **_stats([p[task][metric] for r in vr for p in r["curve"]
                                          if p["step"] == s])} for s in steps]
                at_budget.setdefault(v, {}).setdefault(task, {})[metric] = _stats(
                    [p[task][metric] for r in vr for p in r["curve"] if p["step"] == budget])
                final.setdefault(v, {}).setdefault(task, {})[metric] = _stats(
                    [r["curve"][-1][task][metric] for r in vr])
        for name in ("exact_match", "acc", "stop"):
            for task in tasks:
                vals = [r["lm_eval"][task][name] for r in vr
                        if r.get("lm_eval") and name in r["lm_eval"].get(task, {})]
                if vals:
                    final[v][task][f"lm_eval_{name}"] = _stats(vals)
    checks = []
    task = tasks[0]
    for a, op, b, metric in EXPECTED:
        if a in at_budget and b in at_budget:
            va = at_budget[a][task][metric].get("mean")
            vb = at_budget[b][task][metric].get("mean")
            if va is None or vb is None:
                continue
            checks.append({"check": f"{a} {op} {b} ({metric}, {task}, step {budget})",
                           "left": va, "right": vb, "ok": va > vb})
    agree = [r["agreement"][t] for r in runs for t in r.get("agreement", {})]
    agreement = {"runs": len(agree), "samples": sum(a["n"] for a in agree),
                 "exact_match_agree": sum(a["exact_match_agree"] for a in agree),
                 "stop_agree": sum(a["stop_agree"] for a in agree),
                 "all_agree": bool(agree) and all(a["all_agree"] for a in agree)}
    return {"curves": curves, "at_budget": at_budget, "final": final, "checks": checks,
            "versus": versus,
            "ordering_ok": all(c["ok"] for c in checks), "agreement": agreement}


def plot(summary: dict, tasks: list[str], budget: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 4 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        ax_c, ax_b, ax_s = axes[row]
        names = list(summary["curves"])
        for v in names:
            pts = summary["curves"][v][task]["exact_match"]
            xs = [p["step"] for p in pts]
            ax_c.plot(xs, [p["mean"] for p in pts], marker="o", label=v)
            ax_c.fill_between(xs, [p["min"] for p in pts], [p["max"] for p in pts], alpha=0.15)
        ax_c.axvline(budget, color="grey", linestyle=":", linewidth=1)
        ax_c.set(title=f"{task}: held-out exact match (mean, min-max over seeds)",
                 xlabel="training step", ylabel="exact match", ylim=(-0.02, 1.02))
        ax_c.legend(fontsize=8)
        for ax, metric, title in ((ax_b, "exact_match", f"exact match at step {budget}"),
                                  (ax_s, "stop", f"stops at end token, step {budget}")):
            means = [summary["at_budget"][v][task][metric].get("mean", 0) for v in names]
            lows = [m - summary["at_budget"][v][task][metric].get("min", m)
                    for v, m in zip(names, means)]
            highs = [summary["at_budget"][v][task][metric].get("max", m) - m
                     for v, m in zip(names, means)]
            ax.bar(range(len(names)), means, yerr=[lows, highs], capsize=4,
                   color=[f"C{i}" for i in range(len(names))])
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            ax.set(title=f"{task}: {title}", ylim=(0, 1.05))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(s: dict) -> str:
    if not s:
        return "-"
    if s.get("n", 1) == 1:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} ± {s['std']:.3f} ({s['min']:.2f}-{s['max']:.2f})"


#: What each variant's bug does, for the report (shown when one of the variants is present).
READING = (
    (("pad_eq_eos",),
     "- `stop` is the fraction of greedy generations that produced the end-of-turn token. The "
     "log-likelihood `acc` scores the answer tokens only (teacher forced), so a model that never "
     "learned to stop can score high there while its generations never end and never match: "
     "that is the pad == eos bug (S4)."),
    (("mask_late",),
     "- The mask one position too long leaves the first answer token untrained: the model "
     "learns the rest of the answer but cannot start it (S2)."),
    (("no_prompt_mask", "mask_early"),
     "- Without a prompt mask (and, less so, with the mask one too short) learning is slower at "
     "the same step budget; given enough steps these toy models catch up, which is why the "
     "comparison is made at the budget and learning curves are shown."),
    (("packed",),
     "- `packed` is the reference packer. With a block-diagonal mask and restarting positions "
     "every trained token sees exactly what it sees unpadded, so its loss and gradient equal "
     "`correct`'s up to float rounding (measured on one step: equal to 6 digits); only the "
     "order of summation differs."),
    (("pack_cross_attention",),
     "- Cross-document attention with restarting positions lets a token attend to the "
     "documents before it in its row, at relative distances computed from positions that "
     "restarted: with rotary embeddings an earlier document's token at the same position looks "
     "like the token's own position, and one at a later position like the future. A task that "
     "looks tokens up by position (reversing a word) cannot be learned reliably from such rows; "
     "inference, where a prompt is alone, never sees them."),
    (("pack_cross_target",),
     "- A cross-boundary target trains the end-of-turn position to predict the next "
     "document's first token. Greedy decoding stops at the end token, so this costs little at "
     "inference; it spends a little gradient on a prediction that cannot be made."),
    (("per_sequence", "pack_per_sequence", "micro_batch_means"),
     "- The loss-normalization bugs change how much each trained token weighs: a token of a "
     "short answer (a `sums` answer has 2-3 trained tokens, a `reverse` answer 5-6) weighs "
     "more under a per-sequence mean, a token of a short micro-batch more under a mean of "
     "micro-batch means. Their cost is a reweighting of the tasks, not lost information: "
     "look for one task gaining what the other loses."),
    (("left_pad_no_positions",),
     "- Left padding with positions counted over the padding shifts every position of a row "
     "by the same amount. Rotary position embeddings (Llama, Qwen, Mistral) depend on "
     "relative positions only, so on this Llama the loss and gradient are unchanged up to "
     "float rounding; the bug costs on models with learned absolute positions (GPT-2, OPT) and "
     "when the shift pushes positions past the trained context. S5 catches it either way."),
)


def _delta(d: dict) -> str:
    if not d:
        return "-"
    if d.get("half_width") is None:
        return f"{d['mean']:+.3f}"
    return f"{d['mean']:+.3f} ± {d['half_width']:.3f}"


def _suite(v: dict) -> str:
    suite = v.get("suite")
    if not suite:
        return "not run"
    if suite.get("error"):
        return f"error: {suite['error']}"
    failed = suite["failed"]
    if not failed:
        judged = sum(c["judged"] for c in suite["checks"].values())
        return f"passes ({judged} examples judged)"
    meant = v.get("violates")
    caught = meant in failed if meant else None
    text = "fails " + ", ".join(failed)
    if meant and not caught:
        text += f" (NOT {meant})"
    return text


def markdown(data: dict) -> str:
    from tabulate import tabulate

    cfg, env, summ = data["config"], data["environment"], data["summary"]
    tasks, budget = cfg["tasks"], data["budget"]
    lines = [
        f"# Post-SFT evaluation: the collator ablation (`{data['preset']}`) through lm-eval",
        "",
        f"Command: `{data['command']}`  ",
        f"Preset: `{data['preset']}`; generated {data['date']} in {data['seconds']:.0f} s."
        + (f"  \nRewritten from its JSON (no training): `{data['rerendered']}`"
           if data.get("rerendered") else ""), "",
        "Same data, steps, optimizer and (per seed) initial weights and batch order for every "
        "variant; only the collator (or the loss averaging) differs. Models: "
        f"{data['n_params']:,}-parameter Llama (hidden {cfg['hidden_size']}, "
        f"{cfg['num_layers']} layers), tokenizer `{cfg['tokenizer']}`, AdamW lr {cfg['lr']}, "
        f"batch {cfg['batch_size']}, {cfg['steps']} steps, seeds {data['seeds']}, "
        f"toy tasks {', '.join(tasks)} ({cfg['eval_size']} held-out prompts each). "
        f"Median step time {data['step_seconds']:.3f} s.", "",
        "## Variants", "",
        "`violates`: the check of the specification the bug breaks. `the suite on it`: "
        "`sft-conformance check` run on the variant itself as a target "
        "(`sft_conformance.evaluation.variants:VariantTarget`), the checks that failed, or "
        "`passes` for a correct variant.", "",
        tabulate([[v["name"], v["description"], v.get("violates") or "-", _suite(v),
                   f"`{v['example']}`"] for v in data["variants"]],
                 headers=["variant", "collator", "violates", "the suite on it",
                          "trained tokens ([x] = trained)"],
                 tablefmt="github"), "",
    ]
    versus = summ.get("versus", {})
    bugs = [v for v in data["variants"] if v.get("violates") and v["name"] in versus]
    if bugs:
        last = max(p["step"] for r in data["runs"] for p in r["curve"])
        lines += ["## Bug → check that catches it → what it costs", "",
                  f"Cost: the difference in held-out exact match from the variant's correct "
                  f"baseline at the budget (step {budget}) and at the last step ({last}), "
                  "paired by seed, with its 95% interval over the seeds.", ""]
        rows = []
        for v in bugs:
            d = versus[v["name"]]
            suite = v.get("suite") or {}
            caught = ("not run" if not suite or suite.get("error") else
                      "yes" if v["violates"] in suite.get("failed", []) else "NO")
            cells = []
            for t in tasks:
                cells.append(f"{_delta(d[t]['exact_match'])} "
                             f"({d[t]['exact_match'].get('verdict', '-')})")
                fin = d.get("final", {}).get(t, {}).get("exact_match", {})
                cells.append(f"{_delta(fin)} ({fin.get('verdict', '-')})" if fin else "-")
            rows.append([v["name"], v["violates"], caught] + cells)
        lines += [tabulate(rows, headers=["bug (variant)", "violates", "caught by it"] +
                           [h for t in tasks for h in (f"{t} @ {budget}", f"{t} @ {last}")],
                           tablefmt="github"), ""]
    for task in tasks:
        lines += [f"## {task}: held-out exact match at the step budget ({budget})", "",
                  "The budget is a step count where the correct collator has not saturated "
                  "(mean ± std over seeds, min-max in brackets). `final` is the last step; "
                  "`lm-eval` columns are lm-eval's scores of the final model (`sftc_" + task +
                  "` generate_until, `sftc_" + task + "_ll` log-likelihood acc).", ""]
        rows = []
        for v in summ["at_budget"]:
            b, f = summ["at_budget"][v][task], summ["final"][v][task]
            rows.append([v, _fmt(b["exact_match"]), _fmt(b["stop"]), _fmt(f["exact_match"]),
                         _fmt(f["stop"]), _fmt(f.get("lm_eval_exact_match", {})),
                         _fmt(f.get("lm_eval_stop", {})), _fmt(f.get("lm_eval_acc", {}))])
        lines += [tabulate(rows, headers=["variant", f"EM @ {budget}", f"stop @ {budget}",
                                          "EM final", "stop final", "lm-eval EM",
                                          "lm-eval stop", "lm-eval ll acc"],
                           tablefmt="github"), ""]
        if versus:
            lines += [f"### {task}: each variant against its correct baseline at step {budget}",
                      "",
                      "Paired by seed (same initial weights and batch order): the mean "
                      "difference in exact match and its 95% interval (Student t over the "
                      "seeds). `within seed noise` when the interval holds 0.", ""]
            rows = []
            for v, d in versus.items():
                em, stop = d[task]["exact_match"], d[task]["stop"]
                rows.append([v, d["baseline"], _delta(em), _delta(stop),
                             em.get("verdict", "-")])
            lines += [tabulate(rows, headers=["variant", "baseline", "Δ exact match",
                                              "Δ stop", "verdict"], tablefmt="github"), ""]
        steps = [p["step"] for p in next(iter(summ["curves"].values()))[task]["exact_match"]]
        rows = [[v] + [f"{p['mean']:.3f}" for p in summ["curves"][v][task]["exact_match"]]
                for v in summ["curves"]]
        lines += [f"### {task}: learning curves (mean exact match over seeds)", "",
                  tabulate(rows, headers=["variant"] + [f"step {s}" for s in steps],
                           tablefmt="github"), ""]
    lines += [f"![accuracy by variant]({data['plot']})", "", "## Checks", ""]
    lines += [f"- {'ok' if c['ok'] else 'FAILED'}: {c['check']}: {c['left']:.3f} vs "
              f"{c['right']:.3f}" for c in summ["checks"]] or [
        "None apply: the orderings `--strict` holds to involve the mask variants, which this "
        "run does not train."]
    a = summ["agreement"]
    verdict = ("agree sample for sample" if a["all_agree"] else "DISAGREE (see JSON)")
    lines += ["", "## In-training evaluation vs lm-eval", "",
              f"The hand-written greedy evaluation run during training and lm-eval's "
              f"`generate_until` on the final models {verdict}: exact match on "
              f"{a['exact_match_agree']}/{a['samples']} samples and end-token stop on "
              f"{a['stop_agree']}/{a['samples']} samples, over {a['runs']} (run, task) pairs.",
              "", "## Reading the results", ""]
    present = {v["name"] for v in data["variants"]}
    lines += [text for names, text in READING if set(names) & present]
    lines += ["- Times are wall-clock on the machine below and depend on its load."]
    if data.get("notes"):
        lines += ["", "## Notes", "", data["notes"].strip()]
    lines += [
              "", "## Environment", "",
              tabulate([[k, v] for k, v in env.items()], headers=["", ""], tablefmt="github"),
              ""]
    return "\n".join(lines)


def rerender(json_path: Path, *, budget: int | None = None, notes: str | None = None,
             run_checks: bool = False, progress=print, command: str | None = None) -> dict:
    """Rewrite a stored ablation (JSON, Markdown and plot, same folder and stem) without
    training again: at another step ``budget`` (one of the learning curve's steps), with
    ``notes``, and with the suite run on variants that have no verdicts yet (``run_checks``)."""
    from . import ablation
    from . import variants as V

    json_path = Path(json_path)
    data = json.loads(json_path.read_text())
    steps = {p["step"] for r in data["runs"] for p in r["curve"]}
    if budget is not None and budget not in steps:
        raise ValueError(f"budget {budget}: the stored curves have steps {sorted(steps)}")
    data["budget"] = budget if budget is not None else data["budget"]
    if notes is not None:
        data["notes"] = notes
    if command:
        data["rerendered"] = command
    for v in data["variants"]:
        known = V.VARIANTS.get(v["name"])
        if known is not None:
            v.setdefault("violates", known.violates)
            v.setdefault("baseline", known.baseline)
            if run_checks and not v.get("suite"):
                progress(f"the suite on {v['name']} as a target (profile ci)")
                v["suite"] = ablation.caught_by(known)
    data["summary"] = summarize(data["runs"], data["config"]["tasks"], data["budget"],
                                baselines={v["name"]: v.get("baseline", "correct")
                                           for v in data["variants"]})
    return write(data, json_path.parent, json_path, stem=json_path.stem)


def write(data: dict, out_dir: Path, json_path: Path | None = None,
          stem: str | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or f"ablation-{data['preset']}"
    png = plot(data["summary"], data["config"]["tasks"], data["budget"],
               out_dir / f"{stem}.png")
    data["plot"] = png.name
    md = out_dir / f"{stem}.md"
    md.write_text(markdown(data))
    jp = json_path or out_dir / f"{stem}.json"
    jp.parent.mkdir(parents=True, exist_ok=True)
    jp.write_text(json.dumps(data, indent=1, default=float) + "\n")
    return {"markdown": md, "json": jp, "plot": png}


def checkpoint_markdown(data: dict) -> str:
    from tabulate import tabulate

    lines = ["# lm-eval on checkpoints", "", f"Command: `{data['command']}`", ""]
    if "deltas" in data:
        rows = [[t, m, f"{d['before']:.4f}", f"{d['after']:.4f}", f"{d['delta']:+.4f}"]
                for t, ms in data["deltas"].items() for m, d in ms.items()]
        lines += [f"before: `{data['before']['checkpoint']}`  ",
                  f"after: `{data['after']['checkpoint']}`", "",
                  tabulate(rows, headers=["task", "metric", "before", "after", "delta"],
                           tablefmt="github"), "",
                  "A negative delta on a task the SFT data did not target is forgetting."]
    else:
        rows = [[t, m, f"{v:.4f}"] for t, ms in data["result"]["results"].items()
                for m, v in ms.items()]
        rows += [[t, "stop", f"{v:.4f}"] for t, v in data["result"]["stops"].items()]
        lines += [f"checkpoint: `{data['result']['checkpoint']}`", "",
                  tabulate(rows, headers=["task", "metric", "value"], tablefmt="github")]
    return "\n".join(lines) + "\n"
