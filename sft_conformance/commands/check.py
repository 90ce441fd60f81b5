"""``sft-conformance check TARGET...``: run the conformance checks; exit 0 pass, 1 fail, 2 usage."""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("targets", nargs="+", metavar="TARGET",
                        help="built-in name (see 'sft-conformance targets'), module:attr or "
                             "path/to/file.py:attr")
    parser.add_argument("--json", metavar="PATH", help="write every result as JSON")
    parser.add_argument("--profile", choices=("ci", "dev", "thorough"), default=None,
                        help="hypothesis profile (default: ci when CI is set, else dev)")
    parser.add_argument("--tokenizer", metavar="NAME|PATH", default=None,
                        help="bundled template name or local tokenizer directory")
    parser.add_argument("--check", action="append", default=None, metavar="ID",
                        help="run only these checks: S4, s4, end_of_turn_trained or "
                             "S4-end_of_turn_trained; repeatable")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no failure details: the summary table only, each reason whole")
    parser.add_argument("--distributed", action="store_true",
                        help="also run S7dp: the loss under torch.distributed with 2 processes")
    parser.add_argument("--max-length", type=int, default=None, metavar="N",
                        help="max_length passed to collate (default 512); raise it when the "
                             "template's preamble leaves no room for the drawn conversations")
    parser.add_argument("--strict", action="store_true",
                        help="fail a declared known failure that no longer fails")


def header(targets, tokenizer, profile) -> str:
    from sft_conformance import profiles
    from sft_conformance.runner import library_versions

    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    return (f"sft-conformance check: {', '.join(targets)}\n"
            f"tokenizer: {tokenizer or 'as declared by each target'}; profile: "
            f"{profile or profiles.default_profile()}\nversions: {versions}\n")


def summary_table(run, width: int | None = 110) -> str:
    """One row per check; ``width`` cuts the message column (None: the reason whole, as -q
    shows it, since it prints nothing else)."""
    from tabulate import tabulate

    rows = []
    for r in run.results:
        first = r.message.splitlines()[0] if r.message else ""
        if not first and r.notes:
            first = r.notes[0]
        rows.append([r.id, r.check, r.status.upper() if r.status in ("failed", "error")
                     else r.status, r.judged, f"{r.seconds:.1f}s",
                     first if width is None else first[:width]])
    return tabulate(rows, headers=["check", "name", "status", "judged", "time", "message"],
                    tablefmt="simple")


def run(args) -> int:
    from sft_conformance import library_warnings
    from sft_conformance.cli import UsageError
    from sft_conformance.profiles import resolve
    from sft_conformance.runner import check_target, select_checks

    resolve(args.profile)  # an unknown profile (or SFT_CONFORMANCE_PROFILE) stops here
    select_checks(args.check)  # and an unknown check id
    if args.max_length is not None and args.max_length < 8:
        raise UsageError(f"--max-length {args.max_length}: expected at least 8")
    print(header(args.targets, args.tokenizer, args.profile), flush=True)
    runs = []
    for spec in args.targets:
        with library_warnings.captured() as seen:  # summarised once, not once per call
            result = check_target(spec, tokenizer=args.tokenizer, profile=args.profile,
                                  only=args.check, distributed=args.distributed,
                                  strict=args.strict, max_length=args.max_length)
        if result.error:
            # a configuration error: nothing was checked; one line, exit 2
            raise UsageError(f"{spec}: {result.error}")
        runs.append(result)
        print(f"== {result.target} (tokenizer {result.tokenizer}) ==")
        print(summary_table(result, width=None if args.quiet else 110))
        warned = library_warnings.lines(library_warnings.summarise(seen))
        if warned:
            print("\nlibrary warnings (each message once, with its count):\n"
                  + "\n".join(f"- {w}" for w in warned))
        if not args.quiet:
            for r in result.results:
                if r.status in ("failed", "error"):
                    print(f"\n--- {result.target} {r.id} {r.check}: {r.status} ---\n{r.message}")
            notes = list(dict.fromkeys(n for r in result.results for n in r.notes))
            if notes:
                print("\nnotes:\n" + "\n".join(f"- {n}" for n in notes))
        print(flush=True)
    if args.json:
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"runs": [r.to_json() for r in runs]}, fh, indent=1, default=str)
    totals = {}
    for r in runs:
        for c in r.results:
            totals[c.status] = totals.get(c.status, 0) + 1
    print("summary: " + ", ".join(f"{v} {k}" for k, v in sorted(totals.items())))
    return 0 if all(r.ok for r in runs) else 1
