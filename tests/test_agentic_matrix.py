"""reports/agentic.md is collected from each environment's agentic report (report --agentic
--collect): rows, versions, failures in one line, links to the findings."""

from __future__ import annotations

import json

from sft_conformance.agentic_matrix import collect, render


def _part(path, tokenizer, runs, versions):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agentic": True, "tokenizer": tokenizer, "runs": runs,
                                "versions": versions, "command": "sft-conformance report "
                                "--agentic", "generated": "now", "seconds": 1.0,
                                "machine": "test"}))


def _run(spec, **statuses):
    return {"spec": spec, "seconds": 1.0, "checks": [
        {"id": k, "status": v, "judged": 7, "message": f"{k}: what went wrong\nmore"}
        for k, v in statuses.items()]}


def test_collect_gathers_every_environment(tmp_path):
    _part(tmp_path / "agentic-qwen2.5.json", "qwen2.5",
          [_run("reference", S13="passed"), _run("trl-sft-tools", S13="failed")],
          {"trl": "1.16.0", "sft-conformance": "0.2.0"})
    _part(tmp_path / "llamafactory" / "agentic-qwen2.5.json", "qwen2.5",
          [_run("llamafactory-sft-tools", S13="passed", S14="failed")],
          {"llamafactory": "0.9.5"})
    (tmp_path / "llamafactory" / "findings-agentic.md").write_text("# confirmed")
    _part(tmp_path / "conformance.json", None, [], {})  # not an agentic report: ignored
    data = collect(tmp_path)
    assert [(r["library"], r["version"], r["target"]) for r in data["rows"]] == [
        ("sft-conformance", "0.2.0", "reference"), ("trl", "1.16.0", "trl-sft-tools"),
        ("llamafactory", "0.9.5", "llamafactory-sft-tools")]
    assert data["rows"][2]["findings"] == "llamafactory/findings-agentic.md"
    text = render(data, "sft-conformance report --agentic --collect reports")
    assert "2 library configurations across 2 libraries" in text
    assert "- `trl-sft-tools` (qwen2.5) S13 failed: S13: what went wrong" in text
    assert "[findings](llamafactory/findings-agentic.md)" in text
