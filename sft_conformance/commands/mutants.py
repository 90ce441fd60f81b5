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
    parser.add_argument("--tokenizer", action="append", default=None, metavar="NAME",
                        help="also run everything with this tokenizer (a real family such as "
                             "qwen2.5 or mistral, see 'targets --tokenizers'); repeatable; "
                             "adds the mutant x tokenizer and correct x tokenizer tables")
    parser.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N",
                        help="run the targets in N worker processes (0: one per CPU core; 1: "
                             "in this process; default: one per core, at most 4, for 8 rows "
                             "or more); the tables keep their order")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is shown only when stderr is a terminal)")


def _jobs(value: str) -> int:
    from sft_conformance.parallel import jobs_argument

    return jobs_argument(value)


def run_one(name: str, profile: str, tokenizer: str | None, only: list[str] | None):
    """One row of the tables: every check (or ``only``) on the mutant or correct target
    ``name``, without counterexamples (the tables do not show them; a worker process of
    ``mutants -j N`` returns this run to the parent).

    Failures are not shrunk: the tables show statuses and judged counts, which shrinking does
    not change (a check's judged count stops at its first failure, and the shrinker keeps the
    failure it started from), and shrinking was most of the time a mutant took. ``check
    NAME`` shows a minimal counterexample."""
    from sft_conformance.assets import shared
    from sft_conformance.checks.engine import share_traces
    from sft_conformance.checks.loss import share_random_logits
    from sft_conformance.runner import check_target

    # this command's process, our own targets only: the rows draw the same batches and seeds,
    # render the same conversations and run the same batches through the same check model
    share_random_logits()
    shared.share()
    share_traces()
    run_ = check_target(name, profile=profile, tokenizer=tokenizer, only=only, shrink=False)
    for r in run_.results:
        r.counterexample = None
    return run_


def _plan(args, tokenizer) -> list[tuple]:
    """The rows of one tokenizer: ``(kind, name, why)``, kind "kill", "n/a" (why: the bug
    cannot occur under this tokenizer) or "correct"."""
    from sft_conformance.mutants import KILLS, not_applicable

    tok = None
    if tokenizer is not None:
        from sft_conformance.assets import load_tokenizer

        tok = load_tokenizer(tokenizer)
    rows = []
    for name in KILLS:
        if args.mutant and name not in args.mutant:
            continue
        why = not_applicable(name, tok) if tok is not None else None
        rows.append(("n/a", name, why) if why else ("kill", name, None))
    if not args.mutant and not args.no_correct:
        from sft_conformance.targets.correct import HOW

        rows += [("correct", name, None) for name in HOW]
    return rows


def _line(kind: str, name: str, tokenizer, run_, why=None) -> str:
    """The line printed when a row is done."""
    from sft_conformance.mutants import KILLS

    where = "" if tokenizer is None else f" under {tokenizer}"
    if kind == "n/a":
        return f"{name}: n/a{where}: {why}"
    if kind == "kill":
        meant = KILLS[name]
        killed = {r.id: r.status for r in run_.results}.get(meant) == "failed"
        return f"{name}: {meant} {'killed' if killed else 'SURVIVED'}{where}"
    bad = [f"{r.id} {r.status}" for r in run_.results if r.status not in ("passed", "skipped")]
    return f"{name}: {'passes' if not bad else 'FALSE ALARM ' + ', '.join(bad)}{where}"


