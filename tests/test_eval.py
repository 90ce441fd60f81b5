"""Post-SFT evaluation (issue #7): toy tasks, collator variants, lm-eval offline, checkpoints."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from sft_conformance.assets import load_tokenizer, tiny_model
from sft_conformance.cli import main
from sft_conformance.evaluation import lmeval
from sft_conformance.evaluation import tasks as toy
from sft_conformance.evaluation import variants as V
from sft_conformance.reference import IGNORE_INDEX, build_example, per_token_nll

HELLO = toy.conversation({"content": "hello", "answer": "olleh"})


def test_no_network_at_run_time(monkeypatch, tmp_path):
    """The eval's pieces (tokenizers, tiny model, task files, lm-eval tasks) never open a
    connection: every socket connect fails here, and they still build."""
    import socket

    from sft_conformance.assets import load_tokenizer, tiny_model

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access at run time: connect{args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in ("chatml", "seed001"):
        tok = load_tokenizer(name)
        assert tiny_model(tok).config.vocab_size >= len(tok)
    for task in toy.TASKS:
        assert toy.read_test_file(task)


def test_shipped_test_sets_are_current_and_held_out():
    for task in toy.TASKS:
        shipped = toy.read_test_file(task)
        assert shipped == toy.test_set(task)
        assert len({it["content"] for it in shipped}) == len(shipped) == toy.TEST_SIZE
        held_out = {it["content"] for it in shipped}
        assert not held_out & {it["content"] for it in toy.train_pool(task, 2000)}
    assert toy.test_set("reverse")[0]["answer"] == toy.test_set("reverse")[0]["content"][::-1]
    s = toy.test_set("sums")[0]
    assert int(s["answer"]) == sum(map(int, s["content"].split("+")))


@pytest.mark.parametrize("name, expected", [
    ("correct", "<hello>[o][l][l][e][h][#]"),
    ("no_prompt_mask", "[<][h][e][l][l][o][>][o][l][l][e][h][#]"),
    ("mask_late", "<hello>o[l][l][e][h][#]"),
    ("mask_early", "<hello[>][o][l][l][e][h][#]"),
    ("pad_eq_eos", "<hello>[o][l][l][e][h]#"),
    ("per_sequence", "<hello>[o][l][l][e][h][#]"),
])
def test_variant_trained_tokens(name, expected):
    v = V.VARIANTS[name]
    tok = load_tokenizer("seed001", pad_equals_eos=v.pad_equals_eos)
    assert V.trained_tokens(v, build_example(HELLO, tok), tok) == expected


def test_per_sequence_loss_is_mean_of_sequence_means():
    tok = load_tokenizer("seed001")
    convs = [HELLO, toy.conversation({"content": "3+4+5", "answer": "12"})]
    examples = [build_example(c, tok) for c in convs]
    batch = V.VARIANTS["per_sequence"].batch(examples, tok.pad_token_id)
    logits = torch.randn(*batch["input_ids"].shape, len(tok), generator=torch.Generator()
                         .manual_seed(0))
    nll = per_token_nll(logits, batch["labels"])
    mask = batch["labels"][:, 1:] != IGNORE_INDEX
    means = [float(nll[b][mask[b]].mean()) for b in range(2)]
    assert float(V.per_sequence_loss(logits, batch["labels"])) == pytest.approx(sum(means) / 2)
    token_mean = float(nll[mask].mean())
    assert float(V.token_mean_loss(logits, batch["labels"])) == pytest.approx(token_mean)
    assert abs(token_mean - sum(means) / 2) > 1e-6  # lengths differ, so the two differ


def test_pad_eq_eos_masks_every_end_token_by_value():
    v = V.VARIANTS["pad_eq_eos"]
    tok = load_tokenizer("seed001", pad_equals_eos=True)
    examples = [build_example(HELLO, tok),
                build_example(toy.conversation({"content": "abcd", "answer": "dcba"}), tok)]
    batch = v.batch(examples, tok.pad_token_id)
    eos = tok.eos_token_id
    assert not ((batch["input_ids"] == eos) & (batch["labels"] != IGNORE_INDEX)).any()
    correct = V.VARIANTS["correct"].batch(examples, tok.pad_token_id)
    assert ((correct["labels"] == eos).sum(dim=1) == 1).all()  # the reference trains it


def test_data_files_resolved_against_task_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tm = lmeval.task_manager()
    assert set(lmeval.TOY_TASKS + lmeval.TOY_LL_TASKS) <= set(tm.all_tasks)
    (spec,) = lmeval.resolve_tasks(["sftc_reverse"], tm)
    path = spec["dataset_kwargs"]["data_files"]["test"]
    assert os.path.isabs(path) and os.path.exists(path)
    assert path == str(toy.test_file("reverse"))


def test_loglikelihood_keeps_the_task_split_chatml():
    """Stock lm-eval moves the trailing newline of ``...assistant\\n`` into the continuation:
    with a tokenizer where the newline is its own token the (untrained) newline is scored; with
    the bundled BPE, which merges ``assistant\\n``, the model is fed an ``assistant`` token it
    never saw there. SFTHFLM scores the answer after the prompt exactly as training saw it."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    tok = load_tokenizer("chatml")
    model = tiny_model(tok, hidden_size=32, num_layers=1)
    context = tok.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False,
                                      add_generation_prompt=True)
    assert context.endswith("assistant\n")
    ours = lmeval.make_lm(model, tok, batch_size=1)
    stock = HFLM(pretrained=model, tokenizer=tok, batch_size=1, max_length=2048)
    full = tok(context + "olleh", add_special_tokens=False)["input_ids"]
    prompt = tok(context, add_special_tokens=False)["input_ids"]
    answer_ids = full[len(prompt):]
    ctx_ours, cont_ours = ours._encode_pair(context, "olleh")
    ctx_stock, cont_stock = stock._encode_pair(context, "olleh")
    assert ctx_ours == prompt and cont_ours == answer_ids
    assert ctx_stock != prompt  # the split moved: the last prompt token changed
    with torch.no_grad():
        logp = model(torch.tensor([full])).logits.log_softmax(-1)[0]
    by_hand = sum(float(logp[t - 1, full[t]]) for t in range(len(prompt), len(full)))
    req = Instance("loglikelihood", {}, (context, "olleh"), 0)
    (ll_ours, _), = ours.loglikelihood([req], disable_tqdm=True)
    (ll_stock, _), = stock.loglikelihood([req], disable_tqdm=True)
    assert ll_ours == pytest.approx(by_hand, abs=1e-4)
    assert abs(ll_stock - ll_ours) > 1e-3


