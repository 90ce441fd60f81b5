"""The benchmark's smoke preset (CPU): every metric is produced and the loss parity holds.

Speed is not asserted: the numbers of a shared CPU say nothing about a GPU.
"""

from __future__ import annotations

import copy
import json

import pytest

from sft_conformance.bench.presets import get_preset
from sft_conformance.bench.strategies import STRATEGIES, epoch_counts, make_batches

METRICS = ("real_tokens_per_s", "trained_tokens_per_s", "padding_fraction", "fill_rate",
           "step_fwd_bwd_s", "step_optimizer_s", "peak_allocated_mb", "peak_reserved_mb",
           "mfu_vs_peak", "mfu_vs_matmul_ceiling", "flops_per_epoch", "parity",
           "speedup_vs_dynamic", "fraction_of_ideal", "attention_backend", "epoch_s",
           "loss_check", "busy", "step_peak_mb", "largest_step")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from sft_conformance.bench.report import write_report
    from sft_conformance.bench.runner import run_benchmark

    results = run_benchmark(get_preset("smoke"), progress=False, command="pytest smoke")
    out = tmp_path_factory.mktemp("bench")
    paths = write_report(results, out, "smoke-cpu")
    return results, paths


def test_every_strategy_reports_every_metric(smoke):
    results, _ = smoke
    assert list(results["strategies"]) == list(STRATEGIES)
    for name, entry in results["strategies"].items():
        assert "error" not in entry, (name, entry.get("error"))
        missing = [m for m in METRICS if m not in entry]
        assert not missing, (name, missing)
        assert entry["real_tokens_per_s"]["median"] > 0
        assert entry["real_tokens_per_s"]["n"] == results["config"]["repeats"]
        assert entry["trained_tokens"] < entry["real_tokens"] <= entry["slots"]
        assert entry["mfu_vs_matmul_ceiling"] > 0
        assert entry["mfu_vs_peak"] is None  # a CPU has no published dense bf16 peak
    assert results["device"]["kind"] == "cpu"
    stats = results["data"]["raw_lengths"]
    assert {"mean", "median", "p90", "p99", "max", "frac_over_cap"} <= set(stats)
    assert results["summary"]["ideal_speedup"] >= 1


def test_smoke_runs_the_chunked_loss_foreach_adamw_and_reports_busy_as_not_measured(smoke):
    """Issue 25 on a CPU: the step's loss is the chunked one (several chunks a step) and agrees
    with the reference loss; AdamW is the foreach one; the GPU-busy fraction is not measured
    (None, never a number) and nothing is called CPU-bound; the flattened layouts' attention
    was chosen by the selection logic."""
    results, paths = smoke
    assert results["loss"]["kind"] == "chunked" and results["loss"]["chunk_tokens"] == 128
    assert results["optimizer"] == "AdamW (foreach=True)"
    assert results["compile"]["enabled"] is False
    assert results["attention"]["requested"] == "auto"
    assert results["attention"]["flattened"] == "sdpa+block_causal_4d"
    assert results["summary"]["all_loss_checks_passed"] and results["summary"]["cpu_bound"] == []
    for name, e in results["strategies"].items():
        assert e["largest_step"]["slots"] > 128, name  # more than one chunk per step
        assert e["loss_check"]["passed"] and e["loss_check"]["rel_diff"] <= 1e-5, name
        assert e["busy"]["fraction"] is None and "not measured" in e["busy"]["label"]
        assert e["step_peak_mb"] is None  # no allocator statistics on a CPU
    text = paths["markdown"].read_text()
    for needle in ("Loss: `chunked`", "AdamW (foreach=True)", "## Memory per layout",
                   "against the reference loss", "GPU-busy fraction: **not measured**"):
        assert needle in text, needle


def test_loss_parity_and_isolation(smoke):
    results, _ = smoke
    s = results["summary"]
    assert s["all_parity_passed"], {k: v["parity"] for k, v in results["strategies"].items()}
    for name, entry in results["strategies"].items():
        assert entry["parity"]["rel_diff_vs_padded"] <= 1e-4, name
    for name in ("padding_free", "packed"):
        iso = results["strategies"][name]["isolation"]
        assert iso["passed"] and iso["documents_in_row"] >= 2, iso
        assert iso["distinguishes_leak"], iso  # a leak would have been visible
    same = {e["trained_tokens"] for e in results["strategies"].values()}
    assert len(same) == 1  # the same examples went through every strategy


def test_report_files(smoke):
    results, paths = smoke
    text = paths["markdown"].read_text()
    assert "CPU" in text.splitlines()[0] and "CPU run" in text
    for needle in ("Command:", "Versions:", "length distribution", "FLOPs per training step",
                   "ideal", "Loss parity"):
        assert needle in text, needle
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["json"].read_text())["summary"]["all_parity_passed"]


