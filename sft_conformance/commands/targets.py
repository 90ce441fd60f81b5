"""``sft-conformance targets``: the built-in targets and what each exercises."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--all", action="store_true", help="include the mutants")
    parser.add_argument("--tokenizers", action="store_true",
                        help="list the bundled tokenizer names instead: the templates on the "
                             "bundled vocabularies and the real families (vocabulary size, the "
                             "quirk each exercises)")


def list_tokenizers() -> int:
    from tabulate import tabulate

    from sft_conformance.assets import TEMPLATES, load_tokenizer
    from sft_conformance.assets.families import INSTALL_HINT, describe

    rows = []
    for name, spec in TEMPLATES.items():
        rows.append([name, len(load_tokenizer(name)), "bundled", spec.eos_token, spec.pad_token,
                     spec.description])
    missing = False
    for row in describe():
        if row["installed"]:
            size = len(load_tokenizer(row["name"]))
            source = f"{row['package']} {row['installed']}"
        else:
            size, source, missing = "-", f"{row['package']} (not installed)", True
        rows.append([row["name"], size, source, row["eos"], row["pad"], row["quirk"]])
    print(tabulate(rows, headers=["tokenizer", "vocabulary", "from", "eos", "pad",
                                  "what it exercises"], tablefmt="simple",
                   maxcolwidths=[None, None, None, None, None, 70]))
    if missing:
        print(f"\n(real families need their packages: {INSTALL_HINT})")
    return 0


def run(args) -> int:
    import importlib

    if args.tokenizers:
        return list_tokenizers()
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
