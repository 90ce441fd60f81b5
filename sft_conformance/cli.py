"""The ``sft-conformance`` command line.

Each subcommand lives in ``sft_conformance/commands/<name>.py`` with ``add_arguments(parser)``
and ``run(args) -> int``; modules are imported only when their command runs, so ``targets`` does
not pay for lm-eval and ``check`` does not pay for matplotlib.

Exit codes: 0 success, 1 a check (or gate) failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

COMMANDS = {
    "targets": "list built-in targets",
    "check": "run the conformance checks S1-S12 on targets",
    "mutants": "run every mutant through the suite and print the kill table",
    "report": "rewrite reports/ from stored results (conformance matrix)",
    "snapshot": "record the input ids and trained positions a target produces on a corpus",
    "diff": "compare two mask snapshots; exit 1 on any change unless --accept",
    "bench": "padding vs packing throughput benchmark",
    "eval": "post-SFT evaluation through lm-eval (ablation of collator bugs)",
    "demo": "print the reference's masks and loss for a bundled example as a token table",
}


class UsageError(Exception):
    """A usage or configuration error: exit code 2."""


def _module(name: str):
    return importlib.import_module(f"sft_conformance.commands.{name.replace('-', '_')}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sft-conformance", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        try:
            module = _module(name) if name == wanted else None
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("sft_conformance.commands"):
                continue  # command not shipped in this build
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        if module is not None:
            module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(_module(args.command).run(args) or 0)
    except UsageError as exc:
        print(f"sft-conformance {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # run the importable module's main, so that UsageError is one class for every command
    from sft_conformance.cli import main as _main

    sys.exit(_main())
