"""One exit-code contract for every command: 0 ok, 1 a finding, 2 usage or configuration.

Each row runs the command in-process through ``sft_conformance.cli.main``. Commands with no
finding to report (``targets``, ``demo``, ``snapshot``, ``report``: a failing target is the
report's content) have no row for 1. The longer runs are tested beside their features:
``eval`` 0 in tests/test_eval.py::test_smoke_ablation_through_lm_eval, ``bench`` 0/1/2 in
tests/test_bench_smoke.py::test_regression_gate, ``diff`` 0/1/2 in tests/test_snapshots.py.
"""

from __future__ import annotations

import json

import pytest

from sft_conformance.cli import main


def snapshot_files(tmp_path):
    base = tmp_path / "base.json"
    assert main(["snapshot", "reference", "--out", str(base)]) == 0
    moved = json.loads(base.read_text())
    labels = moved["examples"][0]["labels"]
    labels[next(i for i, x in enumerate(labels) if x != -100)] = -100
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    return base, tmp_path / "moved.json"


CASES = [
    ("targets", ["targets"], 0),
    ("targets", ["targets", "--no-such-option"], 2),
    ("check", ["check", "reference", "--check", "S1", "--profile", "ci"], 0),
    ("check", ["check", "mutant-off-by-one-late", "--check", "S2", "--profile", "ci"], 1),
    ("check", ["check", "reference", "--check", "S99"], 2),
    ("check", ["check", "reference", "--tokenizer", "/no/such/tokenizer"], 2),
    ("check", ["check", "reference", "--profile", "nope"], 2),
    ("check", ["check", "no_such_module:Target"], 2),
    ("mutants", ["mutants", "--only-meant", "--mutant", "mutant-off-by-one-late"], 0),
    ("mutants", ["mutants", "--mutant", "mutant-nope"], 2),
    ("demo", ["demo"], 0),
    ("demo", ["demo", "--tokenizer", "nope"], 2),
    ("snapshot", ["snapshot", "reference", "--out", "{tmp}/s.json", "--corpus", "{tmp}/bad"], 2),
    ("report", ["report", "no-such-target", "--out", "{tmp}"], 2),
    ("report", ["report", "--from-json", "{tmp}/missing.json", "--out", "{tmp}"], 2),
    ("eval", ["eval", "--variants", "nope", "--out", "{tmp}"], 2),
    ("bench", ["bench", "--results", "{tmp}/missing.json", "--compare", "{tmp}/m.json"], 2),
    ("diff", ["diff", "{tmp}/missing.json", "{tmp}/missing.json"], 2),
]


@pytest.mark.parametrize("command,argv,code", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_exit_code(command, argv, code, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err
    if code == 2:
        # one line naming the bad input (after argparse's usage lines), no traceback
        last = err.strip().splitlines()[-1]
        assert last.startswith(("sft-conformance: error: ",
                                f"sft-conformance {command}: error: ")), err
        assert "Traceback" not in err, err
        if not err.startswith("usage:"):
            assert len(err.strip().splitlines()) == 1, err


def test_mutants_exit_1_when_a_mutant_survives(monkeypatch, capsys):
    from sft_conformance import mutants

    # the off-by-one mutant passes S6 (its loss is right): meant for S6, it survives
    monkeypatch.setitem(mutants.KILLS, "mutant-off-by-one-late", "S6")
    assert main(["mutants", "--only-meant", "--mutant", "mutant-off-by-one-late"]) == 1
    assert "SURVIVED" in capsys.readouterr().out


def test_snapshot_and_diff_codes(tmp_path, capsys):
    base, moved = snapshot_files(tmp_path)
    assert main(["diff", str(base), str(base)]) == 0
    assert main(["diff", str(base), str(moved)]) == 1


def test_unknown_profile_in_the_environment_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("SFT_CONFORMANCE_PROFILE", "fast")
    assert main(["check", "reference", "--check", "S1"]) == 2
    assert "SFT_CONFORMANCE_PROFILE 'fast'" in capsys.readouterr().err


def test_a_crash_exits_3_showing_the_failing_frame(monkeypatch, capsys):
    from sft_conformance.commands import targets

    def broken(args):
        return {}["the failing line"]

    monkeypatch.setattr(targets, "run", broken)
    assert main(["targets"]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "the failing line" in err and "in broken" in err