def test_strategies_see_the_same_examples(chatml):
    from sft_conformance.bench.data import PROFILES, generate_conversations, tokenize

    convs = generate_conversations(PROFILES["alpaca"], 10, chatml, seed=3)
    examples = tokenize(convs, chatml, 128).examples
    totals = {}
    for s in STRATEGIES:
        batches = make_batches(s, examples, pad_token_id=chatml.pad_token_id, max_length=128,
                               batch_size=4)
        lengths = sorted(n for b in batches for n in b["meta"]["doc_lengths"])
        totals[s] = (lengths, epoch_counts(batches)["trained_tokens"])
    assert len({repr(v) for v in totals.values()}) == 1


def _gate(tmp_path, current, baseline, *extra):
    from sft_conformance.cli import main

    cur, base = tmp_path / "current.json", tmp_path / "baseline.json"
    cur.write_text(json.dumps(current))
    base.write_text(json.dumps(baseline))
    return main(["bench", "--results", str(cur), "--compare", str(base), *extra])


def _fake_results(tps: dict, device="Some CPU") -> dict:
    return {"device": {"kind": "cpu", "name": device},
            "strategies": {s: {"real_tokens_per_s": {"median": v}} for s, v in tps.items()},
            "summary": {"all_parity_passed": True}}


def test_regression_gate(tmp_path, capsys):
    results = _fake_results({"dynamic": 1000.0, "packed": 2000.0})
    assert _gate(tmp_path, results, results, "--fail-above", "5") == 0
    faster = copy.deepcopy(results)
    faster["strategies"]["packed"]["real_tokens_per_s"]["median"] *= 1.5
    assert _gate(tmp_path, results, faster, "--fail-above", "10") == 1
    assert "REGRESSION" in capsys.readouterr().out
    other = copy.deepcopy(results)
    other["device"] = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3"}
    assert _gate(tmp_path, results, other, "--fail-above", "10") == 2
    assert "same device" in capsys.readouterr().err


def test_cli_user_model_config_and_jsonl(tmp_path, capsys):
    """``--model CONFIG --data FILE.jsonl --tokenizer``: the path a user takes, end to end."""
    from sft_conformance.assets import load_tokenizer
    from sft_conformance.bench.data import PROFILES, generate_conversations
    from sft_conformance.cli import main

    tok = load_tokenizer("chatml")
    config = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "vocab_size": len(tok), "max_position_embeddings": 512}
    (tmp_path / "config.json").write_text(json.dumps(config))
    convs = generate_conversations(PROFILES["alpaca"], 8, tok, seed=5)
    with open(tmp_path / "chats.jsonl", "w") as f:
        for i, c in enumerate(convs):
            f.write(json.dumps({"messages": c} if i % 2 else c) + "\n")
    code = main(["bench", "--model", str(tmp_path / "config.json"), "--data",
                 str(tmp_path / "chats.jsonl"), "--tokenizer", "chatml", "--max-length", "128",
                 "--batch-size", "4", "--repeats", "1", "--warmup-steps", "0", "--threads", "1",
                 "--strategies", "dynamic,packed", "--out", str(tmp_path), "--name", "user",
                 "--no-progress", "--no-plot", "--loss", "reference"])
    assert code == 0, capsys.readouterr()
    results = json.loads((tmp_path / "user.json").read_text())
    assert list(results["strategies"]) == ["dynamic", "packed"]
    assert results["data"]["raw_lengths"]["n"] == 8
    assert results["model"]["layers"] == 1 and "random init" in results["model"]["source"]
    assert results["loss"]["kind"] == "reference"
    assert results["summary"]["all_loss_checks_passed"]
    assert main(["bench", "--model", str(tmp_path / "missing"), "--no-progress",
                 "--out", str(tmp_path)]) == 2


def test_flatten_rows_matches_reference_packing(chatml):
    import torch

    from sft_conformance.bench.data import PROFILES, generate_conversations, tokenize
    from sft_conformance.bench.strategies import flatten_rows
    from sft_conformance.reference.packing import pack_examples

    examples = tokenize(generate_conversations(PROFILES["alpaca"], 12, chatml, seed=1), chatml,
                        256).examples
    ref = pack_examples(examples, 256, chatml.pad_token_id)
    ours = flatten_rows([[examples[i] for i in r] for r in ref["rows"]], chatml.pad_token_id)
    for key in ("input_ids", "labels", "position_ids", "attention_mask", "cu_seqlens"):
        assert torch.equal(ours[key], ref[key]), key
    assert torch.equal(ours["document_ids"] >= 0, ref["document_ids"] >= 0)


