"""``sft-conformance targets``: the built-in targets and what each exercises."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--all", action="store_true", help="include the mutants")


def run(args) -> int:
    import importlib

    from tabulate import tabulate

    from sft_conformance.targets import builtin_targets

    rows = []
    for name, path in builtin_targets().items():
        if name.startswith("mutant-") and not args.all:
            continue
        module, attr = path.split(":")
        cls = getattr(importlib.import_module(module), attr)
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        requires = getattr(cls, "requires", ())
        rows.append([name, doc, ", ".join(requires) or "-"])
    print(tabulate(rows, headers=["target", "what it exercises", "requires"], tablefmt="simple",
                   maxcolwidths=[None, 90, None]))
    if not args.all:
        print("\n(--all also lists the mutants: deliberately buggy targets)")
    return 0
