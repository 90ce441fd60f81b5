"""The CI gate: mask snapshots, their diff, the pytest fixture and the example workflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sft_conformance.cli import main

ROOT = Path(__file__).resolve().parents[1]

ONE_TOKEN_MOVED = textwrap.dedent('''
    from sft_conformance.targets.reference import ReferenceTarget


    class Changed(ReferenceTarget):
        """The reference with one label moved: the first trained token of example 0 is masked."""

        name = "changed"

        def collate(self, conversations, tokenizer, max_length):
            batch = super().collate(conversations, tokenizer, max_length)
            if conversations[0][0]["content"] == "Explain gravity":
                row = batch["labels"][0]
                first = int((row != -100).nonzero()[0])
                row[first] = -100
            return batch
''')


def test_snapshot_is_stable_and_readable(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["snapshot", "reference", "--out", str(a)]) == 0
    assert main(["snapshot", "reference", "--out", str(b)]) == 0
    assert a.read_text() == b.read_text()  # byte-identical across runs
    text = a.read_text()
    assert text.count('{"index":') == 20  # one example per line, reviewable
    assert json.loads(text)["tokenizer"]["name"] == "chatml"
    assert main(["diff", str(a), str(b)]) == 0


def test_moving_one_label_fails_the_gate_with_a_table(tmp_path, capsys):
    mod = tmp_path / "changed_target.py"
    mod.write_text(ONE_TOKEN_MOVED)
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    assert main(["snapshot", "reference", "--out", str(old)]) == 0
    assert main(["snapshot", f"{mod}:Changed", "--out", str(new)]) == 0
    capsys.readouterr()
    assert main(["diff", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "example 0 (single turn): 1 label(s) changed" in out
    assert re.search(r">> \|\s+8 \| Gravity", out) and "no longer trained" in out
    assert "summary: 1 of 20 examples changed; 0 token(s) newly trained, 1 no longer trained" in out
    assert main(["diff", str(old), str(new), "--accept"]) == 0
    assert old.read_text() == new.read_text()
    assert main(["diff", str(old), str(new)]) == 0


def test_bad_snapshots_and_corpora_are_clear_errors(tmp_path, capsys):
    good = tmp_path / "good.json"
    assert main(["snapshot", "reference", "--out", str(good)]) == 0
    old_version = json.loads(good.read_text()) | {"version": 0}
    (tmp_path / "v0.json").write_text(json.dumps(old_version))
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "v0.json"), str(good)]) == 2
    assert "format version 0" in capsys.readouterr().err
    other = tmp_path / "llama.json"
    assert main(["snapshot", "reference", "--tokenizer", "llama3", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["diff", str(good), str(other)]) == 2
    assert "different tokenizers" in capsys.readouterr().err
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"messages": [{"role": "user", "content": "a"}, '
                      '{"role": "assistant", "content": "b"}]}\n{not json}\n')
    assert main(["snapshot", "reference", "--corpus", str(corpus), "--out",
                 str(tmp_path / "x.json")]) == 2
    assert "c.jsonl:2: not valid JSON" in capsys.readouterr().err
    corpus.write_text('{"messages": [{"role": "bot", "content": "a"}]}\n')
    assert main(["snapshot", "reference", "--corpus", str(corpus), "--out",
                 str(tmp_path / "x.json")]) == 2
    assert "c.jsonl:1: example 0: messages[0].role: unknown role 'bot'" in \
        capsys.readouterr().err


def test_snapshot_fixture(pytester):
    snap = pytester.path / "masks.json"
    pytester.makepyfile(test_gate=textwrap.dedent(f'''
        def test_masks(sft_snapshot):
            sft_snapshot.assert_match("reference", {str(snap)!r})
    '''))
    pytester.runpytest("-p", "no:cacheprovider", "--sft-update-snapshots").assert_outcomes(
        passed=1)
    assert snap.exists()
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    data = json.loads(snap.read_text())
    data["examples"][0]["labels"][8] = -100
    snap.write_text(json.dumps(data))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the masks changed against*", "*newly trained*"])


pytest_plugins = ["pytester"]


@pytest.mark.parametrize("step", ["Conformance checks", "Mask snapshot diff"])
def test_example_workflow_commands_run_locally(step, tmp_path):
    """The GitHub Actions example's commands, run here against the example adapter."""
    workflow = (ROOT / "examples/ci/github-actions.yml").read_text()
    block = workflow.split(f"- name: {step}")[1].split("- name:")[0]
    commands = [line.strip() for line in block.splitlines()
                if line.strip() and not line.strip().startswith(("run: |", "- name"))]
    commands = [c.removeprefix("run: ") for c in commands]
    (tmp_path / "reports").mkdir()
    (tmp_path / "snapshots").mkdir()
    subprocess.run([sys.executable, "-m", "sft_conformance.cli", "snapshot",
                    "examples/ci/my_adapter.py:MyTarget", "--out",
                    str(tmp_path / "snapshots/masks.json")], cwd=ROOT, check=True)
    for command in commands:
        command = re.sub(r"(?<![\w/])/tmp/", f"{tmp_path}/", command)
        command = re.sub(r"(?<![\w/])(snapshots|reports)/", f"{tmp_path}/\\1/", command)
        if command.startswith("sft-conformance check"):
            command += " --check S2 --check S4"
        proc = subprocess.run(command.replace("sft-conformance ", f"{sys.executable} -m "
                                              "sft_conformance.cli ", 1),
                              shell=True, cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pre_commit_hook_entry_gates_a_moved_label(tmp_path):
    """The pre-commit example's entry, run as pre-commit would: 0 on unchanged masks, 1 once a
    trained token moves (the baseline snapshot is edited to differ)."""
    import shlex

    import yaml

    config = yaml.safe_load((ROOT / "examples/ci/pre-commit-config.yaml").read_text())
    (hook,) = config["repos"][0]["hooks"]
    assert hook["language"] == "system" and hook["pass_filenames"] is False
    argv = shlex.split(hook["entry"])
    assert argv[:2] == ["bash", "-c"]
    script = argv[2].replace("/tmp/", f"{tmp_path}/").replace("snapshots/", f"{tmp_path}/")
    script = script.replace("sft-conformance ", f"{shlex.quote(sys.executable)} -m "
                                                "sft_conformance.cli ")
    baseline = tmp_path / "masks.json"
    target = f"{ROOT / 'examples/ci/my_adapter.py'}:MyTarget"
    assert main(["snapshot", target, "--out", str(baseline)]) == 0
    hook_run = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert hook_run.returncode == 0, hook_run.stdout + hook_run.stderr
    data = json.loads(baseline.read_text())
    labels = data["examples"][0]["labels"]
    labels[next(i for i, x in enumerate(labels) if x != -100)] = -100
    baseline.write_text(json.dumps(data))
    hook_run = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert hook_run.returncode == 1, hook_run.stdout + hook_run.stderr
    assert "newly trained" in hook_run.stdout
