"""The first hour of a new user (issue 22): each setup mistake is caught before any work, as one
line naming the input and the fix, exit code 2; a file target imports its siblings; the snapshot
fixture replays what was recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sft_conformance.cli import main

CHEAP = ["--profile", "ci", "--check", "S2"]

ADAPTERS = textwrap.dedent('''
    import torch

    from sft_conformance.reference import Collator


    class NoMaxLength:
        name = "no-max-length"

        def collate(self, conversations, tokenizer):
            return Collator()(conversations, tokenizer, 512)


    class Lists:
        name = "lists"

        def collate(self, conversations, tokenizer, max_length):
            batch = Collator()(conversations, tokenizer, max_length)
            return {k: v.tolist() for k, v in batch.items()}


    class FloatLabels:
        name = "float-labels"

        def collate(self, conversations, tokenizer, max_length):
            batch = Collator()(conversations, tokenizer, max_length)
            return dict(batch, labels=batch["labels"].float())


    class RefusesAll:
        name = "refuses-all"

        def collate(self, conversations, tokenizer, max_length):
            raise ValueError("not today")
''')


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def adapters(tmp_path):
    (tmp_path / "bad_adapters.py").write_text(ADAPTERS)
    return tmp_path / "bad_adapters.py"


# -- a file target imports its siblings, as `python file.py` does ------------------------------

SIBLING = textwrap.dedent('''
    from sft_conformance.reference import Collator


    def build(conversations, tokenizer, max_length):
        return Collator()(conversations, tokenizer, max_length)
''')

SIBLING_ADAPTER = textwrap.dedent('''
    from my_collator_22 import build


    class MyTarget:
        name = "sibling"

        def collate(self, conversations, tokenizer, max_length):
            return build(conversations, tokenizer, max_length)
''')


def test_file_target_imports_a_sibling_module(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "my_collator_22.py").write_text(SIBLING)
    (folder / "sft_adapter_22.py").write_text(SIBLING_ADAPTER)
    monkeypatch.chdir(tmp_path)  # not the adapter's folder
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_collator_22", raising=False)
    assert main(["check", "proj/sft_adapter_22.py:MyTarget", *CHEAP]) == 0, \
        capsys.readouterr()


def test_file_target_with_a_sibling_under_pytest(tmp_path):
    (tmp_path / "my_collator_22.py").write_text(SIBLING)
    (tmp_path / "sft_adapter_22.py").write_text(SIBLING_ADAPTER)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "--sft-target", "sft_adapter_22.py:MyTarget",
                           "--sft-check", "S2", "--sft-profile", "ci", "-q"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


# -- missing extras: exit 2 before any work ----------------------------------------------------

def _without(monkeypatch, *modules):
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name.split(".")[0] in modules:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_bench_without_matplotlib_exits_2_before_running(tmp_path, monkeypatch, capsys):
    from sft_conformance.bench import runner

    _without(monkeypatch, "matplotlib")
    monkeypatch.setattr(runner, "run_benchmark", lambda *a, **k: pytest.fail("bench ran"))
    assert main(["bench", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "matplotlib", "pip install 'sft-conformance[bench]'", "--no-plot")
    assert not list(tmp_path.iterdir())


def test_eval_without_lm_eval_exits_2_before_training(tmp_path, monkeypatch, capsys):
    from sft_conformance.evaluation import ablation

    _without(monkeypatch, "lm_eval")
    monkeypatch.setattr(ablation, "run", lambda *a, **k: pytest.fail("the ablation ran"))
    assert main(["eval", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "lm_eval", "pip install 'sft-conformance[eval]'", "--no-lm-eval")
    assert main(["eval", "--model", str(tmp_path), "--tasks", "sftc_reverse"]) == 2
    one_line_error(capsys, "lm_eval", "sft-conformance[eval]")


# -- a tokenizer folder without a chat template ------------------------------------------------

@pytest.fixture
def no_template(tmp_path, chatml):
    import copy

    tok = copy.deepcopy(chatml)
    tok.chat_template = None
    folder = tmp_path / "plain-tokenizer"
    tok.save_pretrained(folder)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


def test_check_without_chat_template_exits_2(no_template, capsys):
    assert main(["check", "reference", "--tokenizer", str(no_template), *CHEAP]) == 2
    one_line_error(capsys, "has no chat template", str(no_template))


def test_snapshot_without_chat_template_exits_2(no_template, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["snapshot", "reference", "--tokenizer", str(no_template), "--out",
                 str(out)]) == 2
    one_line_error(capsys, "has no chat template")
    assert not out.exists()


def test_report_without_chat_template_exits_2_before_any_row(no_template, tmp_path, capsys):
    assert main(["report", "reference", "--tokenizer", str(no_template), "--out",
                 str(tmp_path / "out")]) == 2
    one_line_error(capsys, "has no chat template")
    assert not (tmp_path / "out").exists()


def test_plugin_without_chat_template_is_a_usage_error(no_template, pytester):
    result = pytester.runpytest("-p", "no:cacheprovider", "--sft-target", "reference",
                                "--sft-tokenizer", str(no_template))
    assert result.ret == 4
    assert "has no chat template" in str(result.stderr)


# -- adapter mistakes are configuration errors, not findings -----------------------------------

@pytest.mark.parametrize("attr, words", [
    ("NoMaxLength", ("collate(conversations, tokenizer)", "max_length")),
    ("Lists", ("is list, expected a torch.Tensor", "malformed batch")),
    ("FloatLabels", ("'labels'", "torch.float32", "malformed batch")),
])
def test_adapter_mistakes_exit_2_in_check_and_snapshot(adapters, tmp_path, attr, words,
                                                       capsys):
    assert main(["check", f"{adapters}:{attr}", *CHEAP]) == 2
    one_line_error(capsys, *words)
    assert main(["snapshot", f"{adapters}:{attr}", "--out", str(tmp_path / "s.json")]) == 2
    one_line_error(capsys, *words)


def test_a_type_error_inside_collate_is_never_a_refusal(tmp_path, capsys):
    (tmp_path / "typo_22.py").write_text(textwrap.dedent('''
        class Typo:
            name = "typo"

            def collate(self, conversations, tokenizer, max_length):
                return tokenizer.apply_chat_template(conversations, max_length)  # wrong call
    '''))
    assert main(["check", f"{tmp_path}/typo_22.py:Typo", *CHEAP]) == 2
    one_line_error(capsys, "TypeError", "not a refusal")


# -- snapshot refusals ---------------------------------------------------------------------------

def test_snapshot_of_a_target_that_refuses_everything(adapters, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["snapshot", f"{adapters}:RefusesAll", "--out", str(out)]) == 2
    one_line_error(capsys, "20 of 20 examples refused", "--allow-refusals", "not today")
    assert not out.exists()
    assert main(["snapshot", f"{adapters}:RefusesAll", "--out", str(out),
                 "--allow-refusals"]) == 0
    assert "20 of 20 examples refused" in capsys.readouterr().out
    assert main(["snapshot", "reference", "--out", str(out)]) == 0
    assert "0 of 20 examples refused" in capsys.readouterr().out


# -- the fixture replays the snapshot ----------------------------------------------------------

CORPUS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}],
]


def test_fixture_replays_a_recorded_corpus(pytester):
    """Recorded with --corpus, another tokenizer and max_length; the fixture is called with the
    target and the path only (pytester runs in its own folder, the relative corpus path is
    resolved from there)."""
    (pytester.path / "data").mkdir()
    (pytester.path / "data/x.jsonl").write_text(
        "".join(json.dumps({"messages": c}) + "\n" for c in CORPUS))
    (pytester.path / "data/other.jsonl").write_text(json.dumps({"messages": CORPUS[0]}) + "\n")
    snaps = pytester.path / "snapshots"
    snaps.mkdir()
    assert main(["snapshot", "reference", "--corpus", "data/x.jsonl", "--tokenizer", "llama3",
                 "--max-length", "256", "--out", "snapshots/masks.json"]) == 0
    pytester.makepyfile(test_gate='''
        def test_masks(sft_snapshot):
            sft_snapshot.assert_match("reference", "snapshots/masks.json")

        def test_other_corpus(sft_snapshot):
            sft_snapshot.assert_match("reference", "snapshots/masks.json",
                                      corpus="data/other.jsonl")
    ''')
    recorded = json.loads((snaps / "masks.json").read_text())
    assert recorded["corpus"] == "data/x.jsonl" and recorded["tokenizer"]["name"] == "llama3"
    pytester.runpytest("-p", "no:cacheprovider", "-k", "test_masks").assert_outcomes(passed=1)
    # another corpus than the recorded one: a clean failure that says why
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "test_other_corpus")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*cannot be compared*different corpora*"])
    assert "Traceback" not in str(result.stdout)
    # a moved label: a clean failure with the diff table
    labels = recorded["examples"][0]["labels"]
    labels[next(i for i, x in enumerate(labels) if x != -100)] = -100
    (snaps / "masks.json").write_text(json.dumps(recorded))
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "test_masks")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the masks changed against*", "*| >> |*newly trained*"])
    assert "Traceback" not in str(result.stdout) and "SnapshotError" not in str(result.stdout)


pytest_plugins = ["pytester"]


def test_version_strings_agree():
    """The specification names the package version it is for; the package says the same."""
    import re
    from pathlib import Path

    import sft_conformance

    root = Path(__file__).resolve().parents[1]
    spec = (root / "docs/specification.md").read_text(encoding="utf-8")
    (for_version,) = re.findall(r"^Specification version \d+, for sft-conformance (\d+\.\d+)\.",
                                spec, re.M)
    (project,) = re.findall(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(),
                            re.M)
    assert project == sft_conformance.__version__
    assert project.startswith(for_version + "."), (project, for_version)


# -- small ones ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["S4", "s4", "end_of_turn_trained", "S4-end_of_turn_trained",
                                  " S4 "])
def test_check_ids_in_every_form(name):
    from sft_conformance.runner import select_checks

    assert [c.id for c in select_checks([name])] == ["S4"]


def test_check_accepts_the_id_pytest_prints(capsys):
    assert main(["check", "reference", "--profile", "ci", "--check",
                 "S4-end_of_turn_trained", "--check", "s2"]) == 0
    out = capsys.readouterr().out
    assert "S4 " in out and "S2 " in out and "S9 " not in out
    assert main(["check", "reference", "--check", "S4-end_of_turn"]) == 2
    one_line_error(capsys, "unknown check(s) S4-end_of_turn", "S4-end_of_turn_trained")


def test_quiet_keeps_the_reason_whole(tmp_path, capsys):
    (tmp_path / "long_22.py").write_text(textwrap.dedent('''
        class Long:
            name = "long"

            def collate(self, conversations, tokenizer, max_length):
                raise KeyError("a reason long enough to be cut at 110 characters by the "
                               "table of the summary, which it must not be with -q: THE END")
    '''))
    assert main(["check", f"{tmp_path}/long_22.py:Long", "-q", *CHEAP]) == 1
    assert "which it must not be with -q: THE END" in capsys.readouterr().out


def test_bench_data_errors_name_file_and_line(tmp_path, capsys):
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "a"}, '
                    '{"role": "assistant", "content": "b"}]}\n\n{"messages": [oops]}\n')
    assert main(["bench", "--data", str(data), "--n-examples", "2", "--no-plot",
                 "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, f"{data}:3: not valid JSON")
    data.write_text('{"messages": [{"role": "user", "content": "a"}]}\n')
    assert main(["bench", "--data", str(data), "--no-plot", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, f"{data}:1:", "no assistant turn")


def test_snapshot_of_a_target_whose_library_is_missing(tmp_path, capsys):
    (tmp_path / "needs_22.py").write_text(textwrap.dedent('''
        class Needs:
            name = "needs"
            requires = ("no_such_library_22",)
            install_hint = "pip install 'sft-conformance[nothing]'"

            def collate(self, conversations, tokenizer, max_length):
                import no_such_library_22  # noqa: F401
    '''))
    assert main(["snapshot", f"{tmp_path}/needs_22.py:Needs", "--out",
                 str(tmp_path / "s.json")]) == 2
    one_line_error(capsys, "needs no_such_library_22 (not installed)",
                   "pip install 'sft-conformance[nothing]'")


# -- the main job's output -------------------------------------------------------------------------

def test_report_writes_outside_the_committed_reports_and_says_where(tmp_path, monkeypatch,
                                                                    capsys):
    from sft_conformance import report

    fake = {"generated": "now", "versions": {}, "profile": "ci", "tokenizer": None,
            "machine": "m", "seconds": 1.0,
            "runs": [{"spec": "reference", "target": "reference", "error": None,
                      "checks": [{"id": "S2", "check": "first_response_token_trained",
                                  "status": "passed", "message": ""}]}]}
    monkeypatch.setattr(report, "run_matrix", lambda *a, **k: fake)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "reference"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "sft-conformance-reports" / "conformance.md"
    assert written.is_file() and not (tmp_path / "reports").exists()
    assert out.strip().splitlines()[-1].startswith(
        "wrote sft-conformance-reports/conformance.md and "), out
    assert "--out reports" in out.strip().splitlines()[-1]
    assert main(["report", "reference", "--out", "reports"]) == 0
    assert (tmp_path / "reports" / "conformance.md").is_file()
    assert "wrote reports/conformance.md" in capsys.readouterr().out


def test_report_help_says_it_runs_the_checks(capsys):
    from sft_conformance.cli import COMMANDS

    assert "rewrite reports/ from stored results" not in COMMANDS["report"]
    assert "run every check" in COMMANDS["report"]
    assert main(["report", "--help"]) == 0
    text = capsys.readouterr().out
    assert "sft-conformance-reports" in text and "--out reports" in text


def test_library_warnings_are_summarised_once_per_row(monkeypatch, capsys):
    """A library that warns on every call (TRL logs through accelerate's logger, transformers
    through its own stderr handler, others with warnings.warn): one line per row and message."""
    import logging
    import warnings

    from sft_conformance import report, runner

    def noisy_check_target(target, spec=None, **kwargs):
        spec = spec or target
        for _ in range(708):
            logging.getLogger("trl.trainer.sft_trainer").warning("[RANK 0] the end token is "
                                                                 "not in the loss mask")
        logging.getLogger("transformers.tokenization_utils_base").warning("slow path")
        warnings.warn("deprecated thing", FutureWarning, stacklevel=1)
        return runner.TargetRun(spec, spec, "chatml", "ci", error="stub")

    monkeypatch.setattr(runner, "check_target", noisy_check_target)
    lines = []
    data = report.run_matrix(["noisy"], progress=lines.append)
    err = capsys.readouterr().err
    assert "RANK 0" not in err and "slow path" not in err and "deprecated" not in err, err
    summary = data["runs"][0]["library_warnings"]
    assert summary[0] == {"library": "trl", "count": 708,
                          "message": "[RANK 0] the end token is not in the loss mask"}
    assert {(w["library"], w["count"]) for w in summary[1:]} >= {("transformers", 1)}
    assert "  trl warned 708 times: [RANK 0] the end token is not in the loss mask" in lines
    md = report.render_markdown(data, "sft-conformance report")
    assert "## Library warnings" in md and "trl warned 708 times" in md


def test_rows_of_libraries_not_installed_fold_into_one_line():
    from sft_conformance import report

    def run(spec, status, message):
        return {"spec": spec, "target": spec, "error": None,
                "checks": [{"id": i, "check": "x", "status": status, "message": message}
                           for i in ("S1", "S2")]}

    hint = "needs litgpt (not installed): pip install litgpt"
    data = {"generated": "now", "versions": {}, "profile": "ci", "tokenizer": None,
            "machine": "m", "seconds": 1.0,
            "runs": [run("reference", "passed", ""), run("litgpt-a", "skipped", hint),
                     run("litgpt-b", "skipped", hint)]}
    md = report.render_markdown(data, "sft-conformance report")
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert not any("litgpt-a" in r for r in rows)
    assert any(r.startswith("| 2 target(s) whose library is not installed here") for r in rows)
    assert md.count(hint) == 1 and "`litgpt-a`, `litgpt-b`" in md
    assert "textbook-seed000" in md and "hand loop" in md and "n/a" in md  # the legend
