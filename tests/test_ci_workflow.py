"""``examples/ci/sft-conformance.yml``: the sharded matrix workflow. Every shard command, for
every job of its matrix, is a ``sft-conformance report`` invocation our parser accepts; the
library jobs name the libraries and tox environments that exist; the merge job merges."""

from __future__ import annotations

import configparser
import itertools
import re
import shlex
from pathlib import Path

import pytest

from sft_conformance.cli import build_parser

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples/ci/sft-conformance.yml"


def _jobs_of(matrix: dict) -> list[dict]:
    """The combinations GitHub Actions makes of a matrix (axes crossed, ``include`` entries
    extending the combinations they match)."""
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    for extra in matrix.get("include", []):
        matched = [c for c in combos if all(c.get(k, v) == v for k, v in extra.items()
                                            if k in axes)]
        assert matched, f"include entry {extra} matches no combination"
        for c in matched:
            c.update(extra)
    return combos


def _expand(text: str, job: dict) -> str:
    return re.sub(r"\$\{\{\s*matrix\.([\w-]+)\s*\}\}", lambda m: str(job[m.group(1)]), text)


def _report_argv(script: str, job: dict) -> list[str]:
    """The argv of the ``sft-conformance report`` line of a step, with the shell variables the
    step sets (TOK, RUN) as it sets them."""
    script = _expand(script, job)
    tok = "" if job["tokenizer"] == "bundled" else f"--tokenizer {job['tokenizer']}"
    run = f"tox exec -e {job['env']} --" if job["env"] else ""
    line = next(line for line in script.splitlines() if "sft-conformance report" in line)
    line = line.replace("$TOK", tok).replace("$RUN", run)
    words = shlex.split(line)
    if job["env"]:
        assert words[:5] == ["tox", "exec", "-e", job["env"], "--"], words
    return words[words.index("sft-conformance") + 1:]


def test_every_shard_command_parses():
    from sft_conformance.adapters import LIBRARIES

    flow = yaml.safe_load(WORKFLOW.read_text())
    shard = flow["jobs"]["shard"]
    jobs = _jobs_of(shard["strategy"]["matrix"])
    script = next(s["run"] for s in shard["steps"] if "sft-conformance report" in s.get("run", ""))
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    shards: dict[tuple, set] = {}
    for job in jobs:
        argv = _report_argv(script, job)
        args = build_parser(argv).parse_args(argv)
        assert args.command == "report" and args.shard is not None, argv
        assert args.no_progress
        assert (args.tokenizer or "bundled") == job["tokenizer"]
        if args.library:
            assert args.library in LIBRARIES and job["env"] == args.library
        if job["env"]:
            assert tox.has_section(f"testenv:{job['env']}"), job["env"]
        key = (job["tokenizer"], args.library, tuple(args.targets))
        shards.setdefault(key, set()).add(args.shard)
    # the slices of each run are all there: K = 1..N of the same N
    for key, got in shards.items():
        n = {n for _, n in got}
        assert len(n) == 1 and {k for k, _ in got} == set(range(1, n.pop() + 1)), (key, got)
    # every library with rows in the conformance matrix has its job, under every tokenizer (a
    # library whose targets all declare tools, tinker-cookbook, has rows in the agentic matrix
    # only: report --agentic --library NAME)
    from sft_conformance.adapters import library_targets
    from sft_conformance.commands.report import _declares_tools

    libraries = {lib for (_, lib, _) in shards if lib}
    assert libraries == {lib for lib in LIBRARIES
                         if any(not _declares_tools(t) for t in library_targets(lib))}


def test_the_merge_job_merges_each_tokenizers_parts():
    flow = yaml.safe_load(WORKFLOW.read_text())
    shard_tokenizers = flow["jobs"]["shard"]["strategy"]["matrix"]["tokenizer"]
    merge = flow["jobs"]["merge"]
    assert merge["needs"] == "shard"
    assert merge["strategy"]["matrix"]["tokenizer"] == shard_tokenizers
    upload = next(s for s in flow["jobs"]["shard"]["steps"]
                  if s.get("uses", "").startswith("actions/upload-artifact"))
    download = next(s for s in merge["steps"]
                    if s.get("uses", "").startswith("actions/download-artifact"))
    for tokenizer in shard_tokenizers:
        name = _expand(upload["with"]["name"], {"tokenizer": tokenizer, "part": "main-1"})
        pattern = _expand(download["with"]["pattern"], {"tokenizer": tokenizer})
        assert re.fullmatch(pattern.replace("*", ".*"), name)
    script = next(s["run"] for s in merge["steps"] if "--merge" in s.get("run", ""))
    argv = shlex.split(script.replace("$(find parts -name '*.part-*.json' | sort)",
                                      "a.part-1-of-2.json b.part-2-of-2.json"))
    argv = argv[argv.index("sft-conformance") + 1:]
    args = build_parser(argv).parse_args(argv)
    assert args.merge == ["a.part-1-of-2.json", "b.part-2-of-2.json"]
