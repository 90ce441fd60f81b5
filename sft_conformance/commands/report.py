"""``sft-conformance report``: the conformance matrix of the reference, the textbook targets and
the library adapters installed here: every check run on every target, written to
``--out``/conformance.{md,json} (default ``sft-conformance-reports/``; the repository's committed
``reports/`` only with ``--out reports``)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path


def default_targets() -> list[str]:
    from sft_conformance.targets import builtin_targets

    # mutants and the correct-but-different catalogue prove the checks: reports/mutants.md;
    # a library's tool path is a row of the agentic matrix (report --agentic), not of this one
    return [n for n in builtin_targets() if not n.startswith(("mutant-", "correct-"))
            and not _agentic_row(n)]


def agentic_targets() -> list[str]:
    """The rows of ``report --agentic``: every built-in target that declares ``tools`` (the
    reference and the libraries' tool paths installed here), no mutant or correct target."""
    from sft_conformance.targets import builtin_targets

    return [n for n in builtin_targets() if not n.startswith(("mutant-", "correct-"))
            and _declares_tools(n)]


def _installed(spec: str) -> bool:
    """Whether a target's libraries are installed here (a row that is not costs nothing)."""
    try:
        from sft_conformance.target import declared, load_target

        return not declared(load_target(spec)).missing
    except Exception:
        return True


def _agentic_row(spec: str) -> bool:
    """A library adapter's target that declares ``tools``: a row of the agentic matrix."""
    from sft_conformance.adapters import REGISTRY

    return spec in REGISTRY and _declares_tools(spec)


def add_arguments(parser) -> None:
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help="targets to include (default: every built-in target but the "
                             "mutants and the "
                             "correct-but-different catalogue)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where conformance.{md,json} go (default: sft-conformance-reports/ "
                             "in the current directory; --out reports rewrites the repository's "
                             "committed reports)")
    parser.add_argument("--profile", choices=("ci", "dev", "thorough"), default="ci")
    parser.add_argument("--from-json", metavar="PATH",
                        help="re-render the Markdown of stored results (a conformance.json) "
                             "instead of running the checks")
    parser.add_argument("--tokenizer", default=None, metavar="NAME|PATH",
                        help="run every target with this tokenizer (a real family: see "
                             "'targets --tokenizers'); writes conformance-NAME.{md,json} and "
                             "compares its verdicts with the bundled run's conformance.json")
    parser.add_argument("--notes", metavar="PATH",
                        help="a Markdown file of findings confirmed by hand, included in the "
                             "report under 'Notes (confirmed by hand)'")
    parser.add_argument("--update", action="store_true",
                        help="re-run only the TARGETs named and replace their rows in the "
                             "stored report of the same tokenizer (in --out), which keeps its "
                             "command and lists the re-run")
    parser.add_argument("--agentic", action="store_true",
                        help="the agentic matrix: the targets that declare tools (a library's "
                             "with --library), checks S1, S3, S4, S13, S14, S15, written to "
                             "OUT/agentic[-TOKENIZER].{md,json}")
    parser.add_argument("--collect", metavar="DIR", default=None,
                        help="with --agentic: collect the agentic reports under DIR (its "
                             "agentic-*.json and each library folder's) into "
                             "DIR/agentic.{md,json}, "
                             "running nothing")
    parser.add_argument("--library", default=None, metavar="NAME",
                        help="the targets of one library adapter (litgpt, verl, ...; run it in "
                             "the library's tox environment), written to --out as given "
                             "(default: sft-conformance-reports/NAME; --out reports/NAME: the "
                             "committed one, with its findings.md)")
    parser.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N",
                        help="run the rows in N worker processes (0: one per CPU core; 1: in "
                             "this process; default: one per core, at most 4, for 8 rows or "
                             "more); the rows keep their order")
    parser.add_argument("--shard", type=_shard, default=None, metavar="K/N",
                        help="run only the K-th of N round-robin slices of the targets and "
                             "write the partial OUT/conformance[-TOKENIZER].part-K-of-N.json "
                             "(for CI jobs; --merge renders the matrix from the parts)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="PART.json",
                        help="render the matrix from partial reports (report --shard) instead "
                             "of running checks: rows in the default order, each part's "
                             "command and versions listed")
    parser.add_argument("--allow-missing", action="store_true",
                        help="with --merge: render the matrix even if some parts' rows are "
                             "missing (listed in the report)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is shown only when stderr is a terminal)")