def _run_all(args, known: list[str]) -> dict:
    """Every row of every tokenizer, in ``args.jobs`` processes: ``{(tokenizer, name): run}``
    (each row's line printed when it is done)."""
    from sft_conformance import parallel
    from sft_conformance.mutants import KILLS

    plans = {t: _plan(args, None if t == "bundled" else t) for t in known}
    items, keys = [], []
    for t, plan in plans.items():
        tokenizer = None if t == "bundled" else t
        for kind, name, why in plan:
            if kind == "n/a":
                print(_line(kind, name, tokenizer, None, why), flush=True)
                continue
            only = [KILLS[name]] if kind == "kill" and args.only_meant else None
            items.append((name, args.profile, tokenizer, only))
            keys.append((t, kind, name))
    runs = {}
    with parallel.progress(len(items), "mutants",
                           enabled=False if getattr(args, "no_progress", False) else None) as bar:
        jobs = getattr(args, "jobs", None)
        jobs = parallel.auto_jobs(len(items)) if jobs is None else jobs
        # the correct targets pass every check (the longest rows): workers take them first
        first = sorted(range(len(items)), key=lambda i: keys[i][1] != "correct")
        try:
            for i, run_ in parallel.run_rows(run_one, items, jobs=jobs, first=first):
                t, kind, name = keys[i]
                runs[(t, name)] = run_
                bar.echo(_line(kind, name, items[i][2], run_))
                bar.update()
        finally:
            _stop_sharing()  # rows run in this process (-j 1) shared; what runs next does not
    return {"plans": plans, "runs": runs, "jobs": jobs}


def _stop_sharing() -> None:
    """Turn off what :func:`run_one` turned on in this process, and drop what it kept."""
    from sft_conformance.assets import shared
    from sft_conformance.checks.engine import share_traces
    from sft_conformance.checks.loss import share_random_logits

    share_random_logits(None)
    shared.share(None, None)
    share_traces(False)


def _judged(run_, check_id):
    r = next((r for r in run_.results if r.id == check_id), None)
    return r.judged if r is not None else 0


def _one_tokenizer(args, tokenizer, done: dict):
    """Kill rows, survivors, correct rows and false alarms under one tokenizer ("bundled":
    each target's own), from the runs of :func:`_run_all`."""
    from tabulate import tabulate

    from sft_conformance.mutants import BUGS, KILLS

    rows, survivors, cells = [], [], {}
    false_alarms, correct_rows, passes_cells = [], [], {}
    for kind, name, why in done["plans"][tokenizer]:
        if kind == "n/a":
            meant = KILLS[name]
            cells[name] = f"n/a: {why}"
            rows.append([name, meant, "n/a", 0, "", why[:80]])
            continue
        run_ = done["runs"][(tokenizer, name)]
        if kind == "kill":
            meant = KILLS[name]
            status = {r.id: r.status for r in run_.results}
            caught_by = [r.id for r in run_.results if r.status in ("failed", "error")]
            killed = status.get(meant) == "failed"
            if not killed:
                survivors.append(name)
            cells[name] = (f"killed ({_judged(run_, meant)})" if killed
                           else f"SURVIVED ({status.get(meant, run_.error)})")
            rows.append([name, meant, "killed" if killed else "SURVIVED", _judged(run_, meant),
                         " ".join(caught_by), BUGS[name].split(". ")[0][:80]])
            continue
        from sft_conformance.targets.correct import HOW

        bad = [f"{r.id} {r.status}" for r in run_.results
               if r.status not in ("passed", "skipped")]
        if run_.error or bad:
            false_alarms.append(name)
        judged = " ".join(f"{r.id}:{r.judged}" for r in run_.results if r.status == "passed")
        skipped = " ".join(r.id for r in run_.results if r.status == "skipped")
        passes_cells[name] = ("FALSE ALARM: " + ", ".join(bad) if bad
                              else (run_.error or "passes"))
        correct_rows.append([name, passes_cells[name], judged, skipped or "-",
                             HOW[name][:70]])
    kills = tabulate(rows, headers=["mutant", "meant for", "verdict", "judged", "failed checks",
                                    "bug"], tablefmt="github")
    passes = tabulate(correct_rows, headers=["correct target", "verdict",
                                             "checks passed (examples judged)",
                                             "skipped (not applicable)", "how it differs"],
                      tablefmt="github") if correct_rows else ""
    return dict(rows=rows, survivors=survivors, cells=cells, kills=kills, passes=passes,
                correct_rows=correct_rows, false_alarms=false_alarms, passes_cells=passes_cells)


def _matrix(results: dict, key: str, first: str) -> str:
    from tabulate import tabulate

    names = list(next(iter(results.values()))[key])
    return tabulate([[n] + [results[t][key].get(n, "") for t in results] for n in names],
                    headers=[first] + list(results), tablefmt="github")


