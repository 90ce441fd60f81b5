"""Write a result as JSON, a Markdown report and a PNG plot (``reports/bench/<name>.*``)."""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate


def _fmt(x, spec=".1f", none="n/a"):
    return none if x is None else format(x, spec)


def _pct(x, none="n/a"):
    return none if x is None else f"{100 * x:.1f}%"


def short_error(message: str) -> str:
    """The first sentence of a strategy's error for the table (the whole of it is listed below)."""
    first = message.split(". ")[0]
    return first if len(first) <= 90 else first[:87] + "..."


def parity_cell(parity: dict) -> str:
    if "rel_diff_vs_padded" not in parity:
        return "not judged (no padded run)"
    return f"{parity['rel_diff_vs_padded']:.1e}" + (" ok" if parity.get("passed") else " FAIL")


def parity_word(passed) -> str:
    return "not judged (no padded strategy ran)" if passed is None else ("ok" if passed else
                                                                          "FAILED")


def device_label(results: dict) -> str:
    d = results["device"]
    return f"{d['kind'].upper()}: {d['name']}"


def busy_cell(entry: dict) -> str:
    """GPU-busy fraction and its label; "not measured" on a CPU (never a number there)."""
    b = entry.get("busy")
    if not b:
        return "not recorded"
    if b.get("fraction") is None:
        return "not measured"
    from .busy import CPU_BOUND_BELOW

    return f"{100 * b['fraction']:.0f}%" + (" CPU-bound" if b["fraction"] < CPU_BOUND_BELOW
                                            else "")


def memory_table(results: dict) -> str:
    """Per layout: peak memory, what a step adds to the weights and optimizer state, per 1k
    real tokens of the layout's largest step (equal tokens: every layout sees the same
    examples)."""
    rows = []
    for s, e in results["strategies"].items():
        if "error" in e:
            rows.append([s, short_error(e["error"]), "", "", "", ""])
            continue
        big = e.get("largest_step") or {}
        rows.append([s, _fmt(e.get("peak_allocated_mb"), ",.0f"),
                     _fmt(e.get("static_allocated_mb"), ",.0f"),
                     _fmt(e.get("step_peak_mb"), ",.0f"),
                     f"{big.get('slots', 0):,} / {big.get('real_tokens', 0):,}" if big else "n/a",
                     _fmt(e.get("step_peak_mb_per_1k_real_tokens"), ",.1f")])
    return tabulate(rows, headers=["strategy", "peak allocated MB", "weights + optimizer MB",
                                   "step peak MB (peak - static)",
                                   "largest step: slots / real tokens",
                                   "step peak MB per 1k real tokens"],
                    tablefmt="github", disable_numparse=True)


def busy_lines(results: dict) -> list[str]:
    """The GPU-busy paragraph: measured fractions, CPU-bound labels and the advice."""
    from .busy import ADVICE, CPU_BOUND_BELOW

    measured = {s: e["busy"] for s, e in results["strategies"].items()
                if e.get("busy") and e["busy"].get("fraction") is not None}
    if not any("busy" in e for e in results["strategies"].values()):
        return ["GPU-busy fraction: **not recorded** (these results predate it).", ""]
    if not measured:
        return ["GPU-busy fraction: **not measured** (no GPU in this run; it is CUDA kernel time "
                "over wall time, from torch.profiler, on CUDA runs only).", ""]
    lines = [f"GPU-busy fraction (CUDA kernel time / wall time, "
             f"{next(iter(measured.values()))['method']}); below {CPU_BOUND_BELOW:g} a run is "
             "labelled CPU-bound.", ""]
    rows = [[s, f"{100 * b['fraction']:.1f}%", f"{b['device_s'] * 1e3:.1f}",
             f"{b['wall_s'] * 1e3:.1f}", b["label"]] for s, b in measured.items()]
    lines += [tabulate(rows, headers=["strategy", "busy", "kernel ms", "wall ms", "verdict"],
                       tablefmt="github", disable_numparse=True), ""]
    bound = [s for s, b in measured.items() if b["fraction"] < CPU_BOUND_BELOW]
    if bound:
        lines += [f"**CPU-bound:** {', '.join(bound)}. The GPU waited on the host for more than "
                  f"{100 * (1 - CPU_BOUND_BELOW):.0f}% of these steps, so their speed measures "
                  f"launch overhead more than the layout: {ADVICE}.", ""]
    return lines


