"""``sft-conformance mutants``: every mutant through every check; the kill table."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--out", metavar="PATH", help="also write the table as Markdown")
    parser.add_argument("--profile", choices=("ci", "dev", "thorough"), default="ci")
    parser.add_argument("--only-meant", action="store_true",
                        help="run only the check meant for each mutant (fast)")
    parser.add_argument("--mutant", action="append", default=None, metavar="NAME",
                        help="run only these mutants; repeatable")


def run(args) -> int:
    import time

    from tabulate import tabulate

    from sft_conformance.cli import UsageError
    from sft_conformance.mutants import BUGS, KILLS
    from sft_conformance.runner import check_target, library_versions

    unknown = sorted(set(args.mutant or ()) - set(KILLS))
    if unknown:
        raise UsageError(f"unknown mutant(s) {', '.join(unknown)}: see 'sft-conformance "
                         "targets --all'")
    started = time.perf_counter()
    rows, survivors = [], []
    for name, meant in KILLS.items():
        if args.mutant and name not in args.mutant:
            continue
        run_ = check_target(name, profile=args.profile,
                            only=[meant] if args.only_meant else None)
        status = {r.id: r.status for r in run_.results}
        caught_by = [r.id for r in run_.results if r.status in ("failed", "error")]
        killed = status.get(meant) == "failed"
        if not killed:
            survivors.append(name)
        rows.append([name, meant, "killed" if killed else "SURVIVED",
                     " ".join(caught_by), BUGS[name].split(". ")[0][:80]])
        print(f"{name}: {meant} {'killed' if killed else 'SURVIVED'}", flush=True)
    table = tabulate(rows, headers=["mutant", "meant for", "verdict", "failed checks",
                                    "bug"], tablefmt="github")
    elapsed = time.perf_counter() - started
    print("\n" + table + f"\n\n{len(rows) - len(survivors)}/{len(rows)} killed "
          f"in {elapsed:.0f}s")
    if args.out:
        versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write("# Mutant kill table\n\nEvery mutant is a deliberately buggy target named "
                     "after a real bug class; the check meant for it must fail. "
                     "'failed checks' lists every check that caught it.\n\n"
                     f"Command: `sft-conformance mutants --profile {args.profile}"
                     f"{' --only-meant' if args.only_meant else ''} --out {args.out}`  \n"
                     f"Versions: {versions}  \nTime: {elapsed:.0f} s on "
                     f"{__import__('os').cpu_count()} CPU cores\n\n{table}\n\n"
                     f"{len(rows) - len(survivors)}/{len(rows)} killed.\n")
    return 1 if survivors else 0