def _jobs(value: str) -> int:
    from sft_conformance.parallel import jobs_argument

    return jobs_argument(value)


def _shard(value: str) -> tuple[int, int]:
    import argparse

    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 1/4), got {value!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"expected 1 <= K <= N, got {value!r}")
    return k, n


def run(args) -> int:
    from sft_conformance import report
    from sft_conformance.output import default_out

    command = "sft-conformance " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if not sys.argv[1:] or sys.argv[1] != "report":  # called from Python, not the command line
        parts = [shlex.quote(t) for t in args.targets]
        for flag, value in (("--tokenizer", args.tokenizer), ("--notes", args.notes),
                            ("--library", getattr(args, "library", None)),
                            ("--profile", args.profile if args.profile != "ci" else None),
                            ("--out", args.out)):
            if value:
                parts.append(f"{flag} {shlex.quote(value)}")
        if getattr(args, "update", False):
            parts.append("--update")
        if getattr(args, "agentic", False):
            parts.append("--agentic")
        if getattr(args, "shard", None):
            parts.append("--shard {}/{}".format(*args.shard))
        if getattr(args, "merge", None):
            parts.append("--merge " + " ".join(shlex.quote(m) for m in args.merge))
        if getattr(args, "allow_missing", False):
            parts.append("--allow-missing")
        if getattr(args, "jobs", None) is not None:
            parts.append(f"-j {args.jobs}")
        command = "sft-conformance report " + " ".join(parts)
    if getattr(args, "collect", None):
        from sft_conformance import agentic_matrix
        from sft_conformance.cli import UsageError

        if not getattr(args, "agentic", False):
            raise UsageError("--collect gathers agentic reports: pass --agentic")
        if not Path(args.collect).is_dir():
            raise UsageError(f"--collect {args.collect}: no such directory")
        md, js = agentic_matrix.write(Path(args.collect), command)
        print(md.read_text(encoding="utf-8").split("\n## ")[0])
        print(f"wrote {md} and {js}")
        return 0
    from sft_conformance.cli import UsageError

    merging = getattr(args, "merge", None)
    sharding = getattr(args, "shard", None)
    if merging and (args.targets or args.from_json or sharding or getattr(args, "update", False)):
        raise UsageError("--merge renders stored parts: no TARGETs, --from-json, --shard or "
                         "--update with it")
    if sharding and (args.from_json or getattr(args, "update", False)):
        raise UsageError("--shard runs a slice of the targets: no --from-json or --update")
    if getattr(args, "allow_missing", False) and not merging:
        raise UsageError("--allow-missing goes with --merge")
    if getattr(args, "library", None):
        from sft_conformance.adapters import LIBRARIES, library_targets
        from sft_conformance.cli import UsageError

        if args.library not in LIBRARIES:
            raise UsageError(f"unknown library {args.library!r}: one of "
                             f"{', '.join(LIBRARIES)}")
        args.targets = list(args.targets) or [
            t for t in library_targets(args.library)
            if getattr(args, "agentic", False) == _declares_tools(t)]
        if not args.targets:  # else the default targets would run in the library's place
            raise UsageError(
                f"--agentic --library {args.library}: no target of {args.library} declares "
                "tools" if getattr(args, "agentic", False) else
                f"--library {args.library}: every target of {args.library} is a tool path, "
                "a row of the agentic matrix: pass --agentic")
        if not args.out:
            args.out = default_out(args.library)
        # the library's hand-confirmed findings: beside the report, else the committed ones
        for findings in (Path(args.out) / "findings.md",
                         Path("reports") / args.library / "findings.md"):
            if not args.notes and findings.is_file():
                args.notes = str(findings)
    out = Path(args.out or default_out())
    if merging:
        data = _merged(args)
    elif args.from_json:
        from sft_conformance.cli import UsageError

        try:
            data = json.loads(Path(args.from_json).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--from-json {args.from_json}: {exc}") from None
        command = data.get("command", command)
    else:
        from sft_conformance.cli import UsageError
        from sft_conformance.targets import builtin_targets

        known = builtin_targets()
        unknown = [t for t in args.targets if t not in known and ":" not in t]
        if unknown:
            raise UsageError(f"unknown target(s) {', '.join(unknown)}: see 'sft-conformance "
                             "targets'")
        if args.tokenizer:  # before any row runs: it loads and has a chat template
            from sft_conformance.errors import ConfigurationError
            from sft_conformance.validation import load_tokenizer

            try:
                load_tokenizer(args.tokenizer)
            except ConfigurationError as exc:
                raise UsageError(f"--tokenizer {args.tokenizer}: {exc}") from None
        stored = _stored_for_update(args, out) if getattr(args, "update", False) else None
        agentic = getattr(args, "agentic", False)
        targets = args.targets or (agentic_targets() if agentic else default_targets())
        everything = list(targets)
        if sharding:
            targets = report.shard(everything, *sharding)
        jobs = getattr(args, "jobs", None)
        if jobs is None:
            from sft_conformance.parallel import auto_jobs

            jobs = auto_jobs(sum(1 for t in targets if _installed(t)))
        print(f"{'agentic ' if agentic else ''}conformance matrix of {len(targets)} targets "
              f"(profile {args.profile}"
              + (", shard {}/{} of {} targets".format(*sharding, len(everything))
                 if sharding else "")
              + (f", {jobs} worker processes" if jobs > 1 else "") + ")", flush=True)
        data = report.run_matrix(
            targets, profile=args.profile, tokenizer=args.tokenizer,
            progress=lambda line: print(line, flush=True),
            only=report.AGENTIC_CHECKS if agentic else None,
            jobs=jobs, show_progress=False if getattr(args, "no_progress", False) else None,
            seconds=report.row_seconds(*(report.paths(d, args.tokenizer, agentic)[1]
                                         for d in (out, Path("reports")))) if jobs > 1 else None)
        if agentic:
            data["agentic"] = True
        if sharding:
            library = getattr(args, "library", None)
            data["partial"] = {"shard": "{}/{}".format(*sharding), "targets": everything,
                               **({"library": library} if library else {})}
            path = report.write_part(data, report.part_path(out, args.tokenizer, agentic,
                                                            *sharding), command)
            failed = sum(1 for r in data["runs"] for c in r.get("checks", [])
                         if c["status"] in ("failed", "error"))
            print(f"wrote {path}: {len(data['runs'])} of {len(everything)} rows "
                  f"({failed} failed or error checks); render the matrix with "
                  "'sft-conformance report --merge PART.json ...'")
            return 0
        if stored is not None:
            data = report.update(stored, data, command)
            command = stored.get("command", command)
    if args.notes:
        from sft_conformance.cli import UsageError

        try:
            data["notes"] = Path(args.notes).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--notes {args.notes}: {exc}") from None
    if data.get("tokenizer") and not data.get("agentic"):
        # the bundled run beside this report, else the repository's committed one
        baseline = report.bundled_baseline(out) or report.bundled_baseline(Path("reports"))
        if baseline is not None:
            data["compared"] = report.compare_with(data, baseline)
    md, js = report.write(data, out, command)
    print(report.render_markdown(dict(data, command=command), command).split("\n## ")[0])
    print(f"wrote {md} and {js}" + ("" if args.out else
                                     " (--out reports rewrites the committed reports)"))
    return 0


def _merged(args) -> dict:
    """The matrix of the parts named by ``--merge``."""
    from sft_conformance import report
    from sft_conformance.cli import UsageError

    parts = []
    for path in args.merge:
        try:
            parts.append((path, json.loads(Path(path).read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--merge {path}: {exc}") from None
    agentic = any(data.get("agentic") for _, data in parts)
    return report.merge(parts, order=agentic_targets() if agentic else default_targets(),
                        allow_missing=getattr(args, "allow_missing", False))


def _stored_for_update(args, out: Path) -> dict:
    """The stored report ``--update`` re-runs rows of: same tokenizer and profile, in ``out``."""
    from sft_conformance import report
    from sft_conformance.cli import UsageError

    if not args.targets:
        raise UsageError("--update needs the TARGETs to re-run")
    _, js = report.paths(out, args.tokenizer, getattr(args, "agentic", False))
    try:
        stored = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--update: no stored report to update ({exc})") from None
    if stored.get("profile") != args.profile:
        raise UsageError(f"--update: {js} was run with profile {stored.get('profile')!r}, "
                         f"not {args.profile!r}")
    return stored


def _declares_tools(spec: str) -> bool:
    """Whether the built-in target ``spec`` declares ``tools`` (its class is loaded, its
    library is not imported)."""
    from sft_conformance.target import TargetError, load_target

    try:
        return bool(getattr(load_target(spec), "tools", False))
    except TargetError:
        return False