def run(args) -> int:
    import os
    import time

    from sft_conformance.cli import UsageError
    from sft_conformance.mutants import KILLS
    from sft_conformance.runner import library_versions

    unknown = sorted(set(args.mutant or ()) - set(KILLS))
    if unknown:
        raise UsageError(f"unknown mutant(s) {', '.join(unknown)}: see 'sft-conformance "
                         "targets --all'")
    known = ["bundled"] + [t for t in (args.tokenizer or []) if t != "bundled"]
    if args.tokenizer:
        from sft_conformance.assets import tokenizer_names

        bad = [t for t in known[1:] if t not in tokenizer_names()]
        if bad:
            raise UsageError(f"unknown tokenizer(s) {', '.join(bad)}: see 'sft-conformance "
                             "targets --tokenizers'")
    started = time.perf_counter()
    done = _run_all(args, known)
    results = {t: _one_tokenizer(args, t, done) for t in known}
    elapsed = time.perf_counter() - started
    base = results["bundled"]
    rows, kills, passes, correct_rows = (base["rows"], base["kills"], base["passes"],
                                         base["correct_rows"])
    summary = f"{len(rows) - len(base['survivors'])}/{len(rows)} mutants killed"
    if correct_rows:
        summary += (f"; {len(correct_rows) - len(base['false_alarms'])}/{len(correct_rows)} "
                    "correct targets pass every applicable check")
    extra = ""
    if len(results) > 1:
        extra = ("\n\n## Mutant x tokenizer\n\nEach mutant under each tokenizer ('bundled': the "
                 "tokenizer each target declares), judged by "
                 + ("the check meant for it" if args.only_meant else "every check")
                 + " ('killed (n)': the meant check failed it, n examples judged; 'n/a': the "
                 "bug cannot occur under that tokenizer, and why).\n\n"
                 f"{_matrix(results, 'cells', 'mutant')}\n")
        if correct_rows:
            extra += ("\n## Correct x tokenizer\n\nEach correct-but-different target under "
                      "each tokenizer, every applicable check.\n\n"
                      f"{_matrix(results, 'passes_cells', 'correct target')}\n")
        for t in known[1:]:
            r = results[t]
            applicable = sum(1 for c in r["cells"].values() if not c.startswith("n/a"))
            summary += (f"\n{t}: {applicable - len(r['survivors'])}/{applicable} applicable "
                        f"mutants killed, {len(r['cells']) - applicable} n/a"
                        + (f"; {len(r['correct_rows']) - len(r['false_alarms'])}/"
                           f"{len(r['correct_rows'])} correct targets pass"
                           if r["correct_rows"] else ""))
    print("\n" + kills + ("\n\n" + passes if passes else "") + extra + f"\n\n{summary}\n"
          f"in {elapsed:.0f}s")
    if args.out:
        versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
        command = (f"sft-conformance mutants --profile {args.profile}"
                   f"{' --only-meant' if args.only_meant else ''}"
                   + "".join(f" --tokenizer {t}" for t in known[1:]) + f" --out {args.out}")
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(
                "# Mutants and correct-but-different targets\n\n"
                "A check is proven twice: by the buggy targets it catches and by the correct "
                "implementations, written differently from the reference, that it passes "
                "(docs/specification.md#how-a-verdict-is-reached). 'judged' is how many drawn "
                "examples the check judged.\n\n"
                f"Command: `{command}`  \nVersions: {versions}  \nTime: {elapsed:.0f} s on "
                f"{os.cpu_count()} CPU cores, {done['jobs']} worker process(es)\n\n"
                f"## Kills: every mutant fails the check meant for it (bundled tokenizers)"
                f"\n\n{kills}\n\n"
                f"{len(rows) - len(base['survivors'])}/{len(rows)} killed.\n")
            if passes:
                fh.write("\n## Passes: every correct target passes every applicable check "
                         f"(bundled tokenizers)\n\n{passes}\n\n"
                         f"{len(correct_rows) - len(base['false_alarms'])}/{len(correct_rows)} "
                         "pass.\n")
            if extra:
                fh.write(extra + "\n" + "  \n".join(summary.splitlines()[1:]) + "\n")
    failed = any(r["survivors"] or r["false_alarms"] for r in results.values())
    return 1 if failed else 0
