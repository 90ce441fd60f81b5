"""Write reports/libraries.md: one line per library configuration (issue 13), from the reports
that ``sft-conformance report --library NAME`` (and ``--tokenizer qwen2.5``) wrote in each
library's tox environment. ``sft-conformance report``
appends the file to reports/conformance.md.

    python scripts/library_summary.py            # reads reports/*/conformance.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sft_conformance.adapters import LIBRARIES  # noqa: E402

ORDER = ("passed", "failed", "error", "xfail", "skipped")


def _cell(checks, status):
    ids = [c["id"] for c in checks if c["status"] == status]
    return ", ".join(ids) if ids else ""


def main() -> int:
    lines = ["## Libraries in their own environments (issue 13)", "",
             "One row per library configuration, each run in the library's own virtualenv "
             "(`tox -e NAME`, reports by `sft-conformance report --library NAME`). Every failure "
             "is explained, confirmed by hand, in the library's report; S6/S7 (no loss "
             "capability) and S8 where the configuration does not pack are skipped.", "",
             "| library | version | configuration (target) | tokenizer | failed | error | "
             "xfail (declared) | report |",
             "|---|---|---|---|---|---|---|---|"]
    for lib, (dist, _prefix) in LIBRARIES.items():
        for name in ("conformance.json", "conformance-qwen2.5.json"):
            path = ROOT / "reports" / lib / name
            if not path.is_file():
                continue
            data = json.loads(path.read_text())
            version = data["versions"].get(dist, "?")
            rel = path.with_suffix(".md").relative_to(ROOT / "reports")
            for run in data["runs"]:
                checks = run.get("checks", [])
                if run.get("error"):
                    row = ["error: " + run["error"][:60], "", ""]
                else:
                    row = [_cell(checks, "failed") or "–", _cell(checks, "error") or "–",
                           _cell(checks, "xfail") or "–"]
                lines.append(f"| {lib} | {version} | `{run['spec']}` | {run['tokenizer']} | "
                             + " | ".join(row) + f" | [{rel}]({rel}) |")
    out = ROOT / "reports" / "libraries.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
