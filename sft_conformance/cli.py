"""The ``sft-conformance`` command line.

Each subcommand lives in ``sft_conformance/commands/<name>.py`` with ``add_arguments(parser)``
and ``run(args) -> int``; modules are imported only when their command runs, so ``targets`` does
not pay for lm-eval and ``check`` does not pay for matplotlib.

Exit codes, the same for every command: 0 success, 1 a finding (a check, gate or diff failed),
2 a usage or configuration error (one line naming the bad input), 3 an internal error of
sft-conformance itself (its traceback, innermost frames first to read, is printed).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import ConfigurationError

COMMANDS = {
    "targets": "list built-in targets",
    "check": "run the conformance checks S1-S15 on targets",
    "mutants": "run every mutant through the suite and print the kill table",
    "report": "run every check on the built-in targets (or TARGETs) and write the conformance "
              "matrix to --out (default sft-conformance-reports/); --from-json re-renders "
              "stored results",
    "snapshot": "record the input ids and trained positions a target produces on a corpus",
    "diff": "compare two mask snapshots; exit 1 on any change unless --accept",
    "bench": "padding vs packing throughput benchmark",
    "eval": "post-SFT evaluation through lm-eval (ablation of collator bugs)",
    "demo": "print the reference's masks and loss for a bundled example as a token table",
}


#: the one error type mapped to exit code 2 (kept under its old name for the commands)
UsageError = ConfigurationError


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
    # our own process: nothing downloads unless the user said otherwise
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for a usage error
        return int(exc.code or 0)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(_module(args.command).run(args) or 0)
    except ConfigurationError as exc:
        print(f"sft-conformance {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a crash of ours: show where it failed
        from .runner import innermost_traceback

        print(f"sft-conformance {args.command}: internal error (please report it): "
              f"{type(exc).__name__}: {exc}\n{innermost_traceback(exc, frames=12)}",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    # run the importable module's main, so that UsageError is one class for every command
    from sft_conformance.cli import main as _main

    sys.exit(_main())
