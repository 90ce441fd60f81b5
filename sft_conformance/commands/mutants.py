"""``sft-conformance mutants``: every mutant through every check (the kill table), and the
correct-but-different catalogue through every check (the pass table)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--out", metavar="PATH", help="also write both tables as Markdown")
    parser.add_argument("--profile", choices=("ci", "dev", "thorough"), default="ci")
    parser.add_argument("--only-meant", action="store_true",
                        help="run only the check meant for each mutant (fast)")
    parser.add_argument("--mutant", action="append", default=None, metavar="NAME",
                        help="run only these mutants (and no correct target); repeatable")
    parser.add_argument("--no-correct", action="store_true",
                        help="skip the correct-but-different catalogue")


def _judged(run_, check_id):
    r = next((r for r in run_.results if r.id == check_id), None)
    return r.judged if r is not None else 0


def run(args) -> int:
    import os
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
        rows.append([name, meant, "killed" if killed else "SURVIVED", _judged(run_, meant),
                     " ".join(caught_by), BUGS[name].split(". ")[0][:80]])
        print(f"{name}: {meant} {'killed' if killed else 'SURVIVED'}", flush=True)
    kills = tabulate(rows, headers=["mutant", "meant for", "verdict", "judged", "failed checks",
                                    "bug"], tablefmt="github")
    passes, false_alarms, correct_rows = "", [], []
    if not args.mutant and not args.no_correct:
        from sft_conformance.targets.correct import HOW

        for name in HOW:
            run_ = check_target(name, profile=args.profile)
            bad = [f"{r.id} {r.status}" for r in run_.results
                   if r.status not in ("passed", "skipped")]
            if run_.error or bad:
                false_alarms.append(name)
            judged = " ".join(f"{r.id}:{r.judged}" for r in run_.results
                              if r.status == "passed")
            skipped = " ".join(r.id for r in run_.results if r.status == "skipped")
            correct_rows.append([name, "FALSE ALARM: " + ", ".join(bad) if bad else
                                 (run_.error or "passes"), judged, skipped or "-",
                                 HOW[name][:70]])
            print(f"{name}: {'passes' if not bad else 'FALSE ALARM ' + ', '.join(bad)}",
                  flush=True)
        passes = tabulate(correct_rows, headers=["correct target", "verdict",
                                                 "checks passed (examples judged)",
                                                 "skipped (not applicable)", "how it differs"],
                          tablefmt="github")
    elapsed = time.perf_counter() - started
    summary = f"{len(rows) - len(survivors)}/{len(rows)} mutants killed"
    if correct_rows:
        summary += (f"; {len(correct_rows) - len(false_alarms)}/{len(correct_rows)} correct "
                    "targets pass every applicable check")
    print("\n" + kills + ("\n\n" + passes if passes else "") + f"\n\n{summary} in "
          f"{elapsed:.0f}s")
    if args.out:
        versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
        command = (f"sft-conformance mutants --profile {args.profile}"
                   f"{' --only-meant' if args.only_meant else ''} --out {args.out}")
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(
                "# Mutants and correct-but-different targets\n\n"
                "A check is proven twice: by the buggy targets it catches and by the correct "
                "implementations, written differently from the reference, that it passes "
                "(docs/specification.md#how-a-verdict-is-reached). 'judged' is how many drawn "
                "examples the check judged.\n\n"
                f"Command: `{command}`  \nVersions: {versions}  \nTime: {elapsed:.0f} s on "
                f"{os.cpu_count()} CPU cores\n\n## Kills: every mutant fails the check meant "
                f"for it\n\n{kills}\n\n{len(rows) - len(survivors)}/{len(rows)} killed.\n")
            if passes:
                fh.write(f"\n## Passes: every correct target passes every applicable check\n\n"
                         f"{passes}\n\n{len(correct_rows) - len(false_alarms)}/"
                         f"{len(correct_rows)} pass.\n")
    return 1 if survivors or false_alarms else 0