def test_position_ids_only_feed_keeps_documents_apart(chatml, tiny):
    """The flash-attention feed of a packed row (no mask, restarting position ids; explicit
    varlen arguments too, which sdpa ignores) isolates documents; checked here on sdpa/CPU, and
    against transformers' flash dispatch in test_bench_gpu_paths.py.

    Without ``use_cache=False`` transformers 5.23 creates a KV cache, skips its packed-sequence
    detection and the row leaks across documents: this test failed before the fix."""
    from sft_conformance.bench.data import PROFILES, generate_conversations, tokenize
    from sft_conformance.bench.models import forward_fn
    from sft_conformance.bench.runner import isolation_check

    examples = tokenize(generate_conversations(PROFILES["alpaca"], 6, chatml, seed=2), chatml,
                        256).examples
    batch = make_batches("padding_free", examples, pad_token_id=chatml.pad_token_id,
                         max_length=256, batch_size=6)[0]
    result = isolation_check(tiny, batch, forward_fn("flash_attention_2"), forward_fn("sdpa"),
                             atol=1e-3)
    assert result["passed"] and result["distinguishes_leak"], result


def test_out_of_memory_in_every_padded_layout_leaves_parity_unjudged(smoke, tmp_path, capsys):
    """A run whose padded layouts all failed (out of memory at a large batch, as on an H100 at
    32 examples per step) cannot judge loss parity: the report says "not judged", not FAIL, the
    error is cut to its first sentence in the table, and the exit status is not a pass."""
    from sft_conformance.bench.report import strategy_table
    from sft_conformance.bench.runner import _summarize
    from sft_conformance.cli import main

    results = copy.deepcopy(smoke[0])
    oom = ("out of memory: CUDA out of memory. Tried to allocate 13.69 GiB. GPU 0 has a total "
           "capacity of 79.18 GiB of which 12.55 GiB is free.")
    for s in ("fixed", "dynamic", "bucketed"):
        results["strategies"][s] = {"strategy": s, "error": oom}
    for e in results["strategies"].values():
        e.get("parity", {}).pop("rel_diff_vs_padded", None)
        e.get("parity", {}).pop("passed", None)
        e.pop("speedup_vs_dynamic", None)
    summary = _summarize(results["strategies"], results["dtype"])
    assert summary["reference_for_parity"] is None and summary["all_parity_passed"] is None
    table = strategy_table(results)
    assert "not judged (no padded run)" in table and "FAIL" not in table
    assert "out of memory: CUDA out of memory |" in table.replace("  ", " ").replace("  ", " ")
    assert "Tried to allocate" not in table and "n/a (no dynamic run)" in table

    stored = tmp_path / "big-batch.json"
    stored.write_text(json.dumps(results))
    assert main(["bench", "--results", str(stored), "--render", "--out", str(tmp_path / "r"),
                 "--no-plot"]) == 1
    out = capsys.readouterr().out
    assert "loss parity: not judged (no padded strategy ran)" in out
    text = (tmp_path / "r" / "big-batch.md").read_text()
    assert "Loss parity: **not judged (no padded strategy ran)**" in text
    assert "Tried to allocate 13.69 GiB" in text  # the whole message, in the Errors section


def test_render_recomputes_the_report_of_stored_results(smoke, tmp_path, capsys):
    """`--results FILE --render` writes the report of a stored run (a GPU machine's JSON)."""
    from sft_conformance.cli import main

    results, paths = smoke
    assert main(["bench", "--results", str(paths["json"]), "--render", "--name", "again",
                 "--out", str(tmp_path), "--no-plot"]) == 0
    text = (tmp_path / "again.md").read_text()
    assert "Loss parity: **ok**" in text
    for s in results["strategies"]:
        assert f"| {s}" in text


def test_micro_report_names_the_gpu_and_the_commit_of_a_copied_tree(monkeypatch):
    """The micro-benchmark summary of a CUDA run names the GPU; a tree copied without .git
    (pytest-benchmark writes "unversioned") takes its commit from SFT_CONFORMANCE_GIT_COMMIT."""
    from sft_conformance.bench.micro_report import micro_markdown

    bench = {"group": "loss", "name": "test_loss[ours]", "stats": {"median": 0.017, "min": 0.017,
                                                                   "rounds": 5},
             "extra_info": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3",
                            "peak_allocated_mb": 8640.0}}
    data = {"machine_info": {"python_version": "3.12.3"}, "commit_info": {"id": "unversioned"},
            "benchmarks": [bench]}
    monkeypatch.setenv("SFT_CONFORMANCE_GIT_COMMIT", "725ac48")
    text = micro_markdown(data)
    assert text.startswith("# Micro-benchmarks (CUDA)")
    assert "GPU NVIDIA H100 80GB HBM3" in text and "Commit: 725ac48" in text
    assert "peak_allocated_mb=8640.0000" in text


def test_git_commit_can_be_named_where_the_tree_has_no_git(monkeypatch):
    from sft_conformance.bench.environment import git_commit

    monkeypatch.setenv("SFT_CONFORMANCE_GIT_COMMIT", "725ac48")
    assert git_commit() == "725ac48"
    monkeypatch.delenv("SFT_CONFORMANCE_GIT_COMMIT")
    assert git_commit() != "725ac48"
