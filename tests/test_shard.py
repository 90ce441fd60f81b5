"""``report --shard K/N`` and ``report --merge``: the parts of CI jobs render the matrix the
unsharded run renders; parts that do not belong together are refused in one line."""

from __future__ import annotations

import json

import pytest

from sft_conformance import report
from sft_conformance.cli import main

TARGETS = ["reference", "textbook-seed000", "mutant-eos-masked-by-value",
           "mutant-off-by-one-late"]


def _table(md: str) -> list[str]:
    """The verdict table and the failures, without the header (command, time, parts)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| target"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    failures = md[md.index("## Failures"):]
    return lines[start:end] + failures.splitlines()


def _verdicts(data: dict) -> list:
    return [(r["spec"], [(c["id"], c["status"], c["judged"], c["message"]) for c in r["checks"]],
             [(c["id"], c["status"]) for c in r.get("hand_loop", [])]) for r in data["runs"]]


def _few_checks(monkeypatch, only):
    """Real rows on a few checks (fast): the CLI runs every check."""
    real = report.run_row

    def run_row(spec, profile="ci", tokenizer=None, _only=None):
        return real(spec, profile, tokenizer, only)

    monkeypatch.setattr(report, "run_row", run_row)


def test_two_shards_merge_to_the_unsharded_matrix(tmp_path, monkeypatch, capsys):
    _few_checks(monkeypatch, ["S2", "S4"])
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["report", *TARGETS, "--out", str(whole)]) == 0
    for k in (1, 2):
        assert main(["report", *TARGETS, "--shard", f"{k}/2", "--out", str(parts)]) == 0
    out = capsys.readouterr().out
    assert "wrote " + str(parts / "conformance.part-1-of-2.json") in out
    first = json.loads((parts / "conformance.part-1-of-2.json").read_text())
    assert first["partial"] == {"shard": "1/2", "targets": TARGETS}
    assert [r["spec"] for r in first["runs"]] == TARGETS[0::2]  # round robin
    assert "--shard 1/2" in first["command"] and first["versions"] and first["seconds"] >= 0
    assert not (parts / "conformance.md").exists()  # a part is no matrix

    merged_dir = tmp_path / "merged"
    assert main(["report", "--merge", str(parts / "conformance.part-2-of-2.json"),
                 str(parts / "conformance.part-1-of-2.json"), "--out", str(merged_dir)]) == 0
    merged = json.loads((merged_dir / "conformance.json").read_text())
    unsharded = json.loads((whole / "conformance.json").read_text())
    assert [r["spec"] for r in merged["runs"]] == TARGETS  # the default order, not the parts'
    assert _verdicts(merged) == _verdicts(unsharded)
    md = (merged_dir / "conformance.md").read_text()
    assert _table(md) == _table((whole / "conformance.md").read_text())
    assert "- Part 1/2: `sft-conformance report" in md and "- Part 2/2:" in md
    assert "--merge" in merged["command"]


def _part(specs, k, n, everything, **extra) -> dict:
    runs = [{"spec": s, "target": s, "error": None, "seconds": 1.0,
             "checks": [{"id": "S4", "check": "end_of_turn_trained", "status": "passed",
                         "message": "", "judged": 3}]} for s in specs]
    return {"generated": "now", "versions": {"torch": "2.13.0", "trl": f"0.{k}"},
            "profile": "ci", "tokenizer": None, "machine": f"runner {k}", "seconds": 10.0 * k,
            "runs": runs, "command": f"sft-conformance report --shard {k}/{n}",
            "partial": {"shard": f"{k}/{n}", "targets": everything}, **extra}


def _not_installed(spec) -> dict:
    return {"spec": spec, "target": spec, "error": None, "seconds": 0.0,
            "checks": [{"id": "S4", "check": "end_of_turn_trained", "status": "skipped",
                        "message": "needs litgpt (not installed): pip install litgpt",
                        "judged": 0}]}


def _write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_merge_refuses_parts_that_do_not_belong_together(tmp_path, capsys):
    every = ["a.py:A", "b.py:B", "c.py:C"]
    one = _write(tmp_path, "1.json", _part(["a.py:A", "c.py:C"], 1, 2, every))
    two = _write(tmp_path, "2.json", _part(["b.py:B"], 2, 2, every))
    for change, what in (({"profile": "dev"}, "profile"), ({"tokenizer": "qwen2.5"}, "tokenizer"),
                         ({"agentic": True}, "agentic-ness")):
        other = _write(tmp_path, "x.json", dict(_part(["b.py:B"], 2, 2, every), **change))
        assert main(["report", "--merge", one, other, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"has {what}" in err and len(err.strip().splitlines()) == 1, err
    # overlapping rows
    assert main(["report", "--merge", one, one, "--out", str(tmp_path)]) == 2
    assert "in both" in capsys.readouterr().err
    # a missing part
    assert main(["report", "--merge", one, "--out", str(tmp_path)]) == 2
    assert "1 row(s) missing (b.py:B)" in capsys.readouterr().err
    assert main(["report", "--merge", one, "--allow-missing", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "conformance.md").read_text()
    assert "Rows missing (merged with --allow-missing): `b.py:B`" in md
    # the whole set: the parts' own order of targets, each part's versions where they differ
    assert main(["report", "--merge", two, one, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "conformance.json").read_text())
    assert [r["spec"] for r in data["runs"]] == every
    assert data["versions"] == {"torch": "2.13.0"} and data["seconds"] == 30.0
    md = (tmp_path / "conformance.md").read_text()
    assert "- Part 1/2: `sft-conformance report --shard 1/2` (now, runner 1, 10.0 s): 2 rows; " \
           "versions: trl 0.1" in md
    # usage mistakes
    assert main(["report", "a.py:A", "--merge", one, "--out", str(tmp_path)]) == 2
    assert main(["report", "--allow-missing", "--out", str(tmp_path)]) == 2
    assert main(["report", "--merge", str(tmp_path / "none.json")]) == 2
    capsys.readouterr()


def test_a_row_not_installed_gives_way_to_the_part_that_had_the_library(tmp_path):
    """The main job's rows of a library it has not installed are skipped; the library job's
    part has them: the merge keeps the library's."""
    main_part = _part(["reference"], 1, 1, ["reference", "litgpt-sft-default"])
    main_part["runs"].append(_not_installed("litgpt-sft-default"))
    lib = _part(["litgpt-sft-default"], 1, 1, ["litgpt-sft-default"])
    data = report.merge([("lib.json", lib), ("main.json", main_part)],
                        order=["reference", "litgpt-sft-default"])
    assert [r["spec"] for r in data["runs"]] == ["reference", "litgpt-sft-default"]
    assert data["runs"][1]["checks"][0]["status"] == "passed"
    assert [p["rows"] for p in data["parts"]] == [["litgpt-sft-default"], ["reference"]]