def test_smoke_ablation_through_lm_eval(tmp_path):
    """Train briefly, evaluate through lm-eval; metrics present, agreement, ordering."""
    out = tmp_path / "eval"
    rc = main(["eval", "--preset", "smoke", "--out", str(out), "--json",
               str(tmp_path / "r.json")])
    assert rc == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert (out / "ablation-smoke.md").exists() and (out / "ablation-smoke.png").exists()
    for run in data["runs"]:
        lm = run["lm_eval"]["reverse"]
        assert {"exact_match", "stop", "acc", "perplexity"} <= set(lm)
        assert lm["exact_match"] == pytest.approx(run["curve"][-1]["reverse"]["exact_match"])
        assert run["agreement"]["reverse"]["all_agree"]
    summ = data["summary"]
    assert summ["agreement"]["all_agree"] and summ["ordering_ok"]
    at = summ["at_budget"]
    assert at["correct"]["reverse"]["exact_match"]["mean"] > \
        at["no_prompt_mask"]["reverse"]["exact_match"]["mean"]
    assert at["correct"]["reverse"]["stop"]["mean"] > 0.9
    assert at["pad_eq_eos"]["reverse"]["stop"]["mean"] < 0.1  # pad == eos: rarely stops
    assert "agree sample for sample" in (out / "ablation-smoke.md").read_text()


