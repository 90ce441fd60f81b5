"""The agentic matrix across environments: ``reports/agentic.{md,json}`` collected from the
agentic reports each environment wrote (``report --agentic``: ``agentic[-TOKENIZER].json`` in the
main environment's folder and in each library's ``reports/<library>/``), one row per library
configuration and tokenizer, each failure linked to the library's hand-confirmed findings."""

from __future__ import annotations

import json
from pathlib import Path

from .report import AGENTIC_CHECKS, SYMBOL

#: distribution names whose version a row reports, by the prefix of its target's name
LIBRARY_OF = (("trl-", "trl"), ("transformers-", "transformers"), ("torchtune-", "torchtune"),
              ("litgpt-", "litgpt"), ("verl-", "verl"), ("ms-swift-", "ms-swift"),
              ("llamafactory-", "llamafactory"), ("openrlhf-", "openrlhf"),
              ("axolotl-", "axolotl"), ("tinker-cookbook-", "tinker-cookbook"),
              ("oumi-", "oumi"), ("reference", "sft-conformance"),
              ("correct-", "sft-conformance"))


def library_of(spec: str) -> str:
    return next((dist for prefix, dist in LIBRARY_OF if spec.startswith(prefix)), "?")


def collect(root: Path) -> dict:
    """Every agentic report under ``root`` (its own and its sub-folders'), rows in file order."""
    rows, sources = [], []
    for path in sorted(root.glob("agentic*.json")) + sorted(root.glob("*/agentic*.json")):
        if path.parent == root and path.name == "agentic.json":
            continue  # the collected matrix itself
        data = json.loads(path.read_text(encoding="utf-8"))
        if not data.get("agentic"):
            continue
        sources.append({"path": str(path.relative_to(root)), "command": data.get("command", ""),
                        "generated": data.get("generated", ""),
                        "seconds": data.get("seconds"), "machine": data.get("machine", ""),
                        "versions": data.get("versions", {})})
        findings = next((f for f in (path.parent / "findings-agentic.md",)
                         if f.is_file()), None)
        for run in data.get("runs", []):
            lib = library_of(run["spec"])
            checks = {c["id"]: {"status": c["status"], "judged": c.get("judged"),
                                "message": c.get("message", "")}
                      for c in run.get("checks", [])}
            rows.append({"library": lib, "version": data.get("versions", {}).get(lib)
                         or "not recorded (see findings)",
                         "target": run["spec"],
                         "tokenizer": run.get("tokenizer") or data.get("tokenizer") or "bundled",
                         "error": run.get("error"), "checks": checks,
                         "report": str(path.relative_to(root).with_suffix(".md")),
                         "findings": str(findings.relative_to(root)) if findings else None,
                         "seconds": run.get("seconds")})
    notes = root / "notes" / "agentic.md"
    return {"checks": AGENTIC_CHECKS, "rows": rows, "sources": sources,
            "notes": notes.read_text(encoding="utf-8") if notes.is_file() else ""}


def render(data: dict, command: str) -> str:
    ids = data["checks"]
    libs = sorted({r["library"] for r in data["rows"] if r["library"] != "sft-conformance"})
    configs = {(r["target"]) for r in data["rows"] if r["library"] != "sft-conformance"}
    lines = ["# Agentic conformance matrix: the libraries' tool and reasoning paths", "",
             f"{len(configs)} library configurations across {len(libs)} libraries "
             f"({', '.join(libs)}), each driven through its own tool and reasoning "
             "configuration on conversations with tool calls, tool results and reasoning "
             "(docs/specification.md#agentic). Collected from the agentic reports of each "
             "environment (`report --agentic`), listed under *Sources*. ✓ passed, ✗ failed, "
             "– skipped (reason in the row's report), error the target raised. Every failure "
             "is confirmed by hand in the library's findings (last column).", "",
             f"- Command: `{command}`", "",
             "Columns: S1 the ids are the template's rendering of the whole conversation with "
             "its tools; S3 nothing outside the assistant's turns is trained; S4 end tokens "
             "trained; S13 tool results never trained; S14 tool-call turns trained whole, end "
             "token included; S15 reasoning follows the declared rule.", "",
             "| library | version | configuration | tokenizer | " + " | ".join(ids)
             + " | seconds | report, findings |",
             "|---|---|---|---|" + "---|" * len(ids) + "---|---|"]
    for r in data["rows"]:
        if r["error"]:
            cells = [f"error: {r['error'][:60]}"] + [""] * (len(ids) - 1)
        else:
            cells = []
            for i in ids:
                c = r["checks"].get(i)
                cells.append(SYMBOL.get(c["status"], c["status"]) if c else "")
        links = f"[report]({r['report']})" + (f", [findings]({r['findings']})"
                                              if r["findings"] else "")
        lines.append(f"| {r['library']} | {r['version']} | `{r['target']}` | {r['tokenizer']} | "
                     + " | ".join(cells) + f" | {r['seconds'] or ''} | {links} |")
    lines += ["", "## Failures, in one line each", "",
              "The full counterexample (example, position, token, label, expected, a snippet to "
              "reproduce) is in the row's report; the hand confirmation, with the public report "
              "it matches, in the library's findings.", ""]
    for r in data["rows"]:
        for i in ids:
            c = r["checks"].get(i)
            if c and c["status"] in ("failed", "error"):
                first = c["message"].strip().splitlines()[0][:220]
                lines.append(f"- `{r['target']}` ({r['tokenizer']}) {i} {c['status']}: {first}")
    if data.get("notes"):
        lines += ["", "## Notes (confirmed by hand)", "", data["notes"].strip()]
    lines += ["", "## Sources", ""]
    for s in data["sources"]:
        v = s["versions"]
        lines.append(f"- `{s['path']}`: `{s['command']}` ({s['generated']}, {s['seconds']} s, "
                     f"{s['machine']}); " + ", ".join(f"{k} {v[k]}" for k in v))
    return "\n".join(lines) + "\n"


def write(root: Path, command: str) -> tuple[Path, Path]:
    data = collect(root)
    md, js = root / "agentic.md", root / "agentic.json"
    js.write_text(json.dumps(dict(data, command=command), indent=1) + "\n", encoding="utf-8")
    md.write_text(render(data, command), encoding="utf-8")
    return md, js