def test_agentic_shards(tmp_path, capsys):
    """--agentic --shard: the targets that declare tools, on the agentic columns, merged into
    OUT/agentic.md."""
    out = tmp_path / "agentic"
    for k in (1, 2):
        assert main(["report", "--agentic", "--shard", f"{k}/2", "--out", str(out)]) == 0
    parts = sorted(str(p) for p in out.glob("agentic.part-*-of-2.json"))
    assert len(parts) == 2
    first = json.loads(open(parts[0]).read())
    assert first["agentic"] and first["only"] == report.AGENTIC_CHECKS
    assert main(["report", "--merge", *parts, "--out", str(out)]) == 0
    data = json.loads((out / "agentic.json").read_text())
    assert data["agentic"] and data["only"] == report.AGENTIC_CHECKS
    assert [r["spec"] for r in data["runs"]] == first["partial"]["targets"]
    md = (out / "agentic.md").read_text()
    assert md.startswith("# Agentic conformance matrix") and "| S13 |" in md
    # an agentic part and a plain one do not merge
    plain = _write(tmp_path, "plain.json", _part(["reference"], 1, 1, ["reference"]))
    assert main(["report", "--merge", parts[0], plain, "--out", str(tmp_path)]) == 2
    assert "agentic-ness" in capsys.readouterr().err


def test_library_shards(tmp_path, capsys):
    """--library NAME --shard in an environment without the library (every check skipped,
    fast): the parts and the merge go to OUT as for the library's report."""
    from sft_conformance.adapters import library_targets

    out = tmp_path / "litgpt"
    for k in (1, 2):
        assert main(["report", "--library", "litgpt", "--shard", f"{k}/2",
                     "--out", str(out)]) == 0
    parts = sorted(str(p) for p in out.glob("conformance.part-*-of-2.json"))
    first = json.loads(open(parts[0]).read())
    assert first["partial"]["library"] == "litgpt"
    assert first["partial"]["targets"] == library_targets("litgpt")
    assert main(["report", "--merge", *parts, "--library", "litgpt", "--out", str(out)]) == 0
    data = json.loads((out / "conformance.json").read_text())
    assert [r["spec"] for r in data["runs"]] == library_targets("litgpt")


@pytest.mark.slow
def test_two_shards_every_check(tmp_path):
    """The same as the first test with every check (about a minute on 2 cores)."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    targets = TARGETS[:3]
    assert main(["report", *targets, "--out", str(whole)]) == 0
    for k in (1, 2):
        assert main(["report", *targets, "--shard", f"{k}/2", "--out", str(parts)]) == 0
    assert main(["report", "--merge", *map(str, sorted(parts.glob("*.part-*"))),
                 "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "conformance.json").read_text())
    assert _verdicts(merged) == _verdicts(json.loads((whole / "conformance.json").read_text()))


def test_merged_parts_of_a_named_tokenizer(tmp_path):
    """Parts run with --tokenizer merge into conformance-TOKENIZER.{md,json}, compared with the
    bundled run beside them."""
    every = ["a.py:A", "b.py:B"]
    bundled = dict(_part(every, 1, 1, every), tokenizer=None)
    bundled.pop("partial")
    (tmp_path / "conformance.json").write_text(json.dumps(bundled))
    parts = [_write(tmp_path, f"{k}.json", dict(_part([s], k, 2, every), tokenizer="qwen2.5"))
             for k, s in ((1, "a.py:A"), (2, "b.py:B"))]
    assert main(["report", "--merge", *parts, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "conformance-qwen2.5.json").read_text())
    assert data["tokenizer"] == "qwen2.5" and len(data["runs"]) == 2
    assert data["compared"] == ["- no verdict differs from the bundled run"]