def _save(model, tok, path):
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_checkpoints_before_after_deltas(tmp_path, monkeypatch, one_thread):
    from sft_conformance.evaluation.train import TrainConfig, train_run

    tok = load_tokenizer("seed001")
    cfg = TrainConfig(steps=100, eval_steps=(100,), eval_size=16)
    trained = train_run(V.VARIANTS["correct"], 0, cfg)
    before = _save(tiny_model(tok, seed=0, **cfg.model_kwargs()), tok, tmp_path / "before")
    after = _save(trained.model, trained.tokenizer, tmp_path / "after")
    # a user's own task folder with a relative data file, run from another directory
    user = tmp_path / "user_tasks"
    user.mkdir()
    shutil.copy(toy.test_file("sums"), user / "data.jsonl")
    text = (toy.TASK_DIR / "sftc_sums.yaml").read_text()
    (user / "my_sums.yaml").write_text(
        text.replace("task: sftc_sums", "task: my_sums").replace("sums_test.jsonl",
                                                                 "data.jsonl")
        .replace("tag: sftc_toy\n", ""))
    monkeypatch.chdir(tmp_path)
    rc = main(["eval", "--before", before, "--after", after, "--tasks",
               "sftc_reverse,sftc_reverse_ll,my_sums", "--include-path", str(user),
               "--limit", "32", "--threads", "1", "--json", str(tmp_path / "d.json"), "--markdown",
               str(tmp_path / "d.md")])
    assert rc == 0
    data = json.loads((tmp_path / "d.json").read_text())
    d = data["deltas"]
    assert d["sftc_reverse"]["exact_match"]["before"] == 0.0
    assert d["sftc_reverse"]["exact_match"]["delta"] > 0.3
    assert d["sftc_reverse_ll"]["acc"]["delta"] > 0.3
    assert "my_sums" in d and "stop" in d["sftc_reverse"]
    assert "| sftc_reverse" in (tmp_path / "d.md").read_text()
    rc = main(["eval", "--model", after, "--tasks", "sftc_reverse", "--limit", "16",
               "--threads", "1",
               "--json", str(tmp_path / "m.json")])
    assert rc == 0
    m = json.loads((tmp_path / "m.json").read_text())["result"]
    assert m["results"]["sftc_reverse"]["exact_match"] > 0.3 and m["apply_chat_template"]


@pytest.mark.parametrize("argv", [
    ["eval", "--before", "x"],
    ["eval", "--model", "/nonexistent/ckpt"],
    ["eval", "--tasks", "sftc_reverse"],
    ["eval", "--variants", "nope"],
    ["eval", "--preset", "smoke", "--budget", "1000"],
])
def test_usage_errors(argv, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2


@pytest.mark.slow
def test_full_ablation_ordering_over_seeds(tmp_path):
    """The ordering over seeds (mean at the budget), every variant: the default preset."""
    rc = main(["eval", "--preset", "default", "--out", str(tmp_path), "--strict"])
    assert rc == 0
    data = json.loads((tmp_path / "ablation-default.json").read_text())
    assert data["summary"]["ordering_ok"] and data["summary"]["agreement"]["all_agree"]


# -- the packing and loss-normalization variants (issue 14) ------------------------------------

def _mixed_examples(tok, n=24):
    items = toy.train_pool("reverse", n // 2) + toy.train_pool("sums", n // 2)
    return [build_example(toy.conversation(it), tok, index=i) for i, it in enumerate(items)]


def _step(variant, examples, tok, seed=0):
    model = tiny_model(tok, seed=seed, hidden_size=32, num_layers=1, max_positions=64)
    model.train()
    loss = variant.train_step(model, examples, tok.pad_token_id)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["packed", "left_pad_no_positions"])
def test_variants_that_train_exactly_like_correct(name):
    """The reference packer, and left padding with shifted positions on a rotary model, give
    the padded reference's loss and gradient up to float rounding (what the report states)."""
    tok = load_tokenizer("seed001")
    examples = _mixed_examples(tok)
    want_loss, want = _step(V.VARIANTS["correct"], examples, tok)
    loss, got = _step(V.VARIANTS[name], examples, tok)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["pack_cross_attention", "pack_cross_target",
                                  "pack_per_sequence", "micro_batch_means", "per_sequence"])
def test_bug_variants_change_the_gradient(name):
    tok = load_tokenizer("seed001")
    examples = _mixed_examples(tok)
    _, want = _step(V.VARIANTS["correct"], examples, tok)
    _, got = _step(V.VARIANTS[name], examples, tok)
    assert max(float((got[k] - want[k]).abs().max()) for k in want) > 1e-4


def test_accumulation_with_the_step_count_is_the_full_batch():
    """The micro-batch split alone changes nothing: only dividing each micro-batch by its own
    count does (so `micro_batch_means` is compared with `correct`)."""
    from dataclasses import replace

    tok = load_tokenizer("seed001")
    examples = _mixed_examples(tok)
    split = replace(V.VARIANTS["correct"], name="split", micro_batches=V.MICRO_BATCHES)
    groups = V.length_grouped(examples, V.MICRO_BATCHES)
    assert len(groups) == V.MICRO_BATCHES and sorted(len(e) for g in groups for e in g) == \
        sorted(len(e) for e in examples)
    assert [max(len(e) for e in g) for g in groups] == sorted(max(len(e) for e in g)
                                                              for g in groups)
    want_loss, want = _step(V.VARIANTS["correct"], examples, tok)
    loss, got = _step(split, examples, tok)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6)


