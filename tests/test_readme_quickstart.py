"""The README's "Check your own collator in five minutes", run as written: its code blocks are
read from README.md (so the two cannot drift) and run in an empty temporary folder, with the
commands of this environment (``sft-conformance`` and ``pytest`` on PATH)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Check your own collator in five minutes"


def steps() -> tuple[dict[str, str], list[tuple[str, int]]]:
    """The section's files (python blocks whose first line is ``# NAME.py``) and commands (bash
    lines; a trailing ``# exit N`` is the exit code the step expects, else 0)."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    files, commands = {}, []
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        if lang == "python":
            first = body.splitlines()[0]
            assert first.startswith("# ") and first.endswith(".py"), first
            files[first[2:]] = body
        elif lang == "bash":
            for line in body.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                m = re.search(r"#\s*exit (\d+)", line)
                commands.append((line.split("#")[0].strip(), int(m.group(1)) if m else 0))
    return files, commands


def test_the_section_has_the_steps_it_promises():
    files, commands = steps()
    assert "sft_adapter.py" in files
    joined = "\n".join(c for c, _ in commands)
    assert "sft-conformance check sft_adapter:MyTarget" in joined  # the module form
    assert "pytest --sft-target sft_adapter:MyTarget" in joined
    assert any(code == 1 for _, code in commands)  # reading a failure
    assert "overlong" in files["sft_adapter.py"] and "--check S9" in joined


def test_quickstart_runs_verbatim(tmp_path):
    files, commands = steps()
    for name, body in files.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get("PATH", ""), SFT_CONFORMANCE_PROFILE="ci")
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    for command, expected in commands:
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == expected, f"$ {command}\n{out}"
        assert "Traceback" not in out, f"$ {command}\n{out}"
        if expected == 1:  # the failure the README shows is the one printed
            assert "S4: the end-of-turn token is not trained" in out and "| >> |" in out
            assert "Reproduce:" in out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
