"""``sft-conformance report``: the stored matrix, and ``--update`` re-running some of its rows
(the checks themselves are stubbed: the runs are proven in test_matrix_verdicts)."""

from __future__ import annotations

import json

import pytest

from sft_conformance import report
from sft_conformance.cli import main


def _run(spec: str, status: str) -> dict:
    return {"spec": spec, "target": spec, "error": None, "seconds": 1.0,
            "checks": [{"id": "S2", "check": "first_response_token_trained", "status": status,
                        "message": f"{spec} S2 {status}", "judged": 3}]}


def _matrix(runs: list[dict], when: str, versions: dict | None = None) -> dict:
    return {"generated": when, "versions": versions or {"torch": "2.13.0"}, "profile": "ci",
            "tokenizer": None, "machine": "x86_64, 2 CPU cores, Linux", "seconds": 5.0,
            "runs": runs}


@pytest.fixture
def stub_matrix(monkeypatch):
    """run_matrix returns canned rows: 'failed' the first time a target runs, 'passed' after."""
    seen = set()

    def fake(targets, *, profile="ci", tokenizer=None, progress=print, **_):
        runs = [_run(t, "passed" if t in seen else "failed") for t in targets]
        seen.update(targets)
        return _matrix(runs, f"run {len(seen)}")

    monkeypatch.setattr(report, "run_matrix", fake)


def test_update_replaces_only_the_named_rows(stub_matrix, tmp_path, capsys):
    assert main(["report", "a.py:A", "b.py:B", "--out", str(tmp_path)]) == 0
    first = json.loads((tmp_path / "conformance.json").read_text())
    assert [r["checks"][0]["status"] for r in first["runs"]] == ["failed", "failed"]

    assert main(["report", "b.py:B", "c.py:C", "--out", str(tmp_path), "--update"]) == 0
    data = json.loads((tmp_path / "conformance.json").read_text())
    assert [r["spec"] for r in data["runs"]] == ["a.py:A", "b.py:B", "c.py:C"]
    assert [r["checks"][0]["status"] for r in data["runs"]] == ["failed", "passed", "failed"]
    assert data["command"] == first["command"] and "--update" not in data["command"]
    assert data["generated"] == first["generated"]
    (record,) = data["updates"]
    assert record["targets"] == ["b.py:B", "c.py:C"] and "--update" in record["command"]
    md = (tmp_path / "conformance.md").read_text()
    assert "- Rows re-run: `sft-conformance report b.py:B c.py:C" in md
    assert "`b.py:B`, `c.py:C`" in md


def test_update_needs_targets_and_a_stored_report(stub_matrix, tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path), "--update"]) == 2
    assert "--update needs the TARGETs" in capsys.readouterr().err
    assert main(["report", "a.py:A", "--out", str(tmp_path), "--update"]) == 2
    assert "no stored report to update" in capsys.readouterr().err
    assert main(["report", "a.py:A", "--out", str(tmp_path)]) == 0
    assert main(["report", "a.py:A", "--out", str(tmp_path), "--update",
                 "--profile", "dev"]) == 2
    assert "profile 'ci', not 'dev'" in capsys.readouterr().err


def test_update_lists_versions_that_changed():
    old = _matrix([_run("a", "failed")], "t0", {"trl": "1.16.0"})
    new = _matrix([_run("a", "passed")], "t1", {"trl": "1.17.0"})
    data = report.update(old, new, "sft-conformance report a --update")
    md = report.render_markdown(data, "sft-conformance report a")
    assert "(t1, 5.0 s): `a`; versions: trl 1.17.0" in md
    assert "- Versions: trl 1.16.0" in md


def test_compared_with_the_environment_that_had_the_library(tmp_path):
    """A named tokenizer's matrix is compared, for a row the main bundled run could not judge
    (library not installed), with the bundled report of that library's environment."""
    missing = {"spec": "tt", "target": "tt", "error": None, "checks": [
        {"id": "S2", "check": "x", "status": "skipped",
         "message": "needs torchtune (not installed): pip install ..."}]}
    (tmp_path / "torchtune").mkdir()
    (tmp_path / "conformance.json").write_text(json.dumps(
        _matrix([_run("a", "passed"), missing], "t0")))
    (tmp_path / "torchtune" / "conformance.json").write_text(json.dumps(
        _matrix([_run("tt", "failed")], "t0")))
    here = _matrix([_run("a", "failed"), _run("tt", "passed"), dict(missing, spec="x")], "t1")
    lines = report.compare_with(here, report.bundled_baseline(tmp_path))
    assert lines == ["- `a` S2: passed with the bundled tokenizers, failed here",
                     "- `tt` S2: failed with the bundled tokenizers, passed here"]
    assert report.bundled_baseline(tmp_path / "torchtune" / "none") is None


def test_skipped_checks_with_one_reason_make_one_entry():
    """A row whose library is not installed skips every check for one reason: the report says
    it once, naming the checks, instead of once per check."""
    hint = "needs torchtune (not installed): pip install 'sft-conformance[torchtune]'"
    checks = [{"id": f"S{i}", "check": "c", "status": "skipped", "message": hint, "judged": 0}
              for i in (1, 2, 3)]
    checks.append({"id": "S4", "check": "c", "status": "xfail", "message": "known failure: x",
                   "judged": 2})
    run = {"spec": "tt", "target": "tt", "error": None, "seconds": 1.0, "checks": checks}
    md = report.render_markdown(_matrix([run], "t0"), "sft-conformance report tt")
    assert f"- `tt`: S1, S2, S3 skipped: {hint}; S4 xfail: known failure: x" in md
    assert md.count(hint) == 1