def test_packed_layouts():
    tok = load_tokenizer("seed001")
    examples = _mixed_examples(tok)
    packed = V.VARIANTS["packed"].batch(examples, tok.pad_token_id)
    assert packed["input_ids"].shape[1] <= V.PACK_LENGTH
    assert packed["input_ids"].shape[0] < len(examples)
    assert int(packed["attention_mask"].sum()) == sum(len(e) for e in examples)
    cross = V.VARIANTS["pack_cross_target"].batch(examples, tok.pad_token_id)
    starts = (packed["position_ids"] == 0) & (packed["attention_mask"] == 1)
    starts[:, 0] = False
    assert (packed["labels"][starts] == IGNORE_INDEX).all()
    assert (cross["labels"][starts] == cross["input_ids"][starts]).all()
    assert torch.equal(cross["labels"][~starts], packed["labels"][~starts])
    left = V.VARIANTS["left_pad_no_positions"].batch(examples, tok.pad_token_id)
    assert (left["attention_mask"][:, -1] == 1).all()  # left padded
    assert torch.equal(left["position_ids"][0], torch.arange(left["input_ids"].shape[1]))


@pytest.mark.parametrize("name", ["pack_cross_attention", "pack_cross_target",
                                  "pack_per_sequence", "micro_batch_means",
                                  "left_pad_no_positions"])
def test_the_suite_catches_each_new_variant_with_the_check_it_violates(name):
    """Bug -> check: the variant run as a target fails the check the report names."""
    from sft_conformance.runner import check_target

    v = V.VARIANTS[name]
    run = check_target(V.target_spec(name), profile="ci", only=[v.violates], shrink=False)
    assert run.error is None
    (result,) = run.results
    assert result.status == "failed", (name, result.status, result.message)


def test_the_reference_packer_variant_passes_s6_and_s8():
    from sft_conformance.runner import check_target

    run = check_target(V.target_spec("packed"), profile="ci", only=["S6", "S8"])
    assert [r.status for r in run.results] == ["passed", "passed"]
    assert all(r.judged >= 5 for r in run.results)


def test_paired_difference_against_the_baseline():
    from sft_conformance.evaluation import report

    def run(v, seed, em):
        return {"variant": v, "seed": seed,
                "curve": [{"step": 100, "t": {"exact_match": em, "stop": 1.0}}]}

    runs = [run("correct", s, e) for s, e in enumerate((0.5, 0.6, 0.4, 0.5))]
    runs += [run("bug", s, e) for s, e in enumerate((0.2, 0.3, 0.1, 0.25))]
    runs += [run("same", s, e) for s, e in enumerate((0.55, 0.5, 0.45, 0.45))]
    summ = report.summarize(runs, ["t"], 100, baselines={"bug": "correct", "same": "correct",
                                                         "correct": "correct"})
    bug = summ["versus"]["bug"]["t"]["exact_match"]
    assert bug["mean"] == pytest.approx(-0.2875) and bug["verdict"] == "worse"
    assert summ["versus"]["same"]["t"]["exact_match"]["verdict"] == "within seed noise"
    assert "correct" not in summ["versus"]


def test_packing_ablation_smoke_and_rerender(tmp_path):
    """A few steps of the packing preset, then the report rewritten at another budget with
    the suite's verdicts filled in, without training again."""
    out = tmp_path / "eval"
    rc = main(["eval", "--preset", "packing", "--variants", "correct,packed,micro_batch_means",
               "--seeds", "0,1", "--steps", "6", "--eval-steps", "3,6", "--budget", "3",
               "--eval-size", "8", "--no-lm-eval", "--no-checks", "--out", str(out)])
    assert rc == 0
    md = (out / "ablation-packing.md").read_text()
    assert "Bug → check that catches it → what it costs" in md
    assert "| micro_batch_means | S7" in md and "not run" in md
    notes = tmp_path / "notes.md"
    notes.write_text("A finding confirmed by hand.\n")
    rc = main(["eval", "--from-json", str(out / "ablation-packing.json"), "--budget", "6",
               "--notes", str(notes), "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "ablation-packing.json").read_text())
    assert data["budget"] == 6 and data["rerendered"]
    by_name = {v["name"]: v for v in data["variants"]}
    assert "S7" in by_name["micro_batch_means"]["suite"]["failed"]
    assert by_name["packed"]["suite"]["failed"] == []
    md = (out / "ablation-packing.md").read_text()
    assert "A finding confirmed by hand." in md and "EM @ 6" in md
    assert main(["eval", "--from-json", str(out / "ablation-packing.json"), "--budget", "7",
                 "--no-checks"]) == 2