def strategy_table(results: dict) -> str:
    rows = []
    for s, e in results["strategies"].items():
        if "error" in e:
            rows.append([s, short_error(e["error"])] + [""] * 13)
            continue
        tps = e["real_tokens_per_s"]
        rows.append([
            s, f"{tps['median']:,.0f} [{tps['min']:,.0f}-{tps['max']:,.0f}]",
            f"{e['trained_tokens_per_s']['median']:,.0f}", _pct(e["padding_fraction"]),
            _pct(e.get("packing_fill_rate", e["fill_rate"])),
            f"{1e3 * e['step_fwd_bwd_s']['median']:.1f}",
            f"{1e3 * e['step_optimizer_s']['median']:.1f}", e["steps"],
            _fmt(e["peak_allocated_mb"], ",.0f") + " / " + _fmt(e["peak_reserved_mb"], ",.0f"),
            _pct(e["mfu_vs_peak"]), _pct(e["mfu_vs_matmul_ceiling"]),
            f"{e['parity']['loss_mean']:.6f}",
            parity_cell(e["parity"]),
            _fmt(e.get("speedup_vs_dynamic"), ".2f", none="n/a (no dynamic run)")
            + ("x" if e.get("speedup_vs_dynamic") is not None else ""),
            busy_cell(e),
        ])
    headers = ["strategy", "real tok/s median [min-max]", "trained tok/s", "padding",
               "fill", "fwd+bwd ms/step", "optim ms/step", "steps", "peak alloc/reserved MB",
               "MFU (peak)", "MFU (matmul ceiling)", "mean loss", "parity rel. diff",
               "speed-up vs dynamic", "GPU busy"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def write_plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = {s: e for s, e in results["strategies"].items() if "error" not in e}
    names = list(ok)
    med = [ok[s]["real_tokens_per_s"]["median"] for s in names]
    lo = [m - ok[s]["real_tokens_per_s"]["min"] for s, m in zip(names, med)]
    hi = [ok[s]["real_tokens_per_s"]["max"] - m for s, m in zip(names, med)]
    pad = [100 * ok[s]["padding_fraction"] for s in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(names, med, yerr=[lo, hi], capsize=4, color="tab:blue")
    a.set_ylabel("real (non-pad) tokens / s")
    a.set_title("Throughput (median, min-max over repeats)")
    ideal = results["summary"].get("ideal_speedup")
    if ideal and "dynamic" in ok:
        a.axhline(ok["dynamic"]["real_tokens_per_s"]["median"] * ideal, ls="--", color="gray",
                  label=f"ideal = dynamic x {ideal:.2f}")
        a.legend(loc="upper left", fontsize=8)
    b.bar(names, pad, color="tab:orange")
    b.set_ylabel("padding (% of tensor slots)")
    b.set_title("Padding fraction")
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(f"sft-conformance bench [{device_label(results)}] "
                 f"{results['model']['spec']}, {results['data']['name']}, "
                 f"max_length {results['config']['max_length']}, {results['dtype']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(results: dict, plot_name: str | None) -> str:
    cfg, dev, env = results["config"], results["device"], results["environment"]
    summ, model = results["summary"], results["model"]
    cpu = dev["kind"] == "cpu"
    lines = [f"# Throughput benchmark: padding vs packing ({dev['kind'].upper()})", ""]
    if cpu:
        lines += ["> **CPU run.** These numbers come from a CPU and say nothing about GPU "
                  "throughput; on a CPU attention is a small share of the work and the flattened "
                  "layouts use a dense masked attention. Run a CUDA preset for GPU numbers.", ""]
    lines += [
        f"- Device: **{device_label(results)}**"
        + (f", {dev.get('cores')} cores visible, {dev.get('torch_threads')} torch threads"
           if cpu else f", {dev.get('memory_gb', 0):.0f} GiB, CUDA {dev.get('cuda')}"),
        f"- Command: `{results.get('command') or 'n/a'}`",
        f"- Preset `{cfg['preset']}`; date {env['date_utc']} UTC; git {env['git_commit']}; "
        f"wall time {results.get('wall_s', 0):.0f} s",
        f"- Load average (1/5/15 min) at start {env.get('load_average')}, at end "
        f"{env.get('load_average_at_end')} on {dev.get('cores', '?')} cores"
        + (" (a shared machine: other jobs ran during the measurement)"
           if cpu and (env.get("load_average") or [0])[0] > (dev.get("cores") or 1) else ""),
        "- Versions: python " + env["python"] + ", " + ", ".join(
            f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- Model: `{model['spec']}` ({model['source']}), {model['model_type']}, "
        f"{model['params_total'] / 1e6:.2f} M parameters ({model['params_matmul'] / 1e6:.2f} M in "
        f"matmuls), {model['layers']} layers, hidden {model['hidden_size']}, vocabulary "
        f"{model['vocab_size']:,}; dtype {results['dtype']}",
        f"- Batching: {cfg['batch_size']} examples per step, max_length {cfg['max_length']}, "
        f"{cfg['warmup_steps']} warm-up step(s) excluded, {cfg['repeats']} timed epochs "
        "(median and min-max over them)"
        + ("; CUDA timed with events, read after synchronize" if not cpu else
           "; wall-clock timing (time.perf_counter)"),
        f"- Loss: `{(results.get('loss') or {}).get('kind', 'reference')}`"
        + (f" ({results['loss']['description']})" if results.get("loss") else
           " (sft_loss over the full float32 logits)")
        + f"; compile: {_compile_word(results)}; optimizer "
        f"{results.get('optimizer', 'AdamW (torch default)')}",
        f"- Attention: padded runs `{results['attention']['padded']}`, packed / padding-free "
        f"`{results['attention']['flattened']}` ({results['attention']['why']})"
        + (f"; fallback: {results['attention']['fallback']}"
           if results["attention"].get("fallback") else ""),
        "",
        "## Data: length distribution (tokens per conversation, chat template included)",
        "",
        f"{results['data']['description']}; tokenizer `{results['data']['tokenizer']}`. "
        f"Over-long examples are truncated keeping the end token ({results['data']['n_truncated']}"
        f" truncated, {results['data']['n_dropped']} dropped).",
        "",
    ]
    rl = results["data"]["raw_lengths"]
    lines += [tabulate([[rl["n"], f"{rl['mean']:.1f}", f"{rl['median']:.0f}", f"{rl['p90']:.0f}",
                         f"{rl['p99']:.0f}", rl["max"], _pct(rl["frac_over_cap"])]],
                       headers=["examples", "mean", "median", "p90", "p99", "max",
                                f"over cap ({rl['cap']})"], tablefmt="github"), ""]
    lines += ["## Results per strategy", "", strategy_table(results), "",
              *busy_lines(results),
              "Real tokens are attention-mask ones; trained tokens are aligned labels != -100; "
              "padding is the share of tensor slots (rows x width) that are pad; fill is real / "
              "slots (for `packed`, real / (rows x max_length)). Step times are medians per step.",
              ""]
    if plot_name:
        lines += [f"![throughput]({plot_name})", ""]
    lines += ["## Speed-up against dynamic padding", ""]
    if "ideal_speedup" in summ:
        rows = [[s, f"{e['speedup_vs_dynamic']:.2f}x", f"{summ['ideal_speedup']:.2f}x",
                 _pct(e["fraction_of_ideal"])]
                for s, e in results["strategies"].items() if "speedup_vs_dynamic" in e]
        lines += [f"Dynamic-padding density {_pct(summ['dynamic_padding_density'])}: ideal "
                  f"speed-up = 1 / density = {summ['ideal_speedup']:.2f}x. Published anchors "
                  "for packing over dynamic padding on GPUs: 1.4-3.7x (transformers PR #31629, "
                  "TRL PR #3526, torchtune README).", "",
                  tabulate(rows, headers=["strategy", "speed-up (real tok/s)", "ideal",
                                          "share of ideal"], tablefmt="github"), ""]
        if any(e.get("fraction_of_ideal", 0) > 1 for e in results["strategies"].values()):
            lines += ["A share above 100% is not a free lunch: the ideal counts padding only, "
                      "while packed rows may also need fewer optimizer steps (see `steps`) and "
                      "per-step overheads shrink; on a shared machine the strategies also ran "
                      "under different loads.", ""]
    lines += ["## Memory per layout", "", memory_table(results), "",
              "Every layout trains on the same examples (equal tokens). Peak allocated is "
              "`torch.cuda.max_memory_allocated` over the timed epochs; the static part is what "
              "is allocated after the warm-up with gradients freed (weights and optimizer "
              "state); the step peak is what the largest step adds on top."
              + (" A CPU has no allocator statistics: n/a here." if cpu else ""), ""]
    checks = [[s, f"{e['loss_check']['value']:.6f}", f"{e['loss_check']['reference']:.6f}",
               f"{e['loss_check']['rel_diff']:.1e}", f"{e['loss_check']['rtol']:g}",
               "ok" if e["loss_check"]["passed"] else "FAILED"]
              for s, e in results["strategies"].items() if "loss_check" in e]
    if checks:
        kind = results["loss"]["kind"]
        lines += [f"## The step's loss (`{kind}`) against the reference loss", "",
                  f"`{kind}` and the reference `sft_loss` (full float32 logits) on the first "
                  f"{results['strategies'][checks[0][0]]['loss_check']['rows']} rows of each "
                  "layout's first batch, at the initial weights.", "",
                  tabulate(checks, headers=["strategy", kind, "reference", "rel. diff",
                                            "tolerance", "check"], tablefmt="github",
                           disable_numparse=True), ""]
    lines += ["## Loss parity and document isolation", "",
              f"Mean loss = token-sum / token-count over the whole epoch at the initial weights; "
              f"reference: `{summ['reference_for_parity']}`, relative tolerance "
              f"{summ['parity_rtol']:g}. Loss parity: "
              f"**{parity_word(summ['all_parity_passed'])}**.", ""]
    iso = [[s, f"{e['isolation'].get('batch', 0)} / {e['isolation'].get('row', 0)}",
            e["isolation"]["documents_in_row"], f"{e['isolation']['max_abs_nll_diff']:.2e}",
            f"{e['isolation']['leak_control_max_abs_nll_diff']:.2e}",
            f"{e['isolation']['atol']:g}", "passed" if e["isolation"]["passed"] else "FAILED"]
           for s, e in results["strategies"].items() if "isolation" in e]
    if iso:
        lines += ["Per-token NLL of one row, packed vs each of its documents run alone. The row "
                  "is the one with the most documents in the first batch that has a row of two "
                  "documents or more; the leak control runs the same row with a plain causal "
                  "mask (documents see each other), showing that a leak would be visible.", "",
                  tabulate(iso, headers=["strategy", "batch / row", "documents", "max |dNLL|",
                                         "leak control max |dNLL|", "tolerance", "isolation"],
                           tablefmt="github"), ""]
    ceil = results["matmul_ceiling"]
    lines += ["## MFU", "",
              f"FLOPs per training step: {results['flops_formula']}.", "",
              f"Device dense bf16 peak: "
              f"{_fmt(dev.get('dense_bf16_peak_flops') and dev['dense_bf16_peak_flops'] / 1e12)}"
              f" TFLOP/s ({dev['peak_source']}). Matmul ceiling measured in this run: "
              f"{ceil['flops'] / 1e9:,.1f} GFLOP/s ({ceil['size']}x{ceil['size']} {ceil['dtype']}"
              f" matmul, median of {ceil['iters']}).", ""]
    pk, pc = results.get("packing"), results.get("packer_comparison")
    if pk:
        lines += ["## Packing fill rate (best-fit-decreasing)", "",
                  tabulate([["this run's data", pk["run_data"]["items"],
                             pk["run_data"]["capacity"], pk["run_data"]["rows"],
                             pk["run_data"]["lower_bound_rows"], _pct(pk["run_data"]["fill_rate"])],
                            [pk["at_2048"]["source"], pk["at_2048"]["items"], 2048,
                             pk["at_2048"]["rows"], pk["at_2048"]["lower_bound_rows"],
                             _pct(pk["at_2048"]["fill_rate"])]],
                           headers=["lengths", "items", "capacity", "rows",
                                    "lower bound rows", "fill rate"], tablefmt="github"),
                  "", "Target: >= 99% on the Alpaca-like data at max_length 2,048 (published "
                  "BFD range 98.8-99.96%).", ""]
    if pc:
        rows = []
        for key, label in (("ours", "sft-conformance best_fit_decreasing"),
                           ("trl", "TRL pack_dataset(strategy='bfd'), default map batches"),
                           ("trl_one_batch", "TRL pack_dataset(strategy='bfd'), one map batch")):
            r = pc.get(key, {})
            rows.append([label, "skipped: " + r["skipped"]] + [""] * 2 if "skipped" in r else
                        [label, f"{r['seconds']:.2f}", r["rows"], _pct(r["fill_rate"])])
        lines += [f"### Packer vs TRL ({pc['items']:,} lengths, capacity {pc['capacity']})", "",
                  tabulate(rows, headers=["packer", "seconds", "rows", "fill rate"],
                           tablefmt="github", disable_numparse=True), "",
                  "One timing each on a shared machine; the pytest-benchmark micro-benchmarks "
                  "(`pytest bench/ --benchmark-only`) repeat them.", ""]
    lines += ["## Targets of issue #4 (measured, not asserted)", "",
              tabulate(targets(results), headers=["target", "measured", "status"],
                       tablefmt="github", disable_numparse=True), ""]
    if summ.get("errors"):
        lines += ["## Errors", ""] + [f"- `{s}`: {m}" for s, m in summ["errors"].items()] + [""]
    return "\n".join(lines)


def _compile_word(results: dict) -> str:
    c = results.get("compile")
    if not c or not c.get("enabled"):
        return "off (eager)"
    return f"torch.compile of the model and the loss, backend `{c['backend']}`"


def targets(results: dict) -> list[list[str]]:
    rows = []
    pk, pc = results.get("packing", {}), results.get("packer_comparison", {})
    at = pk.get("at_2048")
    if at and results["config"]["data"] == "alpaca":
        rows.append(["BFD fill rate >= 99% (Alpaca-like, max_length 2,048)",
                     _pct(at["fill_rate"]), "met" if at["fill_rate"] >= 0.99 else "NOT met"])
    ours = pc.get("ours")
    for key, label in (("trl", "default map batches"), ("trl_one_batch", "one map batch")):
        trl = pc.get(key, {})
        if ours and "seconds" in trl:
            fast = ours["seconds"] <= trl["seconds"]
            full = ours["fill_rate"] >= trl["fill_rate"] - 1e-12
            rows.append([f"our packer >= TRL bfd ({label}) in speed and fill rate",
                         f"{ours['seconds']:.2f} s vs {trl['seconds']:.2f} s; "
                         f"{_pct(ours['fill_rate'])} vs {_pct(trl['fill_rate'])}",
                         "met" if fast and full else "NOT met"])
    rows.append(["our collators >= the library collators they mirror",
                 "see the micro-benchmarks (pytest bench/test_micro.py)", "not in this run"])
    packed = results["strategies"].get("packed", {})
    if results["device"]["kind"] == "cuda" and "fraction_of_ideal" in packed:
        f = packed["fraction_of_ideal"]
        rows.append(["CUDA: packing >= 0.9 of the ideal speed-up over dynamic padding",
                     _pct(f), "met" if f >= 0.9 else "NOT met"])
    else:
        rows.append(["CUDA: packing >= 0.9 of the ideal speed-up over dynamic padding",
                     _pct(packed.get("fraction_of_ideal")) + " on this CPU",
                     "not applicable (not a GPU run)"])
    return rows


def write_report(results: dict, out_dir: str | Path, name: str, *, plot: bool = True) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md"}
    if plot:
        paths["png"] = write_plot(results, out / f"{name}.png")
    paths["json"].write_text(json.dumps(results, indent=1, default=str) + "\n")
    paths["markdown"].write_text(markdown(results, paths["png"].name if plot else None) + "\n")
    return paths
