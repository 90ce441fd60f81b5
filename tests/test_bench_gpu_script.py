"""scripts/gpu_issue25.sh, prepared for a GPU session (issue 25): its commands are valid."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_issue25.sh"


def test_gpu_script_commands_parse(tmp_path):
    from sft_conformance.bench.presets import PRESETS
    from sft_conformance.cli import build_parser

    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=True,
                         env={"DRY_RUN": "1", "OUT": str(tmp_path), "PATH": "/usr/bin:/bin"})
    commands = out.stdout.strip().splitlines()
    assert len(commands) == 3
    seen = []
    for line in commands:
        words = shlex.split(line)
        assert words[:4] == ["timeout", words[1], "sft-conformance", "bench"]
        args = build_parser(["bench"]).parse_args(words[3:])
        assert args.preset in PRESETS and args.json.startswith(str(tmp_path))
        seen.append((args.preset, args.batch_size, args.compile, args.loss))
    assert seen == [("cuda-qwen-alpaca", 8, True, None),
                    ("cuda-qwen-alpaca", 32, None, "chunked"),
                    ("cuda-llama-ultrachat", None, True, "chunked")]
    assert sum(int(shlex.split(c)[1]) for c in commands) <= 600  # the caps fit 10 minutes
